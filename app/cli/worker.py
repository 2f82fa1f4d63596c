"""``amanuensis worker``: run jobs from the Celery broker (``AMANUENSIS_BROKER_URL``).

One job at a time; the child process that runs them loads the model on its first job and is
replaced after ``AMANUENSIS_WORKER_MAX_JOBS`` jobs. Start as many as the machines allow; a worker
with an NPU computes its features there (the runtime chooses, as in the service).
"""

from __future__ import annotations

import argparse
import sys


def register(commands, bench) -> None:
    parser = commands.add_parser("worker", help="run transcription jobs from the Celery broker")
    parser.add_argument("--hostname", default=None, help="Celery node name (default: celery@host)")
    parser.add_argument("--loglevel", default="INFO")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from app.jobs.celery_app import make_celery, register_worker_task
    from app.settings import Settings

    settings = Settings()
    if not settings.broker_url:
        print("amanuensis worker needs AMANUENSIS_BROKER_URL (e.g. redis://host:6379/0), and the "
              "service's AMANUENSIS_DATABASE_URL and AMANUENSIS_STORAGE_URL", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.loglevel,
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    celery = make_celery(settings)
    register_worker_task(celery, settings)
    argv = ["worker", f"--loglevel={args.loglevel}", "--concurrency=1", "--pool=prefork",
            "--without-gossip", "--without-mingle"]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    celery.worker_main(argv)
    return 0
