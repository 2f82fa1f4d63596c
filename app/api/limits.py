"""Refuse request bodies over the upload limit with 413, without reading the rest.

A declared ``Content-Length`` over the limit is answered at once, before the app sees the
request; a body without one (chunked) is counted as it streams in and refused the moment it
passes the limit. Either way the reply is the service's one error shape.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import UploadTooLarge, error_response


class UploadLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> UploadTooLarge:
        return UploadTooLarge(
            f"the request body is larger than the upload limit of {self.max_bytes} bytes "
            f"(AMANUENSIS_MAX_UPLOAD_BYTES)", param="file")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            error = self._error()
            response = error_response(error.status_code, error.message, error.param, error.code,
                                      headers={"connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, counted_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
