"""Job records through SQLAlchemy: a SQLite file by default, PostgreSQL for several machines.

Every state change is one conditional ``UPDATE`` (``WHERE status = ...``), so two processes that
race for the same job (a re-delivered task, a cancel while it finishes) cannot both win: whoever
changes zero rows lost and acts accordingly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
FINISHED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "amanuensis_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, index=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    dispatched_at: Mapped[float | None] = mapped_column(Float)
    """When the job was last handed to whoever runs it (sent to the broker); ``None`` in
    records written before the column existed, read as ``created_at``."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    """``host:pid`` of the process running (or that last ran) the job."""
    duration_seconds: Mapped[float] = mapped_column(Float)
    progress_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    options: Mapped[dict] = mapped_column(JSON)
    """The transcription options of the submission (language, task, prompt, words)."""
    filename: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_status: Mapped[str | None] = mapped_column(String(16))
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class Job:
    """A read-only snapshot of one record."""

    id: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    worker: str | None
    duration_seconds: float
    progress_seconds: float
    options: dict
    filename: str | None
    error: str | None
    callback_url: str | None
    callback_status: str | None
    callback_attempts: int

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def document(self) -> dict[str, Any]:
        """The job as the API and webhooks show it."""
        return {
            "id": self.id,
            "object": "transcription.job",
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "worker": self.worker,
            "filename": self.filename,
            "progress": {"audio_seconds": round(self.progress_seconds, 3),
                         "total_seconds": round(self.duration_seconds, 3)},
            "error": self.error,
            "callback": None if self.callback_url is None else {
                "url": self.callback_url, "status": self.callback_status,
                "attempts": self.callback_attempts},
        }


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def connect(url: str) -> Engine:
    """An engine for ``url`` with the schema in place (SQLite in WAL mode, shared by threads)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Add the columns a newer version defined to a table an older version created (each new
    column is nullable), so an existing data directory or database keeps working."""
    table = JobRow.__table__
    present = {column["name"] for column in inspect(engine).get_columns(table.name)}
    with engine.begin() as connection:
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=engine.dialect)
                connection.exec_driver_sql(
                    f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")


def _claimable(stale_before: float):
    """Queued, or running on a worker that has not reported since ``stale_before``."""
    return ((JobRow.status == JobStatus.QUEUED.value)
            | ((JobRow.status == JobStatus.RUNNING.value) & (JobRow.heartbeat_at < stale_before)))


class JobRecords:
    """Every read and state change of job records."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> JobRecords:
        return cls(connect(url))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def _update(self, job_id: str, where: tuple[str, ...], **values: Any) -> bool:
        with self._session() as session:
            result = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(where)).values(**values))
            return result.rowcount == 1

    @staticmethod
    def new_id() -> str:
        return f"job_{uuid.uuid4().hex}"

    def create(self, job_id: str, *, duration_seconds: float, options: dict,
               filename: str | None, callback_url: str | None) -> Job:
        now = time.time()
        row = JobRow(id=job_id, status=JobStatus.QUEUED.value, created_at=now, dispatched_at=now,
                     attempts=0, duration_seconds=duration_seconds, progress_seconds=0.0,
                     options=options, filename=filename, callback_url=callback_url,
                     callback_status="pending" if callback_url else None, callback_attempts=0)
        with self._session() as session:
            session.add(row)
        return Job.from_row(row)

    def get(self, job_id: str) -> Job | None:
        with self._session() as session:
            row = session.get(JobRow, job_id)
            return Job.from_row(row) if row is not None else None

    def list(self, *, status: str | None = None, limit: int = 20,
             before: float | None = None) -> list[Job]:
        """Newest first; ``before`` is the ``created_at`` of the last job of the previous page."""
        query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
        if status is not None:
            query = query.where(JobRow.status == status)
        if before is not None:
            query = query.where(JobRow.created_at < before)
        with self._session() as session:
            return [Job.from_row(row) for row in session.scalars(query)]

    def counts(self) -> dict[str, int]:
        query = select(JobRow.status, func.count()).group_by(JobRow.status)
        with self._session() as session:
            found = dict(session.execute(query).all())
        return {status.value: int(found.get(status.value, 0)) for status in JobStatus}

    def queued_count(self) -> int:
        query = select(func.count()).select_from(JobRow).where(
            JobRow.status == JobStatus.QUEUED.value)
        with self._session() as session:
            return int(session.scalar(query))

    def claim(self, job_id: str, *, stale_before: float, worker: str) -> Job | None:
        """Mark the job running for this caller: a queued one, or a running one whose worker
        has not reported since ``stale_before`` (it died). ``None`` when someone else has it or
        it is finished."""
        now = time.time()
        with self._session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, _claimable(stale_before))
                .values(status=JobStatus.RUNNING.value, started_at=now, heartbeat_at=now,
                        worker=worker, attempts=JobRow.attempts + 1, progress_seconds=0.0))
            if result.rowcount != 1:
                return None
            return Job.from_row(session.get(JobRow, job_id))

    def next_claimable(self, *, stale_before: float) -> str | None:
        """The oldest job :meth:`claim` would give out."""
        query = (select(JobRow.id).where(_claimable(stale_before))
                 .order_by(JobRow.created_at).limit(1))
        with self._session() as session:
            return session.scalar(query)

    def redispatch_due(self, *, now: float, after: float, stale_before: float,
                       limit: int = 100) -> list[tuple[str, float]]:
        """Claimable jobs due to be sent again, oldest first, as ``(id, dispatched_at)``: last
        sent at least ``after`` seconds before ``now``, and at least as long ago as the job's
        age when it was last sent (so the waits between sends double)."""
        sent = func.coalesce(JobRow.dispatched_at, JobRow.created_at)
        query = (select(JobRow.id, JobRow.created_at, sent)
                 .where(_claimable(stale_before), sent <= now - after)
                 .order_by(JobRow.created_at).limit(limit))
        with self._session() as session:
            rows = session.execute(query).all()
        return [(job_id, last) for job_id, created, last in rows
                if now - last >= last - created]

    def mark_dispatched(self, job_id: str, *, previous: float, now: float,
                        stale_before: float) -> bool:
        """Record a new send of the job if it still waits and nobody else has sent it since
        ``previous`` (several services on one database send it once); whether to send."""
        with self._session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id,
                       func.coalesce(JobRow.dispatched_at, JobRow.created_at) == previous,
                       _claimable(stale_before))
                .values(dispatched_at=now))
            return result.rowcount == 1

    def requeue_running(self) -> int:
        """Put every running job back in the queue (a single executor starting up owns them)."""
        with self._session() as session:
            result = session.execute(
                update(JobRow).where(JobRow.status == JobStatus.RUNNING.value)
                .values(status=JobStatus.QUEUED.value, progress_seconds=0.0))
            return result.rowcount

    def report(self, job_id: str, attempt: int, progress_seconds: float | None = None) -> str | None:
        """Heartbeat (and progress) of a running attempt; the job's status now (``cancelled``
        tells the worker to stop), ``None`` when the job is gone."""
        values: dict[str, Any] = {"heartbeat_at": time.time()}
        if progress_seconds is not None:
            values["progress_seconds"] = progress_seconds
        with self._session() as session:
            session.execute(update(JobRow).where(
                JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value,
                JobRow.attempts == attempt).values(**values))
            return session.scalar(select(JobRow.status).where(JobRow.id == job_id))

    def finish(self, job_id: str, attempt: int, status: JobStatus, *,
               error: str | None = None, progress_seconds: float | None = None) -> Job | None:
        """End a running attempt; ``None`` when it is no longer this attempt's to end."""
        values: dict[str, Any] = {"status": status.value, "finished_at": time.time(),
                                  "error": error}
        if progress_seconds is not None:
            values["progress_seconds"] = progress_seconds
        with self._session() as session:
            result = session.execute(update(JobRow).where(
                JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value,
                JobRow.attempts == attempt).values(**values))
            if result.rowcount != 1:
                return None
            return Job.from_row(session.get(JobRow, job_id))

    def record_stop(self, job_id: str, attempt: int, progress_seconds: float) -> None:
        """How far a cancelled attempt got before it stopped."""
        with self._session() as session:
            session.execute(update(JobRow).where(
                JobRow.id == job_id, JobRow.status == JobStatus.CANCELLED.value,
                JobRow.attempts == attempt).values(progress_seconds=progress_seconds))

    def cancel(self, job_id: str) -> bool:
        return self._update(job_id, ACTIVE, status=JobStatus.CANCELLED.value,
                            finished_at=time.time())

    def record_callback(self, job_id: str, status: str, attempts: int) -> None:
        with self._session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(
                callback_status=status, callback_attempts=attempts))

    def delete(self, job_id: str) -> None:
        with self._session() as session:
            row = session.get(JobRow, job_id)
            if row is not None:
                session.delete(row)

    def expired(self, finished_before: float) -> list[str]:
        query = select(JobRow.id).where(JobRow.status.in_(FINISHED),
                                        JobRow.finished_at < finished_before)
        with self._session() as session:
            return list(session.scalars(query))
