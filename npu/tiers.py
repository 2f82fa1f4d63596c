"""One operation (the mel front-end, GELU, attention) served by its best working back-end: the
one fallback mechanism of the runtime.

A :class:`TieredOp` owns an ordered list of NPU back-end factories and a CPU back-end of last
resort. Tiers are tried in order at start-up (or, for a lazy op, at its first call) and again
when a call fails: the failed call is retried on the next tier, so the caller still gets a
correct answer. Every skipped or abandoned tier counts one fallback under its reason (the fixed
set in :class:`npu.backend.FallbackReason`); each reason is logged as a warning the first time it
occurs for the op and at debug level afterwards, never once per call.

A tier left for a reason that can pass (``run_failed``, ``bad_output``, ``load_failed``) is not
left for good: ``npu_retry_seconds`` after the failure, the next call tries the tiers from the
top again (and counts a fallback again if they still fail). Missing hardware, XRT or kernel
artifacts do not come back without a restart: such a tier is never tried again, so its reason is
counted once per process.

A back-end that can prove itself (``self_check``, the known-answer probe) is probed again while
serving, every ``probe_every_calls`` calls or ``probe_interval_seconds`` seconds, before the call
that finds it due: a device that starts answering plausibly wrong is left with ``bad_output`` and
that call is served by the next tier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from npu.backend import NO_BACKEND, BackendError, FallbackReason
from npu.config import FrontEndConfig

logger = logging.getLogger(__name__)
TRANSIENT_REASONS = frozenset(
    {FallbackReason.RUN_FAILED, FallbackReason.BAD_OUTPUT, FallbackReason.LOAD_FAILED}
)
Result = TypeVar("Result")


@dataclass
class BackendMetrics:
    """Calls and compute time of one back-end, plus the op's own amounts (frames, elements...)."""

    calls: int = 0
    compute_seconds: float = 0.0
    amounts: dict[str, float] = field(default_factory=dict)

    def add(self, elapsed: float, amounts: dict[str, float]) -> None:
        self.calls += 1
        self.compute_seconds += elapsed
        for name, value in amounts.items():
            self.amounts[name] = self.amounts.get(name, 0) + value

    def as_dict(self) -> dict:
        metrics: dict[str, Any] = {"calls": self.calls, **self.amounts,
                                   "compute_seconds": self.compute_seconds}
        if "audio_seconds" in self.amounts:
            seconds = self.compute_seconds
            metrics["x_realtime"] = self.amounts["audio_seconds"] / seconds if seconds > 0 else 0.0
        return metrics


class TieredOp:
    """``op`` on the first working tier of ``tiers`` (``(name, factory(config))`` pairs), else on
    ``open_cpu()``. ``npu_allowed=False`` never opens a tier (``disabled_reason`` says why);
    with ``config.falls_back_to_cpu`` false, leaving the last tier raises :class:`BackendError`.
    ``eager=False`` resolves at the first call instead of now."""

    def __init__(self, op: str, config: FrontEndConfig,
                 tiers: Sequence[tuple[str, Callable[[FrontEndConfig], Any]]],
                 open_cpu: Callable[[], Any], *, npu_allowed: bool, disabled_reason: str,
                 cpu_label: str = "cpu", clock: Callable[[], float] = time.monotonic,
                 eager: bool = True) -> None:
        self.op, self.config = op, config
        self._tiers = list(tiers) if npu_allowed else []
        self._open_cpu, self._cpu_label, self._clock = open_cpu, cpu_label, clock
        self._disabled = [] if npu_allowed else [disabled_reason]
        self._retry_at: float | None = None
        self._gone_for_good: set[int] = set()
        self._calls_since_probe = 0
        self._probed_at = clock()
        self._state_lock = threading.Lock()
        self._npu_call_lock = threading.Lock()
        self._metrics: dict[str, BackendMetrics] = {}
        self._fallbacks = {reason.value: 0 for reason in FallbackReason}
        self._logged_reasons: set[str] = set()
        self._closed = False
        self._resolved = False
        self._active: Any = None
        self._active_tier = -1
        self._reason = "not used yet"
        self._cpu: Any = None
        if eager:
            with self._state_lock:
                self._resolve_first()

    # ---- back-end selection -------------------------------------------------------------------

    def _resolve_first(self) -> None:
        self._resolved = True
        self._resolve(first_tier=0, why_left=list(self._disabled))

    def _resolve(self, first_tier: int, why_left: list[str],
                 last_error: BackendError | None = None) -> None:
        """Open the first working tier from ``first_tier`` on; the CPU when none works.

        Called with ``_state_lock`` held. ``why_left`` carries the story so far for the reason,
        ``last_error`` the failure that started this resolution, if any.
        """
        for index in range(first_tier, len(self._tiers)):
            if index in self._gone_for_good:
                continue
            name, factory = self._tiers[index]
            try:
                backend = factory(self.config)
            except BackendError as exc:
                last_error = exc
            except Exception as exc:  # a factory bug must not take the service down
                last_error = BackendError(FallbackReason.LOAD_FAILED, f"{type(exc).__name__}: {exc}")
            else:
                self._active, self._active_tier = backend, index
                self._reason = "; ".join(why_left + [f"{name} opened"])
                self._calls_since_probe, self._probed_at = 0, self._clock()
                return
            self._count_fallback(index, last_error)
            why_left.append(f"{name} unavailable ({last_error.reason.value}: {last_error.detail})")
        if last_error is not None and not self.config.falls_back_to_cpu:
            self._active, self._active_tier = None, len(self._tiers)
            raise BackendError(last_error.reason, "; ".join(why_left) + "; fallback_to_cpu=False")
        if self._cpu is None:
            self._cpu = self._open_cpu()
        self._active, self._active_tier = self._cpu, len(self._tiers)
        self._reason = "; ".join(why_left + [self._cpu_label]) if why_left else self._cpu_label

    def _count_fallback(self, tier: int, error: BackendError) -> None:
        """Count leaving ``tier``; a tier left for a permanent reason is never tried again."""
        reason = error.reason.value
        self._fallbacks[reason] += 1
        if error.reason not in TRANSIENT_REASONS:
            self._gone_for_good.add(tier)
        elif self.config.npu_retry_seconds is not None:
            self._retry_at = self._clock() + self.config.npu_retry_seconds
        level = logging.DEBUG if reason in self._logged_reasons else logging.WARNING
        self._logged_reasons.add(reason)
        logger.log(level, "%s back-end %s left (%s): %s", self.op, self._tiers[tier][0], reason,
                   error.detail)

    def _leave(self, backend: Any, error: BackendError) -> None:
        """A call on ``backend`` failed: count it, close it, re-resolve from the next tier."""
        with self._state_lock:
            if self._active is not backend:
                return  # another thread already moved on
            name = self._tiers[self._active_tier][0]
            self._count_fallback(self._active_tier, error)
            _close_quietly(backend, self.op)
            left = [f"{name} failed ({error.reason.value}: {error.detail})"]
            self._resolve(first_tier=self._active_tier + 1, why_left=left, last_error=error)

    def _ensure_resolved(self) -> None:
        if self._resolved:
            return
        with self._npu_call_lock, self._state_lock:
            if not self._resolved and not self._closed:
                self._resolve_first()

    def _retry_npu_if_due(self) -> None:
        """Re-resolve from the top tier once the retry time after a transient failure is reached."""
        if self._retry_at is None or self._clock() < self._retry_at:
            return
        with self._npu_call_lock, self._state_lock:
            if self._closed or self._retry_at is None or self._clock() < self._retry_at:
                return
            self._retry_at = None
            if self._active_tier == 0:
                return
            logger.info("retrying the NPU %s tiers %s s after a transient failure", self.op,
                        self.config.npu_retry_seconds)
            if self._active is not None and self._active is not self._cpu:
                _close_quietly(self._active, self.op)  # one device context at a time
                self._active = None
            self._resolve(first_tier=0,
                          why_left=[f"NPU retried after {self.config.npu_retry_seconds} s"])

    # ---- calls --------------------------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        with self._state_lock:
            return self._active_name()

    def _active_name(self) -> str:
        """The active back-end's name (the caller holds the state lock)."""
        return self._active.name if self._active is not None else NO_BACKEND

    @property
    def reason(self) -> str:
        with self._state_lock:
            return self._reason

    def call(self, run: Callable[[Any], Result], check: Callable[[Result], None] | None = None,
             amounts: Callable[[Result], dict[str, float]] | None = None) -> tuple[Result, str]:
        """``run(backend)`` on the active back-end, falling back as above; returns the result and
        the name of the back-end that served it. ``check`` raises :class:`BackendError`
        (``bad_output``) for a result no back-end may return; ``amounts`` adds to its counters.
        A ``ValueError`` (bad input, refused by every back-end) passes through, not a failure."""
        self._ensure_resolved()
        self._retry_npu_if_due()
        while True:
            with self._state_lock:
                if self._closed:
                    raise RuntimeError("UnifiedNPURuntime is closed")
                backend = self._active
                if backend is None:
                    raise BackendError(FallbackReason.RUN_FAILED, f"no {self.op} back-end is open")
            if backend is self._cpu:
                return self._timed(backend, run, check, amounts), backend.name
            with self._npu_call_lock:
                if backend is not self._active:
                    continue
                try:
                    self._probe_if_due(backend)
                    return self._timed(backend, run, check, amounts), backend.name
                except ValueError:
                    raise
                except BackendError as exc:
                    error = exc
                except Exception as exc:
                    error = BackendError(FallbackReason.RUN_FAILED, f"{type(exc).__name__}: {exc}")
                self._leave(backend, error)

    def call_cpu(self, run: Callable[[Any], Result],
                 amounts: Callable[[Result], dict[str, float]] | None = None) -> tuple[Result, str]:
        """``run`` on the CPU back-end: for inputs the NPU kernels do not take (not a fallback)."""
        with self._state_lock:
            if self._closed:
                raise RuntimeError("UnifiedNPURuntime is closed")
            if self._cpu is None:
                self._cpu = self._open_cpu()
            cpu = self._cpu
        return self._timed(cpu, run, None, amounts), cpu.name

    def _probe_if_due(self, backend: Any) -> None:
        """Repeat ``backend``'s known-answer probe when ``probe_every_calls`` calls or
        ``probe_interval_seconds`` have passed since the last one (called under the NPU lock)."""
        self_check = getattr(backend, "self_check", None)
        if self_check is None:
            return
        config, now = self.config, self._clock()
        due = (config.probe_every_calls is not None
               and self._calls_since_probe >= config.probe_every_calls) or \
              (config.probe_interval_seconds is not None
               and now - self._probed_at >= config.probe_interval_seconds)
        if due:
            self._calls_since_probe, self._probed_at = 0, now
            self_check()
        self._calls_since_probe += 1

    def _timed(self, backend: Any, run: Callable[[Any], Result],
               check: Callable[[Result], None] | None,
               amounts: Callable[[Result], dict[str, float]] | None) -> Result:
        started = time.perf_counter()
        result = run(backend)
        elapsed = time.perf_counter() - started
        if check is not None:
            check(result)
        with self._state_lock:
            self._metrics.setdefault(backend.name, BackendMetrics()).add(
                elapsed, amounts(result) if amounts is not None else {})
        return result

    # ---- counters and life cycle --------------------------------------------------------------

    def metrics(self) -> dict:
        with self._state_lock:
            return {
                "backend": self._active_name(),
                "reason": self._reason,
                "fallbacks": dict(self._fallbacks),
                "backends": {name: m.as_dict() for name, m in self._metrics.items()},
            }

    def reset_metrics(self) -> None:
        with self._state_lock:
            self._metrics.clear()
            self._fallbacks = {reason.value: 0 for reason in FallbackReason}

    def close(self) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            active, cpu = self._active, self._cpu
            self._active = None
        with self._npu_call_lock:
            if active is not None and active is not cpu:
                _close_quietly(active, self.op)
        if cpu is not None:
            cpu.close()


def _close_quietly(backend: Any, op: str) -> None:
    try:
        backend.close()
    except Exception:
        logger.exception("closing %s back-end %s failed", op, getattr(backend, "name", backend))
