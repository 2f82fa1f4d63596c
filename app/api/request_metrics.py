"""Request counters, durations and requests in flight, by endpoint and status."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestMetrics:
    """Requests by endpoint (the route's path template, never the raw URL) and status, their
    duration, and requests in flight.

    A plain ASGI middleware on purpose: behind Starlette's ``BaseHTTPMiddleware`` a route's
    ``request.is_disconnected()`` never turns true (the disconnect message is swallowed when its
    poll is cancelled), so a queued request whose client hung up would still run.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = scope["app"].state.service.metrics
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            endpoint = _endpoint(scope)
            metrics.in_flight.dec()
            metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            metrics.request_duration.labels(endpoint=endpoint).observe(
                time.perf_counter() - started)


def _endpoint(scope: Scope) -> str:
    """The matched route's path template (``/v1/jobs/{job_id}``; the path itself when refused
    before routing), or ``unmatched``: label values
    stay a fixed set whatever URLs clients send."""
    path = getattr(scope.get("route"), "path", scope["path"])
    return path if path in scope["app"].state.endpoints else "unmatched"
