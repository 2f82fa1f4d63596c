"""Jobs as the service sees them: submission (stored durably before the answer), reads,
cancellation, results, and who runs them - the embedded executor (no broker) or Celery workers.

Submission order: the upload is decoded (bad audio is refused like the synchronous endpoints
refuse it), written to the store, then recorded, then dispatched; a failure at any step undoes
the ones before, so a refused submission leaves nothing behind. A finished job's records and
files are swept after the retention time by the service, in both deployments.

With a broker, the same sweep sends again every job that still waits
``AMANUENSIS_JOB_REDISPATCH_SECONDS`` after it was last sent (queued, or running on a worker
presumed dead): its message may have been lost (a broker that dropped it, a service stopped
between recording and sending). A duplicate message is harmless: :func:`~app.jobs.tasks.run_job`
claims the record first, so a job runs once whatever the broker delivers.

A cancelled job's webhook is sent by the service (its worker, if it had one, only stops), on a
thread of its own so the ``DELETE`` answers at once; shutdown waits for deliveries under way.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from app.admission import ThreadSlots
from app.errors import APIError, AudioTooLong
from app.jobs.executor import EmbeddedExecutor
from app.jobs.metrics import QueueCollector
from app.jobs.records import ACTIVE, Job, JobStatus
from app.jobs.storage import AUDIO, RESULT, StoreError
from app.jobs.tasks import (
    JobContext,
    call_back,
    observe_end,
    sweep_expired,
    transcription_from_json,
)
from app.settings import Settings
from app.transcription.audio import measure_audio
from app.transcription.result import Transcription

if TYPE_CHECKING:  # WhisperX takes seconds to import: the engine module loads with the model
    from app.transcription.engine import Engine

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 60.0
"""How often finished jobs past their retention are looked for (and, with a broker, jobs to send
again: then at least four times per ``job_redispatch_seconds``)."""
WEBHOOK_THREADS = 4


class JobStoreUnavailable(APIError):
    status_code = 503
    code = "job_store_unavailable"


class JobNotFound(APIError):
    status_code = 404
    code = "job_not_found"


class JobNotFinished(APIError):
    status_code = 409
    code = "job_not_finished"


class JobQueueFull(APIError):
    status_code = 429
    code = "job_queue_full"


class JobService:
    """Everything the jobs routes call. ``slots`` are the admission slots the embedded executor's
    jobs hold while they run (not needed with a broker: the workers run the jobs)."""

    def __init__(self, settings: Settings, engine: Callable[[], Engine | None],
                 registry: CollectorRegistry, slots: ThreadSlots | None = None) -> None:
        self.settings = settings
        self.context = JobContext.from_settings(settings, engine, registry)
        self.records, self.files = self.context.records, self.context.files
        registry.register(QueueCollector(self.records.counts))
        self.celery = None
        self._executor = None
        if settings.broker_url:
            from app.jobs.celery_app import make_celery

            self.celery = make_celery(settings)
        elif slots is None:
            raise ValueError("the embedded executor needs the service's admission slots")
        else:
            self._executor = EmbeddedExecutor(self.context, settings.job_workers, slots)
        self._webhooks = ThreadPoolExecutor(WEBHOOK_THREADS,
                                            thread_name_prefix="amanuensis-job-webhook")
        self._sweeper_stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="amanuensis-job-sweeper",
                                         daemon=True)

    def start(self) -> None:
        if self._executor is not None:
            self._executor.start()
        self._sweeper.start()

    def close(self) -> None:
        self._sweeper_stop.set()
        if self._executor is not None:
            self._executor.close()
        if self._sweeper.is_alive():
            self._sweeper.join()
        self._webhooks.shutdown(wait=True)
        self.records.close()

    def _sweep(self) -> None:
        interval = SWEEP_INTERVAL_SECONDS
        if self.celery is not None:
            interval = min(interval, self.settings.job_redispatch_seconds / 4)
        while True:
            try:
                swept = sweep_expired(self.records, self.files, self.settings.job_retention_seconds)
                if swept:
                    logger.info("deleted %d expired jobs", swept)
                if self.celery is not None:
                    self._redispatch()
            except (StoreError, SQLAlchemyError) as error:
                logger.warning("job sweep failed: %s", error)
            if self._sweeper_stop.wait(interval):
                return

    def _redispatch(self) -> None:
        """Send again the jobs whose message may have been lost (see the module's docstring)."""
        now, stale_before = time.time(), self.context.stale_before()
        for job_id, sent_at in self.records.redispatch_due(
                now=now, after=self.settings.job_redispatch_seconds, stale_before=stale_before):
            if not self.records.mark_dispatched(job_id, previous=sent_at, now=now,
                                                stale_before=stale_before):
                continue  # started meanwhile, or another service sent it
            try:
                self._send(job_id)
            except Exception as error:  # noqa: BLE001 - kombu raises many kinds, all "down"
                logger.warning("could not send job %s to the broker again: %s", job_id, error)
                return
            self.context.metrics.redispatches.inc()
            logger.warning("job %s still waiting %.0f s after it was sent to the broker: sent "
                           "again", job_id, now - sent_at)

    def submit(self, data: bytes, *, filename: str | None, options: dict,
               callback_url: str | None) -> Job:
        """Decode-check, store, record and dispatch one job (blocking: call off the loop)."""
        limit = self.settings.job_max_audio_seconds
        try:
            duration = measure_audio(io.BytesIO(data), max_seconds=limit)
        except AudioTooLong as error:
            raise AudioTooLong(f"the audio is longer than the {limit:g} s a job accepts "
                               f"(AMANUENSIS_JOB_MAX_AUDIO_SECONDS)", param="file") from error
        queued = self._guard(self.records.queued_count)
        if queued >= self.settings.job_max_queued:
            raise JobQueueFull(f"{queued} jobs are waiting, the most this service queues "
                               f"(AMANUENSIS_JOB_MAX_QUEUED)", headers={"Retry-After": "60"})
        job_id = self.records.new_id()
        self._guard(lambda: self.files.put(job_id, AUDIO, data))
        try:
            job = self._guard(lambda: self.records.create(
                job_id, duration_seconds=duration, options=options, filename=filename,
                callback_url=callback_url))
            self._dispatch(job_id)
        except APIError:
            self.files.delete_job(job_id)
            self._forget(job_id)
            raise
        return job

    def _forget(self, job_id: str) -> None:
        try:
            self.records.delete(job_id)
        except SQLAlchemyError as error:
            logger.warning("could not delete the record of refused job %s: %s", job_id, error)

    def _dispatch(self, job_id: str) -> None:
        if self._executor is not None:
            self._executor.notify()
            return
        try:
            self._send(job_id)
        except Exception as error:  # kombu raises many kinds; all mean "down"
            raise JobStoreUnavailable(f"the job broker is unavailable: {error}") from error

    def _send(self, job_id: str) -> None:
        from app.jobs.celery_app import RUN_JOB_TASK

        self.celery.send_task(RUN_JOB_TASK, args=[job_id])

    def _call_back(self, job: Job) -> None:
        try:
            call_back(job, self.context)
        except SQLAlchemyError as error:
            logger.warning("job %s: could not record its webhook's outcome: %s", job.id, error)

    @staticmethod
    def _guard(action):
        try:
            return action()
        except StoreError as error:
            raise JobStoreUnavailable(f"the job store is unavailable: {error}") from error
        except SQLAlchemyError as error:
            raise JobStoreUnavailable(
                f"the job records are unavailable: {type(error).__name__}") from error

    def get(self, job_id: str) -> Job:
        job = self._guard(lambda: self.records.get(job_id))
        if job is None:
            raise JobNotFound(f"no job {job_id!r}", param="job_id")
        return job

    def list(self, *, status: str | None, limit: int, before: float | None) -> list[Job]:
        return self._guard(lambda: self.records.list(status=status, limit=limit, before=before))

    def delete(self, job_id: str) -> Job:
        """Cancel a queued or running job (its record stays, ``cancelled``), or forget a finished
        one; either way its audio and result are deleted."""
        job = self.get(job_id)
        if job.status in ACTIVE and self._guard(lambda: self.records.cancel(job_id)):
            self.files.delete_job(job_id)
            cancelled = self.get(job_id)
            observe_end(cancelled, self.context)
            if cancelled.callback_url is not None:
                self._webhooks.submit(self._call_back, cancelled)
            return cancelled
        self.files.delete_job(job_id)
        self._guard(lambda: self.records.delete(job_id))
        return job

    def result(self, job_id: str) -> Transcription:
        job = self.get(job_id)
        if job.status != JobStatus.SUCCEEDED.value:
            detail = f": {job.error}" if job.error else ""
            raise JobNotFinished(f"job {job_id} is {job.status}{detail}", param="job_id",
                                 code="job_not_finished" if not job.finished else f"job_{job.status}")
        return transcription_from_json(self._guard(lambda: self.files.get(job_id, RESULT)))
