"""The optional API key and the CORS policy.

With ``AMANUENSIS_API_KEY`` set, every route that carries :func:`api_key_dependency` demands
``Authorization: Bearer <key>``; anything else is a 401 in the API's error shape. Keys are
compared in constant time as UTF-8 bytes (on their SHA-256 digests, so not even the length
leaks). Health, readiness and metrics stay open for probes and scrapers unless the service
protects them too.
CORS is off unless origins are listed.

No ``from __future__ import annotations`` here: FastAPI must resolve the dependency annotation
of the closure below at runtime.
"""

import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import APIError


class AuthenticationFailed(APIError):
    status_code = 401
    code = "invalid_api_key"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def key_is_valid(api_key: str, sent: bytes) -> bool:
    """Whether the bytes a client ``sent`` are ``api_key``, compared in constant time."""
    return hmac.compare_digest(_digest(sent), _digest(api_key.encode("utf-8")))


def api_key_dependency(api_key: str | None) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through only with the right bearer key.

    With no key configured the dependency accepts everything and adds nothing to the OpenAPI
    document; with a key it declares the bearer scheme there, so clients and fuzzers see it.
    """
    if not api_key:

        def open_access() -> None:
            return None

        return open_access

    bearer = HTTPBearer(auto_error=False, description="AMANUENSIS_API_KEY as a bearer token")

    def require_api_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if credentials is None:
            raise AuthenticationFailed(
                "This server requires an API key: send 'Authorization: Bearer <key>'."
            )
        # Starlette decodes header bytes as latin-1; encoding back gives the bytes on the wire.
        sent = credentials.credentials.encode("latin-1")
        if not key_is_valid(api_key, sent):
            raise AuthenticationFailed("The API key is not valid for this server.")

    return require_api_key


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
