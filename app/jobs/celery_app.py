"""The Celery side: the broker configuration shared by the service (which only sends tasks) and
``amanuensis worker`` (which runs them through :func:`app.jobs.tasks.run_job`).

Tasks are acknowledged after they end (``acks_late``) and given back to the queue when the worker
process dies (``task_reject_on_worker_lost``); a worker that dies whole leaves its task
unacknowledged, and Redis hands it out again after the visibility timeout. Each worker takes one
job at a time (prefetch 1, concurrency 1) and its child process is replaced after
``AMANUENSIS_WORKER_MAX_JOBS`` jobs. A task for a job that another live worker is running is
retried later, so it is never lost nor run twice at once.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from app.settings import Settings

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "amanuensis.run_job"
QUEUE = "amanuensis-jobs"


def make_celery(settings: Settings) -> Celery:
    if not settings.broker_url:
        raise ValueError("AMANUENSIS_BROKER_URL is not set")
    celery = Celery("amanuensis", broker=settings.broker_url, set_as_current=False)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=settings.worker_max_jobs,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.job_visibility_timeout_seconds},
    )
    return celery


def register_worker_task(celery: Celery, settings: Settings) -> None:
    """The task ``amanuensis worker`` runs; the job context is built once per child process."""
    from app.jobs.tasks import RunOutcome, run_job

    @celery.task(name=RUN_JOB_TASK, bind=True, max_retries=None)
    def run_job_task(self, job_id: str) -> str:
        outcome = run_job(job_id, _worker_context(settings))
        if outcome is RunOutcome.RUNNING_ELSEWHERE:
            raise self.retry(countdown=settings.job_visibility_timeout_seconds)
        return outcome.value


_context = None
_context_lock = threading.Lock()


def _worker_context(settings: Settings):
    """This process's runtime, engine, records, files and metrics, built on its first job."""
    global _context
    with _context_lock:
        if _context is None:
            from prometheus_client import REGISTRY, start_http_server

            from app.jobs.tasks import JobContext
            from app.runtime import create_runtime
            from app.transcription.engine import Engine
            from app.transcription.result import model_n_mels

            runtime = create_runtime(settings, model_n_mels(settings))
            engine = Engine(settings, runtime)
            _context = JobContext.from_settings(settings, lambda: engine, REGISTRY)
            if settings.worker_metrics_port:
                try:
                    start_http_server(settings.worker_metrics_port)
                except OSError as error:
                    logger.warning("worker metrics port %d: %s", settings.worker_metrics_port,
                                   error)
        return _context
