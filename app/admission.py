"""Admission control: bounded concurrent model work, a bounded wait queue, per-request deadlines.

Every transcription goes through :meth:`AdmissionController.run`. At most ``max_concurrent``
runs execute at once, each on a thread of a pool of exactly that size, so model work never blocks
the event loop and ``/health``, ``/ready`` and ``/metrics`` never queue behind it. At most
``max_queue`` requests wait, first come first served; beyond that a request is refused at once
(429 with ``Retry-After``) instead of piling up.

Each request gets one deadline, counted from admission and scaled with its audio duration; the
wait in the queue counts against it. Past the deadline the client gets a 504 in the API's error
shape. A thread cannot be interrupted, so a run that outlives its deadline (or its client) keeps
its slot until it actually ends: the number of busy threads never exceeds the limit. A request
whose client hangs up while it is queued leaves the queue and never starts.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from app.refusals import Refusal

T = TypeVar("T")

DisconnectProbe = Callable[[], Awaitable[bool]]


class RejectReason(str, Enum):
    """Why a request ended without a result. Fixed set: it is a metric label."""

    QUEUE_FULL = "queue_full"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CLIENT_DISCONNECTED = "client_disconnected"


class QueueFull(Refusal):
    status_code = 429
    error_type = "rate_limit_error"
    code = RejectReason.QUEUE_FULL.value


class DeadlineExceeded(Refusal):
    status_code = 504
    error_type = "timeout_error"
    code = RejectReason.DEADLINE_EXCEEDED.value


class ClientDisconnected(Refusal):
    """The client hung up while queued. Nobody reads the answer; 499 as nginx logs it."""

    status_code = 499
    error_type = "client_closed_request"
    code = RejectReason.CLIENT_DISCONNECTED.value


@dataclass(frozen=True)
class AdmissionLimits:
    """How much work the service takes on, and how long a request may take."""

    max_concurrent: int
    max_queue: int
    timeout_base_seconds: float
    timeout_per_audio_second: float

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {self.max_concurrent}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must not be negative, got {self.max_queue}")
        if self.timeout_base_seconds <= 0 or self.timeout_per_audio_second < 0:
            raise ValueError("timeouts must be positive (per-audio-second may be zero)")

    def deadline_seconds(self, audio_seconds: float) -> float:
        return self.timeout_base_seconds + self.timeout_per_audio_second * max(audio_seconds, 0.0)


class AdmissionMetrics:
    """``amanuensis_queue_depth`` and ``amanuensis_rejected_requests_total{reason}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth = Gauge(
            "amanuensis_queue_depth",
            "Transcription requests waiting for a model slot",
            registry=registry,
        )
        self.rejected = Counter(
            "amanuensis_rejected_requests",
            "Transcription requests that ended without a result, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in RejectReason:
            self.rejected.labels(reason=reason.value)


class AdmissionController:
    """Runs blocking model work on a bounded pool behind a bounded FIFO queue.

    All methods except :meth:`close` must be called from the event loop that runs requests.
    """

    def __init__(
        self,
        limits: AdmissionLimits,
        metrics: AdmissionMetrics,
        *,
        disconnect_poll_seconds: float = 0.25,
    ) -> None:
        self.limits = limits
        self._metrics = metrics
        self._disconnect_poll_seconds = disconnect_poll_seconds
        self._executor = ThreadPoolExecutor(
            max_workers=limits.max_concurrent, thread_name_prefix="amanuensis-model"
        )
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_run_seconds: float | None = None

    @property
    def running(self) -> int:
        """Slots held, including runs whose client has gone or whose deadline has passed."""
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after_seconds(self) -> int:
        """A client refused now should try again after about one run: by then a place is free."""
        if self._mean_run_seconds is None:
            return 1
        return max(1, math.ceil(self._mean_run_seconds))

    async def run(
        self,
        work: Callable[[], T],
        *,
        audio_seconds: float,
        is_disconnected: DisconnectProbe | None = None,
    ) -> T:
        """Run ``work()`` on a model thread once a slot is free and return its result.

        Raises :class:`QueueFull` when the queue is full, :class:`DeadlineExceeded` when the
        deadline passes (queued or running), :class:`ClientDisconnected` when ``is_disconnected``
        reports the client gone before the work started; whatever ``work`` raises otherwise.
        """
        loop = asyncio.get_running_loop()
        deadline = self.limits.deadline_seconds(audio_seconds)
        expires_at = loop.time() + deadline
        await self._acquire(expires_at, deadline, is_disconnected)
        return await self._run_in_slot(work, expires_at, deadline)

    def close(self) -> None:
        """Wait for running work to end and stop the pool's threads; idempotent."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _acquire(
        self, expires_at: float, deadline: float, is_disconnected: DisconnectProbe | None
    ) -> None:
        if self._running < self.limits.max_concurrent and not self._waiters:
            self._running += 1
            return
        if len(self._waiters) >= self.limits.max_queue:
            self._count(RejectReason.QUEUE_FULL)
            raise QueueFull(
                f"The server is busy: {self._running} transcriptions running and "
                f"{len(self._waiters)} waiting (limits {self.limits.max_concurrent} and "
                f"{self.limits.max_queue}). Retry later.",
                headers={"Retry-After": str(self.retry_after_seconds())},
            )
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        self._show_depth()
        try:
            await self._wait_for_slot(granted, expires_at, deadline, is_disconnected)
        except BaseException:
            if granted.done():
                self._release()
            else:
                granted.cancel()
                self._waiters.remove(granted)
                self._show_depth()
            raise

    async def _wait_for_slot(
        self,
        granted: asyncio.Future[None],
        expires_at: float,
        deadline: float,
        is_disconnected: DisconnectProbe | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = expires_at - loop.time()
            if remaining <= 0:
                self._count(RejectReason.DEADLINE_EXCEEDED)
                raise DeadlineExceeded(
                    f"The request waited {deadline:.1f} s, its whole deadline, for a free "
                    "transcription slot without starting. Retry later or send shorter audio."
                )
            await asyncio.wait({granted}, timeout=min(remaining, self._disconnect_poll_seconds))
            if is_disconnected is not None and await is_disconnected():
                self._count(RejectReason.CLIENT_DISCONNECTED)
                raise ClientDisconnected("The client disconnected before its transcription began.")
            if granted.done():
                return

    async def _run_in_slot(self, work: Callable[[], T], expires_at: float, deadline: float) -> T:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        try:
            future = loop.run_in_executor(self._executor, context.run, work)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(functools.partial(self._finish_run, loop.time()))
        try:
            return await asyncio.wait_for(
                asyncio.shield(future), timeout=max(expires_at - loop.time(), 0.0)
            )
        except TimeoutError:
            self._count(RejectReason.DEADLINE_EXCEEDED)
            raise DeadlineExceeded(
                f"The transcription did not finish within its deadline of {deadline:.1f} s "
                "(a base allowance plus time per second of audio)."
            ) from None

    def _finish_run(self, started_at: float, future: asyncio.Future) -> None:
        """Done-callback of every run: frees its slot whether anyone still awaits it or not."""
        if not future.cancelled():
            future.exception()  # retrieved here, so an abandoned run's error is not logged as lost
        elapsed = asyncio.get_running_loop().time() - started_at
        previous = self._mean_run_seconds
        self._mean_run_seconds = elapsed if previous is None else 0.8 * previous + 0.2 * elapsed
        self._release()

    def _release(self) -> None:
        """Hand the slot to the oldest live waiter, or give it back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._show_depth()
                return
        self._running -= 1
        self._show_depth()

    def _show_depth(self) -> None:
        self._metrics.queue_depth.set(len(self._waiters))

    def _count(self, reason: RejectReason) -> None:
        self._metrics.rejected.labels(reason=reason.value).inc()
