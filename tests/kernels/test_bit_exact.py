"""The host-compiled kernel (ctypes) equals the golden model bit for bit, and the golden model's
tables follow Whisper's definitions."""

from __future__ import annotations

import numpy as np
import pytest

from app.cli.kernels import synthetic_signals
from npu.audio_spec import N_FFT, SAMPLE_RATE
from npu.kernel_files import MEL_CONFIG_HEADER
from npu.kernel_lib import host_kernel
from npu.mel import golden, host, tables
from npu.mel.slaney import slaney_filters

FRAMES = 2000


@pytest.mark.parametrize("n_mels", [80, 128])
def test_host_kernel_equals_golden_on_edge_cases(n_mels):
    kernel = host_kernel(n_mels)
    for name, samples in synthetic_signals(FRAMES).items():
        expected = golden.kernel_call(samples, FRAMES, n_mels)
        actual = kernel(samples, FRAMES)
        mismatched = np.argwhere(actual != expected)
        assert mismatched.size == 0, f"{name}: {len(mismatched)} values differ, first {mismatched[:3]}"


def speech_calls(audio: np.ndarray, frames_per_call: int = 3000):
    """The int16 inputs the NPU path sends for one file, as (input, n_frames) per call."""
    signal, n_frames = host.padded_signal(audio)
    for first in range(0, n_frames, frames_per_call):
        count = min(frames_per_call, n_frames - first)
        buffer = np.empty(host.call_samples(count), np.int16)
        host.quantise_call(signal, first, buffer)
        yield buffer, count


def test_host_kernel_equals_golden_on_speech(speech):
    kernel = host_kernel(80)
    frames = 0
    for name, audio in speech.items():
        for samples, count in speech_calls(audio):
            np.testing.assert_array_equal(kernel(samples, count),
                                          golden.kernel_call(samples, count, 80), err_msg=name)
            frames += count
    total = frames + 2 * len(synthetic_signals(FRAMES)) * FRAMES
    assert total >= 20_000, f"only {total} frames compared"


@pytest.mark.parametrize("n_mels", [80, 128])
def test_filters_follow_librosa_and_whisper(n_mels):
    import os

    import librosa
    import whisperx.audio

    ours = slaney_filters(n_mels)
    np.testing.assert_allclose(ours,
                               librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels),
                               rtol=1e-5, atol=1e-9)
    assets = os.path.join(os.path.dirname(whisperx.audio.__file__), "assets", "mel_filters.npz")
    with np.load(assets) as stored:
        np.testing.assert_allclose(ours, stored[f"mel_{n_mels}"], rtol=1e-5, atol=1e-8)


def test_window_is_torch_periodic_hann():
    import torch

    config = tables.read_config()
    expected = torch.hann_window(N_FFT, dtype=torch.float64).numpy() * 2 ** config["WINDOW_FRAC_BITS"]
    assert np.abs(tables.hann_window(config) - expected).max() <= 0.5


def test_header_disagreeing_with_audio_spec_is_refused(tmp_path):
    header = tmp_path / "mel_config.h"
    header.write_text(MEL_CONFIG_HEADER.read_text().replace(
        "#define MEL_N_FFT 400", "#define MEL_N_FFT 512"))
    with pytest.raises(tables.MelConfigError, match="MEL_N_FFT"):
        tables.read_config(header)


def test_bit_length_matches_python():
    values = np.array([0, 1, 2, 3, 2**40 - 1, 2**40, 2**62 + 5, 2**63 - 1], dtype=np.int64)
    assert golden.bit_length(values).tolist() == [int(v).bit_length() for v in values]


@pytest.mark.parametrize("line, replacement", [
    ("#define MEL_SPECTRUM_BITS 30", "#define MEL_SPECTRUM_BITS 31"),
    ("#define MEL_POWER_SCALE_LOG2 92", "#define MEL_POWER_SCALE_LOG2 44"),
])
def test_header_breaking_an_overflow_bound_is_refused(tmp_path, line, replacement):
    header = tmp_path / "mel_config.h"
    text = MEL_CONFIG_HEADER.read_text()
    assert line in text
    header.write_text(text.replace(line, replacement))
    with pytest.raises(tables.MelConfigError, match=replacement.split()[1]):
        tables.read_config(header)


def test_band_sums_that_could_overflow_are_refused():
    config = dict(tables.read_config(), POWER_BITS=40)
    with pytest.raises(tables.MelConfigError, match="band sum"):
        tables.sparse_filters(80, config)
