"""The host's share of the NPU mel path: everything around one kernel call.

Before a call: append ``padding`` zeros, reflect-pad by N_FFT/2 (``torch.stft(center=True)``),
pick a power-of-two gain for the call's samples (quiet audio is shifted up before quantising, and
the shift is undone exactly in the log domain), quantise to int16. After all calls: undo the
gain, apply Whisper's 1e-10 floor, the global max-8 clamp and (x+4)/4. The kernel itself (or its
golden model) sits between :func:`quantise_call` and :func:`normalise`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npu import audio_spec, mel_tables

_LOG10_2 = np.float32(np.log10(2.0))
_LOG_FLOOR = np.float32(np.log10(audio_spec.LOG_FLOOR))


@dataclass(frozen=True)
class CallPlan:
    """Where each kernel call reads in the padded signal."""

    n_frames: int
    frames_per_call: int

    @property
    def n_calls(self) -> int:
        return -(-self.n_frames // self.frames_per_call)


def padded_signal(audio: np.ndarray, padding: int = 0) -> tuple[np.ndarray, int]:
    """Float32 signal reflect-padded as ``torch.stft(center=True)`` does, and Whisper's frame
    count (the STFT's last frame dropped)."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono samples, got shape {audio.shape}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got {audio.dtype}")
    if padding:
        audio = np.concatenate([audio, np.zeros(padding, dtype=audio.dtype)])
    half = audio_spec.N_FFT // 2
    if audio.size <= half:
        raise ValueError(f"audio needs more than {half} samples for reflect padding, "
                         f"got {audio.size}")
    n_frames = audio.size // audio_spec.HOP_LENGTH
    return np.pad(audio.astype(np.float32, copy=False), half, mode="reflect"), n_frames


def call_samples(n_frames: int) -> int:
    """int16 samples one kernel call reads for ``n_frames`` frames."""
    return (n_frames - 1) * audio_spec.HOP_LENGTH + audio_spec.N_FFT


def quantise_call(signal: np.ndarray, first_frame: int, out: np.ndarray) -> int:
    """Write the int16 samples for the call starting at ``first_frame`` into ``out`` (zero past
    the signal's end) and return the gain exponent g used (samples were scaled by 2^g)."""
    start = first_frame * audio_spec.HOP_LENGTH
    piece = signal[start:start + out.size]
    peak = max(float(piece.max()), -float(piece.min())) if piece.size else 0.0
    gain = 0
    if peak > 0:
        config = mel_tables.read_config()
        gain = int(np.clip(-np.frexp(peak)[1], config["HOST_MIN_GAIN_LOG2"],
                           config["HOST_MAX_GAIN_LOG2"]))
    scaled = piece * np.float32(2.0 ** (15 + gain))
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    out[:piece.size] = scaled
    out[piece.size:] = 0
    return gain


def normalise(log_q: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Kernel output int16 [n_frames, n_mels] (+ per-frame gain) -> Whisper's features
    float32 [n_mels, n_frames]."""
    config = mel_tables.read_config()
    scale = np.float32(2.0 ** -config["OUT_FRAC_BITS"])
    log10 = log_q.T.astype(np.float32) * scale
    log10 -= (2 * _LOG10_2) * gains.astype(np.float32)[None, :]
    np.maximum(log10, _LOG_FLOOR, out=log10)  # also maps MEL_OUT_FLOOR (checked in mel_tables)
    np.maximum(log10, log10.max() - np.float32(audio_spec.DYNAMIC_RANGE_LOG10), out=log10)
    log10 += np.float32(4.0)
    log10 *= np.float32(0.25)
    return log10


def log_mel(audio: np.ndarray, n_mels: int, padding: int, frames_per_call: int,
            kernel, buffer: np.ndarray | None = None) -> np.ndarray:
    """The whole NPU path. ``kernel(samples_int16, n_frames) -> int16 [frames_per_call, n_mels]``
    stands for one device run (or the golden model / host library) and is given the call's
    frame count; ``buffer`` is the reusable int16 input of one call."""
    signal, n_frames = padded_signal(audio, padding)
    plan = CallPlan(n_frames, frames_per_call)
    if buffer is None:
        buffer = np.empty(call_samples(frames_per_call), dtype=np.int16)
    log_q = np.empty((n_frames, n_mels), dtype=np.int16)
    gains = np.empty(n_frames, dtype=np.int64)
    for call in range(plan.n_calls):
        first = call * frames_per_call
        count = min(frames_per_call, n_frames - first)
        gains[first:first + count] = quantise_call(signal, first, buffer)
        log_q[first:first + count] = kernel(buffer, count)[:count]
    return normalise(log_q, gains)
