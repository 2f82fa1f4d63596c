"""The NPU path (host + kernel arithmetic) against WhisperX's float features on real speech."""

from __future__ import annotations

import numpy as np
import pytest
import whisperx.audio

from npu.audio_spec import SAMPLE_RATE
from npu.kernel_lib import host_kernel
from npu.mel import host


@pytest.mark.parametrize("n_mels", [80, 128])
def test_accuracy_against_whisperx(speech, n_mels):
    kernel = host_kernel(n_mels)
    errors = []
    for audio in speech.values():
        reference = whisperx.audio.log_mel_spectrogram(audio, n_mels,
                                                       padding=whisperx.audio.N_SAMPLES).numpy()
        ours = host.log_mel(audio, n_mels, whisperx.audio.N_SAMPLES, 3000, kernel)
        assert ours.shape == reference.shape
        errors.append(np.abs(ours - reference).ravel())
    error = np.concatenate(errors)
    summary = (error.mean(), np.quantile(error, 0.999), error.max())
    print(f"n_mels={n_mels}: mean {summary[0]:.6f} p99.9 {summary[1]:.6f} max {summary[2]:.6f}")
    assert summary[0] <= 0.001 and summary[1] <= 0.01 and summary[2] <= 0.05, summary


def test_clipped_input_is_scaled_down_not_clipped():
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    audio = (1.7 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    reference = whisperx.audio.log_mel_spectrogram(audio, 80).numpy()
    ours = host.log_mel(audio, 80, 0, 3000, host_kernel(80))
    assert np.abs(ours - reference).max() <= 0.05


def test_digital_silence_matches_whisper():
    audio = np.zeros(48_000, np.float32)
    reference = whisperx.audio.log_mel_spectrogram(audio, 80).numpy()
    np.testing.assert_array_equal(host.log_mel(audio, 80, 0, 3000, host_kernel(80)), reference)


def test_npu_path_matches_cpu_path_on_int16_speech():
    """On 16-bit speech (decoded as ``whisperx.audio.load_audio`` does) the int16 input loses
    nothing, so this is the kernel's own error: block floating point per frame and per band
    keeps bands 80 dB under a frame's strongest (the clamp's range) within float32 noise of
    the CPU path (Q15 window and twiddles with one shift per frame were 9.2e-3 away)."""
    from npu.mel.cpu import log_mel_spectrogram
    from tests.speech import decode_16k_mono, speech_files

    kernel = host_kernel(80)
    errors = []
    for path in speech_files():
        audio = decode_16k_mono(path)
        padding = whisperx.audio.N_SAMPLES - audio.size % whisperx.audio.N_SAMPLES
        cpu = log_mel_spectrogram(audio, 80, padding)
        ours = host.log_mel(audio, 80, padding, 3000, kernel)
        errors.append(np.abs(ours - cpu).ravel())
    error = np.concatenate(errors)
    print(f"NPU path vs CPU path: mean {error.mean():.2e} max {error.max():.2e}")
    assert error.mean() <= 2e-6 and error.max() <= 1e-4, (error.mean(), error.max())


def test_near_silent_float_audio_after_loud_audio_keeps_its_bits():
    """Float audio whose second second is 70 dB under its first: with one gain per call its int16
    samples would be a few LSBs; each block's own gain keeps the quiet second as exact as the
    loud one (the clamp at max - 8 keeps it in the features)."""
    from npu.mel.cpu import log_mel_spectrogram

    rng = np.random.default_rng(3)
    audio = np.concatenate([rng.standard_normal(SAMPLE_RATE) * 0.3,
                            rng.standard_normal(SAMPLE_RATE) * 1e-4]).astype(np.float32)
    error = np.abs(host.log_mel(audio, 80, 0, 3000, host_kernel(80))
                   - log_mel_spectrogram(audio, 80, 0))
    quiet = error[:, 110:]
    print(f"quiet second: max {quiet.max():.2e}")
    assert quiet.max() <= 1e-4
