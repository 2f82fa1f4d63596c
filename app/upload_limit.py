"""The upload size limit, answered in the API's error shape.

A request whose ``Content-Length`` is over the limit gets 413 at once, before any of its body
is read. A body without a length (chunked) is counted as it arrives and refused with the same
413 as soon as it passes the limit. (Starlette's own body limit answers in plain text and
replaces any response to an over-long request, so it cannot speak the API's error shape.)
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import UploadTooLarge, error_response


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self) -> UploadTooLarge:
        return UploadTooLarge(
            f"the request body is larger than the upload limit of {self.max_bytes} bytes "
            "(AMANUENSIS_MAX_UPLOAD_BYTES)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            refusal = self._refusal()
            response = error_response(413, refusal.message, None, refusal.code,
                                      headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._refusal()
            return message

        await self.app(scope, counted_receive, send)
