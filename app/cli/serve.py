"""``amanuensis serve``: run the service with uvicorn (host and port from the settings)."""

from __future__ import annotations

import argparse


def register(commands, bench) -> None:
    parser = commands.add_parser("serve", help="run the HTTP service")
    parser.add_argument("--host", default=None, help="listen address (AMANUENSIS_HOST)")
    parser.add_argument("--port", type=int, default=None, help="listen port (AMANUENSIS_PORT)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app import gc_pause

    gc_pause.pause()  # until the model is loaded, the app's imports too (app.gc_pause)
    import logging

    import uvicorn

    from app.settings import Settings

    settings = Settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("app.service:create_app", factory=True, host=args.host or settings.host,
                port=args.port or settings.port)
    return 0
