"""HTTP only: routers by area, formatting, authentication, upload limits, request metrics."""
