""":func:`run_job`, the one task that runs a job, in the service's embedded executor and in
``amanuensis worker`` alike.

It is idempotent by job id: it first claims the record (queued, or running with a dead worker),
and a job that is finished, or running on a live worker, is left alone. While it runs, a
heartbeat thread tells the records the worker is alive, and the engine's progress callback
(called as each chunk finishes) stores the audio seconds done and checks whether the job was
cancelled, stopping the work there. The result is stored before the job is marked succeeded, and
a job cancelled meanwhile loses its files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Self

from prometheus_client import CollectorRegistry

from app.errors import APIError
from app.jobs.metrics import JobMetrics
from app.jobs.records import Job, JobRecords, JobStatus
from app.jobs.storage import AUDIO, RESULT, JobFiles, open_files
from app.jobs.webhooks import WebhookPolicy, deliver
from app.settings import Settings
from app.transcription.audio import decode_audio
from app.transcription.result import Transcription

if TYPE_CHECKING:  # WhisperX takes seconds to import: the engine module loads with the model
    from app.transcription.engine import Engine

logger = logging.getLogger(__name__)


class RunOutcome(str, Enum):
    RAN = "ran"
    ALREADY_FINISHED = "already_finished"
    RUNNING_ELSEWHERE = "running_elsewhere"
    MISSING = "missing"
    INTERRUPTED = "interrupted"


class JobStopped(Exception):
    """Raised from the progress callback: the job was cancelled, or this process is stopping."""

    def __init__(self, job_id: str, audio_seconds: float) -> None:
        super().__init__(job_id)
        self.audio_seconds = audio_seconds


def database_url(settings: Settings) -> str:
    """``AMANUENSIS_DATABASE_URL``, or the SQLite file under the data directory."""
    if settings.database_url:
        return settings.database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.data_dir.resolve() / 'jobs.sqlite3'}"


@dataclass
class JobContext:
    """What running a job needs; one per process."""

    settings: Settings
    records: JobRecords
    files: JobFiles
    engine: Callable[[], Engine | None]
    metrics: JobMetrics
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the process shuts down: the running job stops at its next chunk and stays
    ``running`` for the next start (or another worker) to take over."""

    @classmethod
    def from_settings(cls, settings: Settings, engine: Callable[[], Engine | None],
                      registry: CollectorRegistry) -> JobContext:
        """The records, files and metrics ``settings`` name, around ``engine``."""
        files = open_files(settings.storage_url, settings.data_dir / "files",
                           settings.storage_endpoint_url)
        return cls(settings, JobRecords.from_url(database_url(settings)), files, engine,
                   JobMetrics(registry))

    @property
    def webhook_policy(self) -> WebhookPolicy:
        secret = self.settings.webhook_secret
        return WebhookPolicy(secret.get_secret_value() if secret else None,
                             self.settings.webhook_max_attempts,
                             self.settings.webhook_backoff_seconds,
                             self.settings.webhook_timeout_seconds)

    def stale_before(self) -> float:
        return time.time() - self.settings.job_visibility_timeout_seconds


def transcription_json(transcription: Transcription) -> bytes:
    body = {name: value for name, value in asdict(transcription).items() if name != "stage_seconds"}
    return json.dumps(body).encode()


def transcription_from_json(data: bytes) -> Transcription:
    return Transcription(**json.loads(data))


def run_job(job_id: str, context: JobContext) -> RunOutcome:
    """Run job ``job_id`` to its end unless it is not this caller's to run."""
    job = context.records.claim(job_id, stale_before=context.stale_before(),
                                worker=f"{socket.gethostname()}:{os.getpid()}")
    if job is None:
        current = context.records.get(job_id)
        if current is None:
            return RunOutcome.MISSING
        return RunOutcome.ALREADY_FINISHED if current.finished else RunOutcome.RUNNING_ELSEWHERE
    logger.info("job %s attempt %d started", job_id, job.attempts)
    with _Heartbeat(context, job):
        try:
            ended = _transcribe(job, context)
        except JobStopped as stopped:
            if context.stopping.is_set():
                return RunOutcome.INTERRUPTED
            logger.info("job %s cancelled at %.1f of %.1f audio seconds", job_id,
                        stopped.audio_seconds, job.duration_seconds)
            context.records.record_stop(job_id, job.attempts, stopped.audio_seconds)
            context.files.delete_job(job_id)
            return RunOutcome.RAN
        except APIError as error:
            ended = context.records.finish(job_id, job.attempts, JobStatus.FAILED,
                                           error=error.message)
        except Exception as error:  # recorded on the job, which then ends
            logger.exception("job %s failed", job_id)
            ended = context.records.finish(job_id, job.attempts, JobStatus.FAILED,
                                           error=f"{type(error).__name__}: {error}")
    if ended is not None:
        observe_end(ended, context)
        call_back(ended, context)
    return RunOutcome.RAN


def _transcribe(job: Job, context: JobContext) -> Job | None:
    engine = context.engine()
    if engine is None:
        raise RuntimeError("the model is not loaded")
    audio = decode_audio(io.BytesIO(context.files.get(job.id, AUDIO)))
    duration = job.duration_seconds

    def progress(percent: float) -> None:
        done = duration * min(percent, 100) / 100
        status = context.records.report(job.id, job.attempts, done)
        if status != JobStatus.RUNNING.value or context.stopping.is_set():
            raise JobStopped(job.id, done)

    progress(0.0)
    options = job.options
    transcription = engine.transcribe(
        audio, language=options.get("language"), task=options.get("task", "transcribe"),
        initial_prompt=options.get("prompt"), word_timestamps=options.get("words", False),
        progress=progress)
    context.files.put(job.id, RESULT, transcription_json(transcription))
    ended = context.records.finish(job.id, job.attempts, JobStatus.SUCCEEDED,
                                   progress_seconds=duration)
    if ended is None:  # cancelled while the result was being written
        context.files.delete_job(job.id)
    return ended


class _Heartbeat:
    """Reports the attempt alive every quarter of the visibility timeout while it runs."""

    def __init__(self, context: JobContext, job: Job) -> None:
        self._context, self._job = context, job
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job.id}",
                                        daemon=True)

    def _beat(self) -> None:
        interval = self._context.settings.job_visibility_timeout_seconds / 4
        while not self._done.wait(interval):
            self._context.records.report(self._job.id, self._job.attempts)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()


def observe_end(job: Job, context: JobContext) -> None:
    context.metrics.ended.labels(status=job.status).inc()
    if job.started_at is not None and job.finished_at is not None:
        elapsed = job.finished_at - job.started_at
        context.metrics.duration.observe(elapsed)
        if job.status == JobStatus.SUCCEEDED.value and elapsed > 0:
            context.metrics.realtime_factor.observe(job.duration_seconds / elapsed)


def call_back(job: Job, context: JobContext) -> None:
    """POST the ended job's document to its ``callback_url`` (if any), recording the outcome."""
    if job.callback_url is None:
        return
    delivery = deliver(job.callback_url, job.document(), context.webhook_policy)
    outcome = "delivered" if delivery.delivered else "failed"
    context.records.record_callback(job.id, outcome, delivery.attempts)
    context.metrics.webhooks.labels(outcome=outcome).inc()
    context.metrics.webhook_attempts.inc(delivery.attempts)
    if not delivery.delivered:
        logger.warning("job %s: webhook to %s failed after %d attempts: %s", job.id,
                       job.callback_url, delivery.attempts, delivery.last_error)


def sweep_expired(records: JobRecords, files: JobFiles, retention_seconds: float) -> int:
    """Delete finished jobs (records and files) that ended more than ``retention_seconds`` ago."""
    expired = records.expired(time.time() - retention_seconds)
    for job_id in expired:
        files.delete_job(job_id)
        records.delete(job_id)
    return len(expired)
