"""The front-end configuration: which mel back-ends the runtime may use, where it finds them, and
what it does when one fails. Resolved once (the service maps its settings onto it in
``app/service.py``; ``UnifiedNPURuntime`` maps the seed's constructor parameters onto it in
:meth:`FrontEndConfig.from_seed`) and handed, unchanged, to every back-end factory.

The checks every back-end shares (mel band count, audio shape and padding) live here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from npu.audio_spec import HOP_LENGTH, N_FRAMES, N_SAMPLES, REFLECT_PAD, SUPPORTED_N_MELS
from npu.kernel_files import DEFAULT_KERNEL_DIR

DEFAULT_DEVICE_DIR = Path("/dev/accel")
"""Where the amdxdna driver creates the NPU's device nodes (``accel<N>``)."""

DEFAULT_NPU_RETRY_SECONDS = 300.0
DEFAULT_PROBE_EVERY_CALLS = 100
DEFAULT_PROBE_INTERVAL_SECONDS = 600.0


class MelMode(StrEnum):
    """``auto`` tries the NPU and falls back to the CPU; ``npu`` refuses to run without the NPU;
    ``cpu`` never touches the NPU."""

    AUTO = "auto"
    NPU = "npu"
    CPU = "cpu"


@dataclass(frozen=True)
class FrontEndConfig:
    """Everything that decides the mel front-end of a process."""

    mode: MelMode = MelMode.AUTO
    n_mels: int = 80
    kernel_dir: Path = DEFAULT_KERNEL_DIR
    """Built kernel artifacts (xclbins and instruction streams)."""
    device_dir: Path = DEFAULT_DEVICE_DIR
    device_id: int = 0
    frames_per_call: int = N_FRAMES
    """Frames per kernel run on the ``npu-batch`` tier (3000 = one 30 s chunk)."""
    use_batch_tier: bool = True
    """Whether ``npu-batch`` is tried before ``npu-frame``."""
    npu_retry_seconds: float | None = DEFAULT_NPU_RETRY_SECONDS
    """After a transient NPU failure, how long the CPU serves before the NPU is tried again
    (``None``: never)."""
    probe_every_calls: int | None = DEFAULT_PROBE_EVERY_CALLS
    """Repeat the NPU back-end's known-answer probe after this many calls (``None``: never)."""
    probe_interval_seconds: float | None = DEFAULT_PROBE_INTERVAL_SECONDS
    """...or when this long has passed since the last probe (``None``: never)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", MelMode(self.mode))
        object.__setattr__(self, "kernel_dir", Path(self.kernel_dir))
        object.__setattr__(self, "device_dir", Path(self.device_dir))
        check_n_mels(self.n_mels)
        if self.frames_per_call < 1:
            raise ValueError(f"frames_per_call must be >= 1, got {self.frames_per_call!r}")
        for name in ("npu_retry_seconds", "probe_interval_seconds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value!r}")
        if self.probe_every_calls is not None and self.probe_every_calls < 1:
            raise ValueError(f"probe_every_calls must be >= 1 or None, "
                             f"got {self.probe_every_calls!r}")

    @classmethod
    def from_seed(cls, *, enable_mel: bool, fallback_to_cpu: bool, **fields) -> FrontEndConfig:
        """The seed's two booleans as a mode: ``enable_mel=False`` is ``cpu`` whatever
        ``fallback_to_cpu`` says; otherwise ``fallback_to_cpu`` chooses ``auto`` or ``npu``."""
        if not enable_mel:
            mode = MelMode.CPU
        else:
            mode = MelMode.AUTO if fallback_to_cpu else MelMode.NPU
        return cls(mode=mode, **fields)

    @property
    def uses_npu(self) -> bool:
        return self.mode is not MelMode.CPU

    @property
    def falls_back_to_cpu(self) -> bool:
        return self.mode is not MelMode.NPU

    def device_node(self) -> Path:
        """``<device_dir>/accel<id>``: the node the amdxdna driver creates for NPU ``id``."""
        return self.device_dir / f"accel{self.device_id}"


def check_n_mels(n_mels: int) -> int:
    if n_mels not in SUPPORTED_N_MELS:
        raise ValueError(f"n_mels must be one of {SUPPORTED_N_MELS}, got {n_mels!r}")
    return n_mels


def validate_audio(audio: np.ndarray, padding: int) -> np.ndarray:
    """1-D samples as float32 (no copy when already so); a clear ValueError for bad input."""
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise ValueError(f"audio must be 1-D mono samples, got shape {samples.shape}")
    if not (np.issubdtype(samples.dtype, np.floating) or np.issubdtype(samples.dtype, np.integer)):
        raise ValueError(f"audio must be real numbers, got dtype {samples.dtype}")
    total = samples.size + int(padding)
    if total <= REFLECT_PAD:
        raise ValueError(
            f"audio plus padding must exceed {REFLECT_PAD} samples for the reflect padding "
            f"Whisper applies, got {samples.size} + {padding}"
        )
    return samples.astype(np.float32, copy=False)


@contextlib.contextmanager
def naming_chunk(index: int, count: int) -> Iterator[None]:
    """A ``ValueError`` raised inside names chunk ``index`` when it is one of several, so the
    caller of a batch learns which chunk was bad."""
    try:
        yield
    except ValueError as error:
        if count == 1:
            raise
        raise ValueError(f"chunk {index} of {count}: {error}") from error


def validate_chunks(chunks: Sequence[np.ndarray],
                    paddings: Sequence[int]) -> tuple[list[np.ndarray], int]:
    """:func:`validate_audio` of each chunk with its padding, and the frame count they share.

    A batch is one ``[B, n_mels, n_frames]`` array, so its chunks must give the same number of
    frames (the engine pads each to 30 s); a ``ValueError`` names the bad chunk."""
    if len(chunks) != len(paddings):
        raise ValueError(f"{len(chunks)} chunks but {len(paddings)} paddings")
    if not len(chunks):
        raise ValueError("a batch needs at least one chunk")
    samples = []
    for index, (chunk, padding) in enumerate(zip(chunks, paddings)):
        with naming_chunk(index, len(chunks)):
            samples.append(validate_audio(chunk, padding))
    frames = [(s.size + int(p)) // HOP_LENGTH for s, p in zip(samples, paddings)]
    if len(set(frames)) != 1:
        raise ValueError(f"the chunks of a batch must give the same number of frames, got {frames}")
    return samples, frames[0]


def whisper_windows(chunks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """Each chunk as WhisperX's pipeline feeds it to the model: cut to 30 s, float32 and
    contiguous, with the padding that fills it to 30 s (``N_SAMPLES``)."""
    windows = [np.ascontiguousarray(chunk[:N_SAMPLES], dtype=np.float32) for chunk in chunks]
    return windows, [N_SAMPLES - window.shape[0] for window in windows]
