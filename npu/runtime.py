"""``UnifiedNPURuntime``: one per process; log-mel features from the best working back-end.

Tiers are tried in order ``npu-batch`` -> ``npu-frame`` -> ``cpu``, at start-up and again when a
call fails: the failed call is retried on the next tier, so the caller still gets correct
features. Every skipped or abandoned tier counts one fallback under its reason (the fixed set in
:class:`npu.backend.FallbackReason`); each reason is logged as a warning the first time it occurs
and at debug level afterwards, never once per call.

A tier left for a reason that can pass (``run_failed``, ``bad_output``, ``load_failed``) is not
left for good: ``npu_retry_seconds`` after the failure, the next call tries the tiers from the
top again (and counts a fallback again if they still fail). Missing hardware, XRT or kernel
artifacts do not come back without a restart: such a tier is never tried again, so its reason is
counted once per process.

An NPU back-end that can prove itself (``self_check``, the known-answer probe) is probed again
while serving, every ``probe_every_calls`` calls or ``probe_interval_seconds`` seconds, before
the call that finds it due: a device that starts answering plausibly wrong is left with
``bad_output`` and that call is served by the next tier.

What the runtime is allowed to use and where it finds it is one :class:`~npu.config.FrontEndConfig`;
the constructor keeps the seed's parameters and maps them onto it (:meth:`FrontEndConfig.from_seed`),
:meth:`UnifiedNPURuntime.from_config` takes one directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np

from npu.audio_spec import HOP_LENGTH, N_FRAMES, SAMPLE_RATE
from npu.backend import (
    NPU_BATCH,
    NPU_FRAME,
    FallbackReason,
    MelBackend,
    MelBackendError,
    MelBackendFactory,
)
from npu.config import (
    DEFAULT_DEVICE_DIR,
    DEFAULT_NPU_RETRY_SECONDS,
    FrontEndConfig,
    validate_audio,
)
from npu.kernel_files import DEFAULT_KERNEL_DIR
from npu.mel.cpu import CpuMelBackend
from npu.ops import cpu as cpu_ops

logger = logging.getLogger(__name__)
TRANSIENT_REASONS = frozenset(
    {FallbackReason.RUN_FAILED, FallbackReason.BAD_OUTPUT, FallbackReason.LOAD_FAILED}
)


def _open_npu_batch(config: FrontEndConfig) -> MelBackend:
    return _npu_mel_module().open_npu_batch(config)


def _open_npu_frame(config: FrontEndConfig) -> MelBackend:
    return _npu_mel_module().open_npu_frame(config)


def _npu_mel_module():
    """The NPU back-end module, imported only when an NPU tier is tried."""
    try:
        from npu.mel import npu as npu_mel
    except ImportError as exc:
        raise MelBackendError(FallbackReason.LOAD_FAILED, f"npu.mel.npu cannot be imported: {exc}")
    return npu_mel


def default_backend_factories() -> list[tuple[str, MelBackendFactory]]:
    """The NPU tiers in order of preference (the CPU is always the last resort)."""
    return [(NPU_BATCH, _open_npu_batch), (NPU_FRAME, _open_npu_frame)]


@dataclass
class _BackendMetrics:
    calls: int = 0
    frames: int = 0
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0

    def as_dict(self) -> dict:
        x_realtime = self.audio_seconds / self.compute_seconds if self.compute_seconds > 0 else 0.0
        return {
            "calls": self.calls,
            "frames": self.frames,
            "audio_seconds": self.audio_seconds,
            "compute_seconds": self.compute_seconds,
            "x_realtime": x_realtime,
        }


class MelFeatures(NamedTuple):
    """Features and the back-end that computed them (requests are labelled by it)."""

    features: np.ndarray
    backend: str


class UnifiedNPURuntime:
    """Whisper front-end and transformer ops with NPU -> CPU fallback, counted and thread-safe.

    The seed's parameters: ``batch_size`` is the NPU batch tier's frames per kernel call
    (default: one 30 s chunk); ``enable_mel=False`` uses the CPU front-end only and never touches
    the NPU; with ``fallback_to_cpu=False`` a failure that would leave the NPU raises
    :class:`MelBackendError` naming the reason instead; ``use_batch_processor=False`` skips the
    batch tier. Beyond them: ``kernel_dir`` and ``device_dir`` (where the artifacts and the device
    nodes are), ``npu_retry_seconds`` (``None``: never) - all mapped onto one
    :class:`~npu.config.FrontEndConfig` - and, for tests and tools, ``backend_factories`` (an
    ordered list of ``(name, factory)`` replacing the NPU tiers) and ``clock``.
    """

    def __init__(
        self,
        device_id: int = 0,
        enable_mel: bool = True,
        enable_gelu: bool = True,
        enable_attention: bool = True,
        fallback_to_cpu: bool = True,
        use_batch_processor: bool = True,
        batch_size: int = N_FRAMES,
        n_mels: int = 80,
        kernel_dir: str | Path | None = None,
        backend_factories: Sequence[tuple[str, MelBackendFactory]] | None = None,
        npu_retry_seconds: float | None = DEFAULT_NPU_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        device_dir: str | Path = DEFAULT_DEVICE_DIR,
    ) -> None:
        config = FrontEndConfig.from_seed(
            enable_mel=enable_mel, fallback_to_cpu=fallback_to_cpu, n_mels=n_mels,
            kernel_dir=DEFAULT_KERNEL_DIR if kernel_dir is None else Path(kernel_dir),
            device_dir=Path(device_dir), device_id=device_id, frames_per_call=batch_size,
            use_batch_tier=use_batch_processor, npu_retry_seconds=npu_retry_seconds)
        self._start(config, enable_gelu, enable_attention, backend_factories, clock)

    @classmethod
    def from_config(
        cls,
        config: FrontEndConfig,
        *,
        enable_gelu: bool = True,
        enable_attention: bool = True,
        backend_factories: Sequence[tuple[str, MelBackendFactory]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Self:
        """The runtime for one resolved front-end configuration (how the service builds it)."""
        runtime = cls.__new__(cls)
        runtime._start(config, enable_gelu, enable_attention, backend_factories, clock)
        return runtime

    def _start(self, config: FrontEndConfig, enable_gelu: bool, enable_attention: bool,
               backend_factories: Sequence[tuple[str, MelBackendFactory]] | None,
               clock: Callable[[], float]) -> None:
        self.config = config
        self.enable_gelu = enable_gelu
        self.enable_attention = enable_attention
        self._clock = clock
        self._retry_at: float | None = None
        tiers = list(default_backend_factories() if backend_factories is None else backend_factories)
        if not config.use_batch_tier:
            tiers = [(name, factory) for name, factory in tiers if name != NPU_BATCH]
        self._tiers = tiers if config.uses_npu else []
        self._gone_for_good: set[int] = set()
        self._calls_since_probe = 0
        self._probed_at = clock()

        self._state_lock = threading.Lock()
        self._npu_call_lock = threading.Lock()
        self._metrics: dict[str, _BackendMetrics] = {}
        self._fallbacks = {reason.value: 0 for reason in FallbackReason}
        self._logged_reasons: set[str] = set()
        self._closed = False
        self._active: MelBackend | None = None
        self._active_tier = -1
        self._reason = ""
        self._cpu: CpuMelBackend | None = None
        with self._state_lock:
            self._resolve(first_tier=0, why_left=[] if config.uses_npu else ["enable_mel=False"])

    # ---- the seed's attributes, read from the configuration ------------------------------------

    @property
    def device_id(self) -> int:
        return self.config.device_id

    @property
    def enable_mel(self) -> bool:
        return self.config.uses_npu

    @property
    def fallback_to_cpu(self) -> bool:
        return self.config.falls_back_to_cpu

    @property
    def use_batch_processor(self) -> bool:
        return self.config.use_batch_tier

    @property
    def batch_size(self) -> int:
        return self.config.frames_per_call

    @property
    def n_mels(self) -> int:
        return self.config.n_mels

    @property
    def kernel_dir(self) -> Path:
        return self.config.kernel_dir

    @property
    def npu_retry_seconds(self) -> float | None:
        return self.config.npu_retry_seconds

    # ---- back-end selection -------------------------------------------------------------------

    def _resolve(
        self, first_tier: int, why_left: list[str], last_error: MelBackendError | None = None
    ) -> None:
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
            except MelBackendError as exc:
                last_error = exc
            except Exception as exc:  # a factory bug must not take the service down
                last_error = MelBackendError(FallbackReason.LOAD_FAILED, f"{type(exc).__name__}: {exc}")
            else:
                self._active, self._active_tier = backend, index
                self._reason = "; ".join(why_left + [f"{name} opened"])
                self._calls_since_probe, self._probed_at = 0, self._clock()
                return
            self._count_fallback(index, last_error)
            why_left.append(f"{name} unavailable ({last_error.reason.value}: {last_error.detail})")
        if last_error is not None and not self.fallback_to_cpu:
            self._active, self._active_tier = None, len(self._tiers)
            raise MelBackendError(last_error.reason, "; ".join(why_left) + "; fallback_to_cpu=False")
        if self._cpu is None:
            self._cpu = CpuMelBackend(self.n_mels)
        self._active, self._active_tier = self._cpu, len(self._tiers)
        self._reason = "; ".join(why_left + ["cpu front-end"]) if why_left else "cpu front-end"

    def _count_fallback(self, tier: int, error: MelBackendError) -> None:
        """Count leaving ``tier``; a tier left for a permanent reason is never tried again."""
        reason = error.reason.value
        self._fallbacks[reason] += 1
        if error.reason not in TRANSIENT_REASONS:
            self._gone_for_good.add(tier)
        elif self.npu_retry_seconds is not None:
            self._retry_at = self._clock() + self.npu_retry_seconds
        level = logging.DEBUG if reason in self._logged_reasons else logging.WARNING
        self._logged_reasons.add(reason)
        logger.log(level, "mel back-end %s left (%s): %s", self._tiers[tier][0], reason,
                   error.detail)

    def _leave(self, backend: MelBackend, error: MelBackendError) -> None:
        """A call on ``backend`` failed: count it, close it, re-resolve from the next tier."""
        with self._state_lock:
            if self._active is not backend:
                return  # another thread already moved on
            name = self._tiers[self._active_tier][0]
            self._count_fallback(self._active_tier, error)
            _close_quietly(backend)
            left = [f"{name} failed ({error.reason.value}: {error.detail})"]
            self._resolve(first_tier=self._active_tier + 1, why_left=left, last_error=error)

    # ---- public API ---------------------------------------------------------------------------

    @property
    def mel_backend_name(self) -> str:
        with self._state_lock:
            return self._active.name if self._active is not None else "none"

    @property
    def mel_backend_reason(self) -> str:
        with self._state_lock:
            return self._reason

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
            logger.info("retrying the NPU mel tiers %s s after a transient failure",
                        self.npu_retry_seconds)
            if self._active is not None and self._active is not self._cpu:
                _close_quietly(self._active)  # one device context at a time
                self._active = None
            self._resolve(first_tier=0, why_left=[f"NPU retried after {self.npu_retry_seconds} s"])

    def process_audio_to_features(self, audio: np.ndarray, padding: int = 0) -> np.ndarray:
        """Float32 ``[n_mels, n_frames]`` log-mel features, as ``whisperx.audio.log_mel_spectrogram``."""
        return self.log_mel(audio, padding).features

    def log_mel(self, audio: np.ndarray, padding: int = 0) -> MelFeatures:
        """:meth:`process_audio_to_features` and the name of the back-end that served the call."""
        samples = validate_audio(audio, padding)
        self._retry_npu_if_due()
        while True:
            with self._state_lock:
                if self._closed:
                    raise RuntimeError("UnifiedNPURuntime is closed")
                backend = self._active
                if backend is None:
                    raise MelBackendError(FallbackReason.RUN_FAILED, "no mel back-end is open")
            if backend is self._cpu:
                return MelFeatures(self._timed(backend, samples, padding), backend.name)
            with self._npu_call_lock:
                if backend is not self._active:
                    continue
                try:
                    self._probe_if_due(backend)
                    return MelFeatures(self._timed(backend, samples, padding), backend.name)
                except ValueError:
                    raise  # bad input (e.g. NaN, refused by every back-end), not a failure
                except MelBackendError as exc:
                    error = exc
                except Exception as exc:
                    error = MelBackendError(FallbackReason.RUN_FAILED, f"{type(exc).__name__}: {exc}")
                self._leave(backend, error)

    def _probe_if_due(self, backend: MelBackend) -> None:
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

    def _timed(self, backend: MelBackend, samples: np.ndarray, padding: int) -> np.ndarray:
        started = time.perf_counter()
        features = backend.log_mel(samples, padding)
        elapsed = time.perf_counter() - started
        _check_features(features, self.n_mels, (samples.size + padding) // HOP_LENGTH)
        with self._state_lock:
            metrics = self._metrics.setdefault(backend.name, _BackendMetrics())
            metrics.calls += 1
            metrics.frames += features.shape[1]
            metrics.audio_seconds += samples.size / SAMPLE_RATE
            metrics.compute_seconds += elapsed
        return features

    def gelu(self, x: np.ndarray) -> np.ndarray:
        """Exact-erf GELU (CPU; ``enable_gelu`` reserves the NPU path for a later kernel)."""
        return cpu_ops.gelu(x)

    def attention(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Scaled dot-product attention over ``[..., seq, dim]`` (CPU for now)."""
        return cpu_ops.attention(q, k, v, mask)

    def get_performance_metrics(self) -> dict:
        with self._state_lock:
            return {
                "backends": {name: m.as_dict() for name, m in self._metrics.items()},
                "fallbacks": dict(self._fallbacks),
                "mel_backend": self._active.name if self._active is not None else "none",
                "mel_backend_reason": self._reason,
            }

    def reset_metrics(self) -> None:
        """Zero the per-back-end counters and the fallback counts; the chosen back-end stays."""
        with self._state_lock:
            self._metrics.clear()
            self._fallbacks = {reason.value: 0 for reason in FallbackReason}

    def print_performance_summary(self) -> None:
        metrics = self.get_performance_metrics()
        print(f"mel back-end: {metrics['mel_backend']} ({metrics['mel_backend_reason']})")
        print(f"batch processor: {self.use_batch_processor} (batch_size={self.batch_size})")
        print(f"{'back-end':<10} {'calls':>7} {'frames':>10} {'audio s':>10} {'compute s':>10} {'x realtime':>11}")
        for name, m in metrics["backends"].items():
            print(
                f"{name:<10} {m['calls']:>7} {m['frames']:>10} {m['audio_seconds']:>10.2f} "
                f"{m['compute_seconds']:>10.4f} {m['x_realtime']:>11.1f}"
            )
        fallbacks = {reason: n for reason, n in metrics["fallbacks"].items() if n}
        print("fallbacks: " + (", ".join(f"{r}={n}" for r, n in fallbacks.items()) or "none"))

    def close(self) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            active, cpu = self._active, self._cpu
            self._active = None
        with self._npu_call_lock:
            if active is not None and active is not cpu:
                _close_quietly(active)
        if cpu is not None:
            cpu.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _check_features(features: np.ndarray, n_mels: int, n_frames: int) -> None:
    """Reject what a back-end must never return: wrong shape, non-finite or all-zero output."""
    if not isinstance(features, np.ndarray) or features.shape != (n_mels, n_frames):
        shape = getattr(features, "shape", type(features).__name__)
        raise MelBackendError(FallbackReason.BAD_OUTPUT, f"shape {shape}, expected {(n_mels, n_frames)}")
    if features.dtype != np.float32:
        raise MelBackendError(FallbackReason.BAD_OUTPUT, f"dtype {features.dtype}, expected float32")
    lowest, highest = features.min(), features.max()  # NaN propagates through both
    if not (np.isfinite(lowest) and np.isfinite(highest)):
        raise MelBackendError(FallbackReason.BAD_OUTPUT, "non-finite values")
    if lowest == 0 and highest == 0:
        raise MelBackendError(FallbackReason.BAD_OUTPUT, "all zeros")


def _close_quietly(backend: MelBackend) -> None:
    try:
        backend.close()
    except Exception:
        logger.exception("closing mel back-end %s failed", getattr(backend, "name", backend))
