"""The web page at ``/``: plain HTML, CSS and JavaScript from ``app/web`` (no build step). It
uses the public API only: ``/status``, ``/transcribe`` and ``/v1/realtime``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


def install_page(app: FastAPI) -> None:
    """The page at ``/`` and its files under ``/web``."""
    app.include_router(router)
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
