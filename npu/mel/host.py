"""The host's share of the NPU mel path: everything around one kernel call.

Before a call: append ``padding`` zeros, reflect-pad by N_FFT/2 (``torch.stft(center=True)``),
and quantise to int16 in blocks of HOP samples, each with its own power-of-two gain (a quiet
block is shifted up before quantising, so a near-silent frame of a loud chunk keeps its bits; the
kernel aligns the blocks of a frame and undoes the gains exactly in the log domain). After each
call: Whisper's 1e-10 floor, the global max-8 clamp and (x+4)/4. The kernel itself (or its
golden model) sits between :func:`quantise_call` and :class:`FeatureWriter`.

This is the CPU work the NPU path cannot hand to the device, so it is written to touch each
sample few times: the padded signal is never built (its reflected edges and zero padding are
views and counts), each call's samples are copied once into a reused float32 buffer and read
once more for their block peaks, scaled, rounded and clipped straight into the int16 input
buffer (one compiled loop), and each call's output is scaled, offset and transposed into the
features in one compiled pass, with one clamping pass at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np

from npu import audio_spec
from npu.mel import tables

_HALF = audio_spec.N_FFT // 2
_HOP = audio_spec.HOP_LENGTH
_LOG_FLOOR = math.log10(audio_spec.LOG_FLOOR)


@dataclass(frozen=True)
class _HostConstants:
    min_gain: int
    max_gain: int
    out_scale: float  # kernel output unit in log10


@cache
def _constants() -> _HostConstants:
    config = tables.read_config()
    return _HostConstants(config["HOST_MIN_GAIN_LOG2"], config["HOST_MAX_GAIN_LOG2"],
                          2.0 ** -config["OUT_FRAC_BITS"])


@dataclass(frozen=True)
class CallPlan:
    """Where each kernel call reads in the padded signal."""

    n_frames: int
    frames_per_call: int

    @property
    def n_calls(self) -> int:
        return -(-self.n_frames // self.frames_per_call)


class PaddedSignal:
    """The float32 signal ``torch.stft(center=True)`` sees - audio, ``padding`` zeros, reflected
    by N_FFT/2 at both ends - held as pieces (views of the audio, reversed views for the edges,
    counts of zeros) so that it is never copied."""

    def __init__(self, audio: np.ndarray, padding: int) -> None:
        self.size = audio.size + padding + 2 * _HALF
        total = audio.size + padding
        pieces = (_x_range(audio, 1, _HALF + 1, reverse=True)
                  + _x_range(audio, 0, total, reverse=False)
                  + _x_range(audio, total - _HALF - 1, total - 1, reverse=True))
        self._pieces: list[tuple[int, np.ndarray | int]] = []
        offset = 0
        for piece in pieces:
            length = piece if isinstance(piece, int) else piece.size
            if length:
                self._pieces.append((offset, piece))
                offset += length
        assert offset == self.size

    def window(self, start: int, length: int) -> list[tuple[int, np.ndarray | int]]:
        """Samples ``[start, start + length)`` as ``(offset in window, view | zero count)``;
        zeros past the signal's end."""
        parts: list[tuple[int, np.ndarray | int]] = []
        stop = start + length
        for offset, piece in self._pieces:
            size = piece if isinstance(piece, int) else piece.size
            lo, hi = max(start, offset), min(stop, offset + size)
            if lo < hi:
                part = hi - lo if isinstance(piece, int) else piece[lo - offset:hi - offset]
                parts.append((lo - start, part))
        tail = max(start, self.size)
        if tail < stop:
            parts.append((tail - start, stop - tail))
        return parts


def _x_range(audio: np.ndarray, lo: int, hi: int, reverse: bool) -> list[np.ndarray | int]:
    """``x[lo:hi]`` of x = audio followed by zeros, as [view of audio, zero count], reversed
    (order and view) if asked."""
    n = audio.size
    parts: list[np.ndarray | int] = []
    if lo < n:
        parts.append(audio[lo:min(hi, n)])
    if hi > max(lo, n):
        parts.append(hi - max(lo, n))
    if reverse:
        parts = [p[::-1] if isinstance(p, np.ndarray) else p for p in reversed(parts)]
    return parts


def padded_signal(audio: np.ndarray, padding: int = 0) -> tuple[PaddedSignal, int]:
    """The reflect-padded signal (see :class:`PaddedSignal`) and Whisper's frame count (the
    STFT's last frame dropped)."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono samples, got shape {audio.shape}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got {audio.dtype}")
    total = audio.size + padding
    if total <= _HALF:
        raise ValueError(f"audio needs more than {_HALF} samples for reflect padding, got {total}")
    signal = PaddedSignal(audio.astype(np.float32, copy=False), padding)
    return signal, total // audio_spec.HOP_LENGTH


def call_samples(n_frames: int) -> int:
    """int16 values one kernel call reads for ``n_frames`` frames: ``n_frames + 2`` blocks, each
    a gain exponent and HOP samples (``kernels/mel/mel_config.h``)."""
    return tables.input_blocks(n_frames) * tables.block_words(tables.read_config())


def kernel_input(samples: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """The kernel's input layout from int16 ``samples`` (a whole number of HOP blocks) and one
    gain exponent per block: ``[g_0, block 0, g_1, block 1, ...]``."""
    blocks = np.asarray(samples, np.int16).reshape(-1, _HOP)
    if len(gains) != blocks.shape[0]:
        raise ValueError(f"need one gain per block of {_HOP} samples: {blocks.shape[0]}, "
                         f"got {len(gains)}")
    return np.column_stack([np.asarray(gains, np.int16), blocks]).reshape(-1)


@numba.njit(nogil=True, cache=True)
def _quantise_blocks(samples, min_gain, max_gain, out):  # pragma: no cover - compiled
    """Per block of HOP samples: its gain exponent g, the largest power of two keeping the
    block's peak below full scale, clamped (``max_gain`` for a silent block, so that it does not
    lower the gain its frames are aligned to), then ``rint(clip(x * 2^(15 + g), -32768, 32767))``
    (an exact float32 product, rounding half to even as ``np.rint``), into ``out``.

    The peak is taken on the float32 bit patterns with the sign cleared (ordered as the
    magnitudes, NaN and inf above every finite value; integer max vectorises where float max
    does not), and g is 126 minus its exponent field (= -frexp(peak)[1]). Returns False for a
    non-finite sample."""
    hop = _HOP
    bits = samples.view(np.int32)
    for block in range(samples.shape[0] // hop):
        start = block * hop
        block_bits = bits[start:start + hop]  # a view: indexing it from 0 vectorises
        peak = np.int32(0)
        for i in range(hop):
            peak = max(peak, block_bits[i] & np.int32(0x7FFFFFFF))
        if peak >= 0x7F800000:
            return False
        gain = max_gain
        if peak > 0:
            gain = min(max(126 - (peak >> 23), min_gain), max_gain)
        scale = np.float32(2.0 ** (15 + gain))
        base = block * (hop + 1)
        out[base] = gain
        part = samples[start:start + hop]
        dest = out[base + 1:base + 1 + hop]
        for i in range(hop):
            x = part[i] * scale
            x = min(np.float32(32767.0), x)
            x = max(np.float32(-32768.0), x)
            dest[i] = np.int16(np.rint(x))
    return True


def quantise_call(signal: PaddedSignal, first_frame: int, out: np.ndarray,
                  scratch: np.ndarray | None = None) -> None:
    """Write the kernel input for the call starting at ``first_frame`` into ``out``: each block
    of HOP samples of the padded signal (zero past its end) after its own gain exponent
    (:func:`_quantise_blocks`). ``scratch`` (float32, the call's sample count) is reused if
    given. Non-finite audio is refused in the same pass."""
    size = out.size // tables.block_words(tables.read_config()) * _HOP
    if scratch is None or scratch.size != size:
        scratch = np.empty(size, np.float32)
    for offset, part in signal.window(first_frame * audio_spec.HOP_LENGTH, size):
        if isinstance(part, int):
            scratch[offset:offset + part] = 0
        else:
            scratch[offset:offset + part.size] = part
    limits = _constants()
    if not _quantise_blocks(scratch, limits.min_gain, limits.max_gain, out):
        raise ValueError("audio must be finite: it contains NaN or inf")


@numba.njit(nogil=True, cache=True)
def _write_call(log_q, scale, offset, features):  # pragma: no cover - compiled
    """``features[m, f] = log_q[f, m] * scale + offset`` (a float32 multiply, then a float32
    add, as NumPy does them): the transpose and both operations in one pass."""
    for f in range(log_q.shape[0]):
        for m in range(log_q.shape[1]):
            features[m, f] = np.float32(log_q[f, m]) * scale + offset


class FeatureWriter:
    """Kernel output, call by call, into Whisper's features float32 ``[n_mels, n_frames]``.

    Per call the int32 log10 values (Q OUT_FRAC_BITS; the kernel has undone the block gains)
    become ``x/4 + 1``, i.e. Whisper's ``(log10 + 4) / 4``; :meth:`finish` applies the 1e-10
    floor and the chunk's max-8 clamp in that same scale in one pass (the kernel's
    MEL_OUT_FLOOR lands below the floor: checked in npu/mel/tables.py).
    """

    def __init__(self, n_mels: int, n_frames: int) -> None:
        self.features = np.empty((n_mels, n_frames), dtype=np.float32)
        self._peak_log10 = _LOG_FLOOR
        self._scale = np.float32(_constants().out_scale / 4)

    def add_call(self, first_frame: int, log_q: np.ndarray) -> None:
        """``log_q``: int32 ``[count, n_mels]`` for frames ``first_frame ...``."""
        view = self.features[:, first_frame:first_frame + log_q.shape[0]]
        _write_call(log_q, self._scale, np.float32(1.0), view)
        self._peak_log10 = max(self._peak_log10, int(log_q.max()) * _constants().out_scale)

    def finish(self) -> np.ndarray:
        lowest = max(_LOG_FLOOR, self._peak_log10 - audio_spec.DYNAMIC_RANGE_LOG10)
        np.maximum(self.features, np.float32((lowest + 4.0) / 4.0), out=self.features)
        return self.features


@dataclass
class CallBuffers:
    """The reusable buffers of one call size: the int16 input the kernel reads and the float32
    samples it is quantised from."""

    samples: np.ndarray
    scratch: np.ndarray

    @classmethod
    def for_frames(cls, frames_per_call: int) -> CallBuffers:
        samples = np.zeros(call_samples(frames_per_call), dtype=np.int16)
        return cls(samples, np.zeros(tables.input_blocks(frames_per_call) * _HOP,
                                     dtype=np.float32))


def log_mel(audio: np.ndarray, n_mels: int, padding: int, frames_per_call: int,
            kernel, buffers: CallBuffers | None = None) -> np.ndarray:
    """The whole NPU path. ``kernel(samples_int16, n_frames) -> int32 [frames_per_call, n_mels]``
    stands for one device run (or the golden model / host library) and is given the call's
    frame count; ``buffers`` is the reusable buffer of one call."""
    signal, n_frames = padded_signal(audio, padding)
    plan = CallPlan(n_frames, frames_per_call)
    if buffers is None:
        buffers = CallBuffers.for_frames(frames_per_call)
    writer = FeatureWriter(n_mels, n_frames)
    for call in range(plan.n_calls):
        first = call * frames_per_call
        count = min(frames_per_call, n_frames - first)
        quantise_call(signal, first, buffers.samples, buffers.scratch)
        writer.add_call(first, kernel(buffers.samples, count)[:count])
    return writer.finish()
