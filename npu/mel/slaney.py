"""Slaney mel filters (``librosa.filters.mel(htk=False, norm='slaney')``) for Whisper's STFT.

The one implementation: the CPU back-end rounds them to float32 (as the ``mel_filters.npz``
WhisperX ships), the NPU kernel's table generator quantises them to fixed point.
"""

from __future__ import annotations

import functools

import numpy as np

from npu.audio_spec import N_FREQ_BINS, SAMPLE_RATE

_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz):
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asanyarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel):
    mel = np.asanyarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


@functools.cache
def slaney_filters(n_mels: int) -> np.ndarray:
    """Float64 ``[n_mels, 201]`` triangles with Slaney area normalisation; read-only (shared)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FREQ_BINS)
    hz_points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    weights.flags.writeable = False
    return weights
