"""The interfaces the runtime's back-ends implement (mel, GELU, attention), and the fixed set of
reasons for leaving one.

The runtime owns, per op, an ordered list of back-end factories (mel: ``npu-batch`` ->
``npu-frame`` -> ``cpu``; GELU and attention: ``npu`` -> ``cpu``). A factory either returns an
open back-end or raises :class:`BackendError` naming why it cannot; a back-end raises the same
error from its call when the call fails. The runtime never asks which concrete class it holds.
Back-ends subclass :class:`MelBackend` explicitly to inherit its default
:meth:`~MelBackend.log_mel_batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Protocol

import numpy as np

from npu.config import FrontEndConfig, naming_chunk

NPU_BATCH = "npu-batch"
"""The NPU kernel at a whole 30 s chunk (or the configured batch) per call."""
NPU_FRAME = "npu-frame"
"""The same kernel at the seed's small batch (30 frames) per call."""
CPU = "cpu"
"""The CPU front-end (or CPU op), always the last resort."""
NPU = "npu"
"""The GELU or attention kernel on the NPU."""
NO_BACKEND = "none"
"""What an op reports before its tiers are resolved (GELU and attention resolve at their first
call, which only the runtime encoder makes) and once the runtime is closed."""
OPS = ("gelu", "attention")
"""The transformer ops the runtime dispatches besides the mel front-end."""


class FallbackReason(str, Enum):
    """Why a back-end was skipped or left. The set is fixed: metrics and logs use these values."""

    NO_DEVICE = "no_device"
    NO_XRT = "no_xrt"
    NO_KERNEL_ARTIFACTS = "no_kernel_artifacts"
    LOAD_FAILED = "load_failed"
    RUN_FAILED = "run_failed"
    BAD_OUTPUT = "bad_output"


class BackendError(RuntimeError):
    """A back-end cannot open or cannot complete a call; ``reason`` says which way it failed."""

    def __init__(self, reason: FallbackReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


MelBackendError = BackendError
"""The mel front-end's name for :class:`BackendError`."""


class MelBackend(Protocol):
    """Turns 16 kHz mono float32 audio into Whisper's normalised log-mel features."""

    name: str
    n_mels: int

    def log_mel(self, audio: np.ndarray, padding: int = 0) -> np.ndarray:
        """Float32 ``[n_mels, n_frames]``, the contract of ``whisperx.audio.log_mel_spectrogram``.

        Raises :class:`MelBackendError` (``run_failed`` or ``bad_output``) when the call fails,
        and ``ValueError`` for audio no back-end can take (not 1-D, NaN or inf): the runtime
        passes that to the caller instead of falling back.
        """
        ...

    def log_mel_batch(self, chunks: Sequence[np.ndarray], paddings: Sequence[int]) -> np.ndarray:
        """Float32 ``[len(chunks), n_mels, n_frames]``: chunk ``i`` is ``log_mel(chunks[i],
        paddings[i])`` (each normalised by its own maximum). The runtime passes chunks that give
        the same frame count (:func:`npu.config.validate_chunks`); errors as :meth:`log_mel`,
        a ``ValueError`` naming the chunk.

        This default runs :meth:`log_mel` once per chunk (the NPU back-ends: one chunk is one
        kernel call anyway); a back-end that can share a batch's work overrides it.
        """
        features = []
        for index, (chunk, padding) in enumerate(zip(chunks, paddings)):
            with naming_chunk(index, len(chunks)):
                features.append(self.log_mel(chunk, padding))
        shapes = sorted({np.shape(chunk_features) for chunk_features in features})
        if len(shapes) != 1:
            raise BackendError(FallbackReason.BAD_OUTPUT,
                               f"the chunks came back in shapes {shapes}")
        return np.stack(features)

    def close(self) -> None:
        """Release the device, buffers and threads; idempotent."""
        ...


class SelfCheckingBackend(MelBackend, Protocol):
    """A back-end that can prove itself while serving: NPU back-ends repeat their known-answer
    probe through this, so a device that starts answering plausibly wrong is caught."""

    def self_check(self) -> None:
        """Raise :class:`MelBackendError` (``bad_output`` or ``run_failed``) when a known input
        no longer gives the known answer."""
        ...


class GeluBackend(Protocol):
    """Exact-erf GELU, elementwise, any shape; float32 out."""

    name: str

    def gelu(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class AttentionBackend(Protocol):
    """``softmax(q k^T / sqrt(d)) v`` over ``[..., seq, dim]`` arrays, no mask; float32 out.
    The NPU back-end takes the shapes :func:`npu.ops.tables.attention_kernel_takes` accepts;
    the runtime sends every other call (and every masked one) to the CPU, not counted as a
    fallback."""

    name: str

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


MelBackendFactory = Callable[[FrontEndConfig], MelBackend]
"""Opens a back-end for the process's front-end configuration, or raises
:class:`MelBackendError` naming why it cannot."""
