"""Typed refusals the service raises instead of answering: each knows its HTTP status and body.

The API has one error shape, ``{"error": {"message", "type", "param", "code"}}``. Admission
control (429, 504) and the API key check (401) raise subclasses of :class:`Refusal`; one
exception handler turns any of them into that shape, with the headers the status calls for
(``Retry-After``, ``WWW-Authenticate``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class Refusal(Exception):
    """A request the service will not complete, with everything the response needs."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


async def _refusal_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refusal)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def install_refusal_handler(app: FastAPI) -> None:
    """Answer every :class:`Refusal` in the API's error shape."""
    app.add_exception_handler(Refusal, _refusal_response)
