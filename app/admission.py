"""Admission control: bounded concurrent model work, a bounded wait queue, per-request deadlines.

Every transcription holds a slot (:meth:`AdmissionController.admit`) for its model work. At most ``max_concurrent``
runs execute at once, each on a thread of a pool of exactly that size, so model work never blocks
the event loop and ``/health``, ``/ready`` and ``/metrics`` never queue behind it. At most
``max_queue`` requests wait, first come first served; beyond that a request is refused at once
(429 with ``Retry-After``) instead of piling up.

Each request gets one deadline, counted from its arrival at :meth:`AdmissionController.admit`
and scaled with its audio duration; the wait in the queue counts against it. Past the deadline
the client gets a 504 in the API's error shape. A request whose client hangs up while it is
queued leaves the queue and never starts; one whose client hangs up while it runs is answered
499 (nobody reads it).

A thread cannot be interrupted, so work is asked to stop instead: :meth:`Slot.should_stop` turns
true once the deadline has passed or the request has been given up, and the work checks it
between steps (the decoder between frames, the engine between 30 s chunks) and ends by raising
:class:`~app.errors.WorkStopped`. Until the thread actually ends its slot stays held, so the
number of busy threads never exceeds the limit.

Jobs the service runs itself take the same slots from their own threads
(:class:`ThreadSlots`), after every waiting request and without a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from app.errors import APIError, WorkStopped

T = TypeVar("T")

DisconnectProbe = Callable[[], Awaitable[bool]]


class RejectReason(str, Enum):
    """Why a request ended without a result. Fixed set: it is a metric label."""

    QUEUE_FULL = "queue_full"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CLIENT_DISCONNECTED = "client_disconnected"


class QueueFull(APIError):
    status_code = 429
    code = RejectReason.QUEUE_FULL.value


class DeadlineExceeded(APIError):
    status_code = 504
    code = RejectReason.DEADLINE_EXCEEDED.value


class ClientDisconnected(APIError):
    """The client hung up while queued. Nobody reads the answer; 499 as nginx logs it."""

    status_code = 499
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
            max_workers=limits.max_concurrent, thread_name_prefix="amanuensis-slot"
        )
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()
        """Waiters of :class:`ThreadSlots`: served after every waiting request."""
        self._mean_slot_seconds: float | None = None

    @property
    def running(self) -> int:
        """Slots held, including runs whose client has gone or whose deadline has passed."""
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after_seconds(self) -> int:
        """A client refused now should try again after about one request: a place is free then."""
        if self._mean_slot_seconds is None:
            return 1
        return max(1, math.ceil(self._mean_slot_seconds))

    @contextlib.asynccontextmanager
    async def admit(
        self, *, audio_seconds: float = 0.0, is_disconnected: DisconnectProbe | None = None
    ) -> AsyncIterator[Slot]:
        """Hold one slot for the ``async with`` block; its work goes through :meth:`Slot.run`.

        The deadline starts now, with the allowance for ``audio_seconds``, and keeps running
        while the request waits in the queue; a request that only learns its duration by
        decoding inside the slot adds it with :meth:`Slot.allow_for_audio`.
        Raises :class:`QueueFull`, :class:`DeadlineExceeded` (still queued at the deadline) or
        :class:`ClientDisconnected` (``is_disconnected`` said so while it was queued).
        """
        arrived_at = time.monotonic()
        deadline = self.limits.deadline_seconds(audio_seconds)
        await self._acquire(arrived_at + deadline, deadline, is_disconnected)
        slot = Slot(self, arrived_at, deadline, is_disconnected)
        try:
            yield slot
        finally:
            slot.close()

    async def run(
        self,
        work: Callable[[], T],
        *,
        audio_seconds: float,
        is_disconnected: DisconnectProbe | None = None,
    ) -> T:
        """Admit, run ``work()`` on a model thread within the deadline, return its result."""
        async with self.admit(audio_seconds=audio_seconds, is_disconnected=is_disconnected) as slot:
            return await slot.run(work)

    def thread_slots(self) -> ThreadSlots:
        """Slots for work on threads of its own (call from the event loop)."""
        return ThreadSlots(self, asyncio.get_running_loop())

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
        while True:
            remaining = expires_at - time.monotonic()
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

    def _slot_ended(self, held_seconds: float) -> None:
        previous = self._mean_slot_seconds
        self._mean_slot_seconds = (
            held_seconds if previous is None else 0.8 * previous + 0.2 * held_seconds
        )
        self._release()

    def _release(self) -> None:
        """Hand the slot to the oldest live waiting request, else to the oldest thread waiting
        in :class:`ThreadSlots`, or give it back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._show_depth()
                return
        while self._background:
            waiter = self._background.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._running -= 1
        self._show_depth()

    def _request_for_thread(self, claim: _ThreadClaim) -> None:
        if self._running < self.limits.max_concurrent and not self._waiters \
                and not self._background:
            self._running += 1
            claim.grant()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(lambda done: None if done.cancelled() else claim.grant())
        self._background.append(waiter)
        claim.waiter = waiter

    def _withdraw_for_thread(self, claim: _ThreadClaim) -> None:
        waiter = claim.waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()
            self._background.remove(waiter)

    def _show_depth(self) -> None:
        self._metrics.queue_depth.set(len(self._waiters))

    def _count(self, reason: RejectReason) -> None:
        self._metrics.rejected.labels(reason=reason.value).inc()


class Slot:
    """One admitted request's right to run model work, one call at a time, until its deadline.

    The slot is given back when the ``async with`` block ends, or, if a run outlived the block
    (deadline passed, client gone, task cancelled), when that run's thread finishes; such a run
    sees :meth:`should_stop` true and is expected to end early.
    """

    def __init__(self, controller: AdmissionController, arrived_at: float, deadline: float,
                 is_disconnected: DisconnectProbe | None) -> None:
        self._controller = controller
        self._loop = asyncio.get_running_loop()
        self._granted_at = time.monotonic()
        self.queue_wait_seconds = self._granted_at - arrived_at
        """How long the request waited for this slot."""
        self.deadline_seconds = deadline
        self._expires_at = arrived_at + deadline
        self._is_disconnected = is_disconnected
        self._pending: asyncio.Future | None = None
        self._given_up = False
        self._closed = False

    def allow_for_audio(self, audio_seconds: float) -> None:
        """Extend the deadline by the per-second allowance for ``audio_seconds`` of audio."""
        extra = self._controller.limits.timeout_per_audio_second * max(audio_seconds, 0.0)
        self.deadline_seconds += extra
        self._expires_at += extra

    def should_stop(self) -> bool:
        """Whether work in this slot should stop now: its deadline has passed or its request was
        given up (client gone, task cancelled). Safe to call from the work's thread."""
        return self._given_up or time.monotonic() >= self._expires_at

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on a model thread; :class:`DeadlineExceeded` if the deadline comes first,
        :class:`ClientDisconnected` if the client hangs up first."""
        if self._closed:
            raise RuntimeError("the slot has been given back")
        if self._pending is not None and not self._pending.done():
            raise RuntimeError("the previous run in this slot has not finished")
        if self.should_stop():
            self._deadline_passed()
        context = contextvars.copy_context()
        future = self._loop.run_in_executor(self._controller._executor, context.run, work)
        future.add_done_callback(_retrieve_exception)
        self._pending = future
        try:
            return await self._outcome(future)
        except BaseException:
            self._given_up = True
            raise

    async def _outcome(self, future: asyncio.Future[T]) -> T:
        poll = self._controller._disconnect_poll_seconds
        while True:
            remaining = self._expires_at - time.monotonic()
            if remaining <= 0:
                self._deadline_passed()
            await asyncio.wait({future}, timeout=min(remaining, poll))
            if future.done():
                if isinstance(future.exception(), WorkStopped):
                    self._deadline_passed()
                return future.result()
            if self._is_disconnected is not None and await self._is_disconnected():
                self._controller._count(RejectReason.CLIENT_DISCONNECTED)
                raise ClientDisconnected("The client disconnected while its transcription ran.")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pending = self._pending
        if pending is not None and not pending.done():
            self._given_up = True
            pending.add_done_callback(lambda _: self._give_back())
        else:
            self._give_back()

    def _give_back(self) -> None:
        self._controller._slot_ended(time.monotonic() - self._granted_at)

    def _deadline_passed(self) -> NoReturn:
        self._given_up = True
        self._controller._count(RejectReason.DEADLINE_EXCEEDED)
        raise DeadlineExceeded(
            f"The transcription did not finish within its deadline of "
            f"{self.deadline_seconds:.1f} s (a base allowance plus time per second of audio, "
            f"counted from the request's arrival, queueing included)."
        )


class ThreadSlots:
    """The controller's slots for work that runs on threads of its own instead of the slot pool:
    the durable jobs the service runs itself (the embedded deployment). A job holds a slot while
    it transcribes, like a request, so jobs and requests together never run more than
    ``max_concurrent`` transcriptions on the engine.

    Such work has no deadline and is never refused: it waits for a slot behind every waiting
    request (requests have deadlines, a job's wait is its time queued) and is not counted in
    ``max_queue`` or ``amanuensis_queue_depth`` (at most one waiter per job worker; the wait
    shows as the job staying ``queued``). Used from the worker threads; the controller's state
    is changed only on its event loop.
    """

    def __init__(self, controller: AdmissionController, loop: asyncio.AbstractEventLoop,
                 poll_seconds: float = 0.25) -> None:
        self._controller = controller
        self._loop = loop
        self._poll_seconds = poll_seconds

    @contextlib.contextmanager
    def hold(self, stop: threading.Event) -> Iterator[bool]:
        """Wait for a slot; yield ``True`` holding it until the block ends, or ``False`` when
        ``stop`` was set before one was granted."""
        claim = _ThreadClaim(self._controller)
        self._loop.call_soon_threadsafe(self._controller._request_for_thread, claim)
        while not claim.granted.wait(self._poll_seconds):
            if stop.is_set() and claim.abandon():
                self._loop.call_soon_threadsafe(self._controller._withdraw_for_thread, claim)
                yield False
                return
        try:
            yield True
        finally:
            self._loop.call_soon_threadsafe(self._controller._release)


class _ThreadClaim:
    """One thread's request for a slot. Granting (on the loop) and abandoning (on the thread)
    race; the lock makes exactly one win, and a grant that comes after the thread gave up is
    given straight back."""

    def __init__(self, controller: AdmissionController) -> None:
        self._controller = controller
        self._lock = threading.Lock()
        self._abandoned = False
        self.granted = threading.Event()
        self.waiter: asyncio.Future[None] | None = None

    def grant(self) -> None:
        with self._lock:
            if not self._abandoned:
                self.granted.set()
                return
        self._controller._release()

    def abandon(self) -> bool:
        """Give up waiting; ``False`` when the slot was granted first (the caller holds it)."""
        with self._lock:
            if self.granted.is_set():
                return False
            self._abandoned = True
            return True


def _retrieve_exception(future: asyncio.Future) -> None:
    """Mark an abandoned run's error as seen, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
