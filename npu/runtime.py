"""``UnifiedNPURuntime``: one per process; log-mel features, GELU and attention from the best
working back-end of each.

The mel front-end's tiers are ``npu-batch`` -> ``npu-frame`` -> ``cpu``, resolved at start-up;
GELU's and attention's are ``npu`` -> ``cpu``, resolved at their first call. All three go
through the one fallback mechanism, :class:`npu.tiers.TieredOp`: the same fixed reasons, the
same counting (a permanent reason once per process, a transient one retried after
``npu_retry_seconds``), the same repeated known-answer probe.

What the runtime is allowed to use and where it finds it is one :class:`~npu.config.FrontEndConfig`;
the constructor keeps the seed's parameters and maps them onto it (:meth:`FrontEndConfig.from_seed`),
:meth:`UnifiedNPURuntime.from_config` takes one directly. ``enable_gelu`` / ``enable_attention``
allow those ops on the NPU (the ``cpu`` mode never touches the NPU for any op).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np

from npu.audio_spec import N_FRAMES, SAMPLE_RATE
from npu.backend import (
    NPU,
    NPU_BATCH,
    NPU_FRAME,
    BackendError,
    FallbackReason,
    MelBackend,
    MelBackendError,
    MelBackendFactory,
)
from npu.config import (
    DEFAULT_DEVICE_DIR,
    DEFAULT_NPU_RETRY_SECONDS,
    FrontEndConfig,
    validate_chunks,
)
from npu.kernel_files import DEFAULT_KERNEL_DIR
from npu.mel.cpu import CpuMelBackend
from npu.ops import tables as op_tables
from npu.ops.cpu import CpuAttentionBackend, CpuGeluBackend
from npu.tiers import TieredOp


def _open_npu_batch(config: FrontEndConfig) -> MelBackend:
    return _npu_module("npu.mel.npu").open_npu_batch(config)


def _open_npu_frame(config: FrontEndConfig) -> MelBackend:
    return _npu_module("npu.mel.npu").open_npu_frame(config)


def _open_npu_gelu(config: FrontEndConfig):
    return _npu_module("npu.ops.npu").open_npu_gelu(config)


def _open_npu_attention(config: FrontEndConfig):
    return _npu_module("npu.ops.npu").open_npu_attention(config)


def _npu_module(name: str):
    """An NPU back-end module, imported only when an NPU tier is tried."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendError(FallbackReason.LOAD_FAILED, f"{name} cannot be imported: {exc}")


def default_backend_factories() -> list[tuple[str, MelBackendFactory]]:
    """The NPU tiers of the mel front-end in order of preference (the CPU is the last resort)."""
    return [(NPU_BATCH, _open_npu_batch), (NPU_FRAME, _open_npu_frame)]


def default_op_factories() -> dict[str, list[tuple[str, Callable]]]:
    """The NPU tiers of GELU and attention (the CPU is the last resort)."""
    return {"gelu": [(NPU, _open_npu_gelu)], "attention": [(NPU, _open_npu_attention)]}


class MelFeatures(NamedTuple):
    """Features (``[n_mels, n_frames]`` from ``log_mel``, ``[chunks, n_mels, n_frames]`` from
    ``log_mel_batch``) and the back-end that computed them (requests are labelled by it)."""

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
        op_factories: dict[str, Sequence[tuple[str, Callable]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Self:
        """The runtime for one resolved front-end configuration (how the service builds it);
        ``op_factories`` replaces the NPU tiers of ``gelu`` / ``attention`` (tests, tools)."""
        runtime = cls.__new__(cls)
        runtime._start(config, enable_gelu, enable_attention, backend_factories, clock,
                       op_factories)
        return runtime

    def _start(self, config: FrontEndConfig, enable_gelu: bool, enable_attention: bool,
               backend_factories: Sequence[tuple[str, MelBackendFactory]] | None,
               clock: Callable[[], float],
               op_factories: dict[str, Sequence[tuple[str, Callable]]] | None = None) -> None:
        self.config = config
        self.enable_gelu = enable_gelu
        self.enable_attention = enable_attention
        tiers = list(default_backend_factories() if backend_factories is None else backend_factories)
        if not config.use_batch_tier:
            tiers = [(name, factory) for name, factory in tiers if name != NPU_BATCH]
        self._mel = TieredOp("mel", config, tiers, lambda: CpuMelBackend(config.n_mels),
                             npu_allowed=config.uses_npu, disabled_reason="enable_mel=False",
                             cpu_label="cpu front-end", clock=clock)
        op_tiers = {**default_op_factories(), **(op_factories or {})}
        enabled = {"gelu": enable_gelu, "attention": enable_attention}
        cpu_backends = {"gelu": CpuGeluBackend, "attention": CpuAttentionBackend}
        self._ops = {
            op: TieredOp(op, config, op_tiers[op], cpu_backends[op],
                         npu_allowed=enabled[op] and config.uses_npu,
                         disabled_reason=f"enable_{op}=False" if not enabled[op]
                         else f"mel mode {config.mode.value}", clock=clock, eager=False)
            for op in ("gelu", "attention")}

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

    # ---- public API ---------------------------------------------------------------------------

    @property
    def mel_backend_name(self) -> str:
        return self._mel.backend_name

    @property
    def mel_backend_reason(self) -> str:
        return self._mel.reason

    def process_audio_to_features(self, audio: np.ndarray, padding: int = 0) -> np.ndarray:
        """Float32 ``[n_mels, n_frames]`` log-mel features, as ``whisperx.audio.log_mel_spectrogram``."""
        return self.log_mel(audio, padding).features

    def log_mel(self, audio: np.ndarray, padding: int = 0) -> MelFeatures:
        """:meth:`process_audio_to_features` and the name of the back-end that served the call."""
        features, name = self.log_mel_batch([audio], [padding])
        return MelFeatures(features[0], name)

    def log_mel_batch(self, chunks: Sequence[np.ndarray], paddings: Sequence[int]) -> MelFeatures:
        """Float32 ``[len(chunks), n_mels, n_frames]``, chunk ``i`` exactly :meth:`log_mel` of
        ``chunks[i]`` with ``paddings[i]``, in one back-end call (counted as one call, with every
        chunk's frames and audio seconds). The chunks must give the same number of frames (the
        engine pads each to 30 s); bad audio is a ``ValueError`` naming the chunk."""
        samples, n_frames = validate_chunks(chunks, paddings)
        shape = (len(samples), self.n_mels, n_frames)
        features, name = self._mel.call(
            lambda backend: backend.log_mel_batch(samples, paddings),
            check=lambda features: _check_features(features, shape),
            amounts=lambda features: {
                "frames": len(samples) * n_frames,
                "audio_seconds": sum(chunk.size for chunk in samples) / SAMPLE_RATE})
        return MelFeatures(features, name)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        """Exact-erf GELU of ``x`` (any shape; float32 out on the NPU, the input's float dtype on
        the CPU). On the NPU it is computed in bf16 (error: ``kernels/README.md``)."""
        x = np.asarray(x)
        out, _ = self._ops["gelu"].call(
            lambda backend: backend.gelu(x),
            check=lambda out: _check_op_output(out, x.shape, "gelu"),
            amounts=lambda out: {"elements": x.size})
        return out

    def attention(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Scaled dot-product attention over ``[..., seq, dim]``. On the NPU (bf16 in and out,
        float32 accumulation) for the shapes its design takes and no mask; else on the CPU."""
        tier = self._ops["attention"]
        amounts = {"heads": int(np.prod(np.shape(q)[:-2], dtype=np.int64))}
        if mask is not None or not op_tables.attention_kernel_takes(
                np.shape(q), np.shape(k), np.shape(v)):
            out, _ = tier.call_cpu(lambda backend: backend.attention(q, k, v, mask),
                                   amounts=lambda out: amounts)
            return out
        out, _ = tier.call(lambda backend: backend.attention(q, k, v),
                           check=lambda out: _check_op_output(out, np.shape(q), "attention"),
                           amounts=lambda out: amounts)
        return out

    def get_performance_metrics(self) -> dict:
        mel = self._mel.metrics()
        return {
            "backends": mel["backends"],
            "fallbacks": mel["fallbacks"],
            "mel_backend": mel["backend"],
            "mel_backend_reason": mel["reason"],
            "ops": {op: tier.metrics() for op, tier in self._ops.items()},
        }

    def reset_metrics(self) -> None:
        """Zero the per-back-end counters and the fallback counts; the chosen back-ends stay."""
        for tier in (self._mel, *self._ops.values()):
            tier.reset_metrics()

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
        for op, m in metrics["ops"].items():
            calls = ", ".join(f"{name}={b['calls']}" for name, b in m["backends"].items()) or "none"
            print(f"{op}: {m['backend']} ({m['reason']}); calls {calls}")

    def close(self) -> None:
        for tier in (*self._ops.values(), self._mel):
            tier.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _check_features(features: np.ndarray, shape: tuple[int, int, int]) -> None:
    """Reject what a back-end must never return for a batch of ``shape`` ``(chunks, n_mels,
    n_frames)``: wrong shape or type, non-finite values, or a chunk of all zeros."""
    if not isinstance(features, np.ndarray) or features.shape != shape:
        got = getattr(features, "shape", type(features).__name__)
        raise BackendError(FallbackReason.BAD_OUTPUT, f"shape {got}, expected {shape}")
    if features.dtype != np.float32:
        raise MelBackendError(FallbackReason.BAD_OUTPUT, f"dtype {features.dtype}, expected float32")
    rows = features.reshape(shape[0], -1)
    lowest, highest = rows.min(axis=1), rows.max(axis=1)  # NaN propagates through both
    if not (np.isfinite(lowest).all() and np.isfinite(highest).all()):
        raise MelBackendError(FallbackReason.BAD_OUTPUT, "non-finite values")
    zero = np.flatnonzero((lowest == 0) & (highest == 0))
    if zero.size:
        raise MelBackendError(FallbackReason.BAD_OUTPUT, f"all zeros (chunk {zero[0]})")


def _check_op_output(out: np.ndarray, shape: tuple, op: str) -> None:
    """Reject an op result of the wrong shape or type (values are the kernels' probes' job)."""
    if not isinstance(out, np.ndarray) or out.shape != tuple(shape):
        got = getattr(out, "shape", type(out).__name__)
        raise BackendError(FallbackReason.BAD_OUTPUT, f"{op}: shape {got}, expected {tuple(shape)}")
    if not np.issubdtype(out.dtype, np.floating):
        raise BackendError(FallbackReason.BAD_OUTPUT, f"{op}: dtype {out.dtype}, expected float")
