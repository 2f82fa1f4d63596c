"""What a route asks FastAPI for: the service's shared state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.state import ServiceState


def service_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]
