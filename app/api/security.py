"""The optional API key and the CORS policy.

With ``AMANUENSIS_API_KEY`` set, :class:`ApiKeyGate` (an ASGI middleware) demands
``Authorization: Bearer <key>`` on the protected paths and answers anything else with a 401 in
the API's error shape from the request's headers alone, before a byte of its body is read or
spooled: an unauthenticated client cannot make the server take in a 100 MB upload. Keys are
compared in constant time as UTF-8 bytes (on their SHA-256 digests, so not even the length
leaks). Health, readiness and metrics stay open for probes and scrapers unless the service
protects them too. :func:`api_key_scheme` declares the bearer scheme in the OpenAPI document.
CORS is off unless origins are listed.

No ``from __future__ import annotations`` here: FastAPI must resolve the dependency annotation
of the closure below at runtime.
"""

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_response

AUTHENTICATION_CODE = "invalid_api_key"


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def key_is_valid(api_key: str, sent: bytes) -> bool:
    """Whether the bytes a client ``sent`` are ``api_key``, compared in constant time."""
    return hmac.compare_digest(_digest(sent), _digest(api_key.encode("utf-8")))


class ApiKeyGate:
    """Lets a request to a protected path through only with the right bearer key."""

    def __init__(self, app: ASGIApp, api_key: str, protected: Iterable[str],
                 protected_prefixes: Iterable[str] = ()) -> None:
        self.app = app
        self._expected = _digest(api_key.encode("utf-8"))
        self._protected = frozenset(protected)
        self._prefixes = tuple(protected_prefixes)

    def _guards(self, path: str) -> bool:
        return path in self._protected or path.startswith(self._prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guards(scope["path"]):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(_authorization(scope))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        response = error_response(401, refusal, None, AUTHENTICATION_CODE, headers={
            "WWW-Authenticate": "Bearer", "connection": "close"})
        await response(scope, receive, send)

    def _refusal(self, authorization: bytes | None) -> str | None:
        """Why ``authorization`` (the raw header) is refused, or ``None`` when it is right."""
        scheme, _, token = (authorization or b"").partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return "This server requires an API key: send 'Authorization: Bearer <key>'."
        if not hmac.compare_digest(_digest(token), self._expected):
            return "The API key is not valid for this server."
        return None


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value
    return None


def api_key_scheme(api_key: str | None) -> Callable[..., None]:
    """A dependency that declares the bearer scheme in the OpenAPI document when a key is set
    (so clients and fuzzers see it) and nothing otherwise; :class:`ApiKeyGate` checks the key."""
    if not api_key:

        def open_access() -> None:
            return None

        return open_access

    bearer = HTTPBearer(auto_error=False, description="AMANUENSIS_API_KEY as a bearer token")

    def bearer_declared(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        return None

    return bearer_declared


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Allow browsers on ``origins`` to call the API; no origins, no CORS headers at all."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Retry-After"],
    )
