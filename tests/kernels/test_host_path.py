"""The NPU path's host side (``npu.mel.host``) against plain NumPy statements of what it does:
reflect padding with ``np.pad``, quantisation with rint + clip, Whisper's normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npu.audio_spec import HOP_LENGTH, N_SAMPLES
from npu.mel import host

GAIN_LIMITS = (-8, 16)  # MEL_HOST_MIN/MAX_GAIN_LOG2 in kernels/mel/mel_config.h


def reference_call(audio, padding, first_frame, n_frames):
    """The kernel input of one call, built the obvious (copying) way: blocks of 160 samples,
    each after its gain exponent."""
    signal = np.pad(np.concatenate([audio.astype(np.float32), np.zeros(padding, np.float32)]),
                    200, mode="reflect")
    blocks = np.zeros((n_frames + 2) * 160, np.float32)
    piece = signal[first_frame * 160:first_frame * 160 + blocks.size]
    blocks[:piece.size] = piece
    out = []
    for block in blocks.reshape(-1, 160):
        peak = float(np.abs(block).max())
        gain = GAIN_LIMITS[1] if peak == 0 else int(np.clip(-math.frexp(peak)[1], *GAIN_LIMITS))
        out.append(gain)
        out.extend(np.clip(np.rint(block * np.float32(2.0 ** (15 + gain))), -32768, 32767))
    return np.array(out, np.int16)


rng = np.random.default_rng(7)
SIGNALS = {
    "noise": (rng.standard_normal(70_000) * 0.1).astype(np.float32),
    "shortest": (rng.standard_normal(201) * 0.3).astype(np.float32),
    "beyond_full_scale": (rng.standard_normal(20_000) * 400).astype(np.float32),
    "near_full_scale_dc": np.full(9_000, 0.99999, np.float32),
    "very_quiet": (rng.standard_normal(9_000) * 1e-7).astype(np.float32),
    "loud_then_near_silent": np.concatenate([rng.standard_normal(4_000) * 0.9,
                                             rng.standard_normal(4_000) * 1e-4]).astype(np.float32),
    "silence_then_tiny": np.concatenate([np.zeros(3_000), np.ones(500) * 1e-6]).astype(np.float32),
    "float64": rng.standard_normal(9_000) * 0.2,
    "silence": np.zeros(4_000, np.float32),
}


@pytest.mark.parametrize("name", SIGNALS)
@pytest.mark.parametrize("padding", [0, 150, N_SAMPLES])
@pytest.mark.parametrize("frames_per_call", [3000, 30])
def test_quantised_calls_equal_the_copying_reference(name, padding, frames_per_call):
    audio = SIGNALS[name]
    signal, n_frames = host.padded_signal(audio, padding)
    assert n_frames == (audio.size + padding) // HOP_LENGTH
    buffers = host.CallBuffers.for_frames(frames_per_call)
    for first in range(0, n_frames, frames_per_call):
        buffers.samples[:] = 12345  # stale data from an earlier call must be overwritten
        buffers.scratch[:] = 1.0
        host.quantise_call(signal, first, buffers.samples, buffers.scratch)
        np.testing.assert_array_equal(buffers.samples,
                                      reference_call(audio, padding, first, frames_per_call))


def test_feature_writer_is_whispers_normalisation():
    n_mels, frames = 80, 70
    log_q = rng.integers(-20 << 16, 3 << 16, (frames, n_mels)).astype(np.int32)
    log_q[5, :] = -2 ** 31  # an all-zero band's floor
    calls = [(0, 30), (30, 60), (60, 70)]
    writer = host.FeatureWriter(n_mels, frames)
    log10 = np.empty((n_mels, frames))
    for lo, hi in calls:
        writer.add_call(lo, log_q[lo:hi])
        log10[:, lo:hi] = log_q[lo:hi].T / 65536
    log10 = np.maximum(log10, -10.0)
    expected = (np.maximum(log10, log10.max() - 8.0) + 4.0) / 4.0
    features = writer.finish()
    assert features.dtype == np.float32 and features.shape == (n_mels, frames)
    np.testing.assert_allclose(features, expected, atol=1e-6, rtol=0)


def test_audio_too_short_or_malformed_is_a_clear_error():
    with pytest.raises(ValueError, match="more than 200"):
        host.padded_signal(np.zeros(200, np.float32))
    with pytest.raises(ValueError, match="padding"):
        host.padded_signal(np.zeros(1000, np.float32), -1)
    signal, n_frames = host.padded_signal(np.zeros(100, np.float32), 101)
    assert n_frames == 1 and signal.size == 601
