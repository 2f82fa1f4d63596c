"""The CPU front-end against WhisperX (torch), librosa and an independent float64 reference."""

from __future__ import annotations

import threading

import librosa
import numpy as np
import pytest
import torch
import whisperx.audio

from app.transcription.audio import decode_file
from npu.audio_spec import HOP_LENGTH, N_FFT, N_SAMPLES, SAMPLE_RATE
from npu.mel.cpu import CpuMelBackend, log_mel_spectrogram, mel_filters
from tests.speech import speech_files

TOLERANCE = 2e-5
OURS_VS_EXACT = 1e-6
"""The float64 FFT, with the window applied exactly in the frequency domain, keeps us this close
to the float64 maths (measured: <= 2e-7 on every shared file). WhisperX's float32 (MKL) STFT is
itself up to ~3e-5 from it on loud speech, so against WhisperX we can promise 2e-5, or
WhisperX's own error plus ours where that is larger; the tests print both."""
rng = np.random.default_rng(1234)
SYNTHETIC = {
    "white_noise": (rng.standard_normal(SAMPLE_RATE * 7 + 37) * 0.3).astype(np.float32),
    "silence": np.zeros(SAMPLE_RATE * 3, np.float32),
    "square_full_scale": np.where(np.arange(SAMPLE_RATE * 4) % 16 < 8, 1.0,
                                  -1.0).astype(np.float32),
}


def whisperx_features(audio: np.ndarray, n_mels: int, padding: int = 0) -> np.ndarray:
    return whisperx.audio.log_mel_spectrogram(torch.from_numpy(audio.copy()), n_mels, padding).numpy()


def assert_whisperx_exact(audio: np.ndarray, n_mels: int, padding: int) -> tuple[float, float, float]:
    ours = log_mel_spectrogram(audio, n_mels, padding)
    wx = whisperx_features(audio, n_mels, padding)
    assert ours.dtype == np.float32 and ours.shape == wx.shape
    exact = float64_features(audio, n_mels, padding)
    ours_vs_wx, ours_vs_exact, wx_vs_exact = (
        float(np.abs(a - b).max()) for a, b in ((ours, wx), (ours, exact), (wx, exact))
    )
    print(f"ours-wx={ours_vs_wx:.2e} ours-exact={ours_vs_exact:.2e} wx-exact={wx_vs_exact:.2e}")
    assert ours_vs_exact <= OURS_VS_EXACT
    assert ours_vs_wx <= max(TOLERANCE, wx_vs_exact + ours_vs_exact)
    return ours_vs_wx, ours_vs_exact, wx_vs_exact


def float64_features(audio: np.ndarray, n_mels: int, padding: int = 0) -> np.ndarray:
    """Whisper's maths in float64 with NumPy's own FFT and librosa's filters (a third opinion)."""
    x = np.pad(np.concatenate([audio.astype(np.float64), np.zeros(padding)]), 200, mode="reflect")
    n_frames = (audio.size + padding) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP_LENGTH][:n_frames]
    power = np.abs(np.fft.rfft(frames * np.hanning(401)[:-1], axis=1)) ** 2
    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels)
    mel = filters.astype(np.float64) @ power.T
    log = np.log10(np.maximum(mel, 1e-10))
    return (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0


@pytest.mark.parametrize("n_mels", [80, 128])
def test_filters_equal_librosa_and_whisperx_assets(n_mels):
    ours = mel_filters(n_mels)
    assert ours.dtype == np.float32 and ours.shape == (n_mels, 201)
    np.testing.assert_allclose(ours, librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels), rtol=0, atol=1e-7)
    shipped = whisperx.audio.mel_filters("cpu", n_mels).numpy()
    np.testing.assert_allclose(ours, shipped, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("name", sorted(SYNTHETIC))
@pytest.mark.parametrize("padding", [0, N_SAMPLES])
def test_synthetic_signals_match_whisperx(name, n_mels, padding):
    assert_whisperx_exact(SYNTHETIC[name], n_mels, padding)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_one_sample_padded_to_a_chunk_matches_whisperx(n_mels):
    assert_whisperx_exact(np.array([0.25], np.float32), n_mels, N_SAMPLES)


def test_too_short_for_reflect_padding_is_rejected_like_whisperx():
    audio = np.array([0.25], np.float32)
    with pytest.raises(RuntimeError):
        whisperx_features(audio, 80)
    with pytest.raises(ValueError, match="exceed 200 samples"):
        log_mel_spectrogram(audio)


@pytest.mark.parametrize("bad", [np.zeros((2, 400), np.float32), np.array(["a"] * 400)])
def test_bad_audio_shapes_and_types_are_rejected(bad):
    with pytest.raises(ValueError):
        log_mel_spectrogram(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_audio_is_rejected(value):
    audio = np.zeros(SAMPLE_RATE, np.float32)
    audio[5000] = value
    with pytest.raises(ValueError, match="finite"):
        log_mel_spectrogram(audio)
    with CpuMelBackend(workers=2) as backend, pytest.raises(ValueError, match="finite"):
        backend.log_mel(audio)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("position", [5000, 300000, SAMPLE_RATE * 40 - 1])
def test_non_finite_sample_anywhere_in_long_audio_is_rejected(value, position):
    """A bad sample in any block (not only the first) must surface, on one thread and on two."""
    audio = np.zeros(SAMPLE_RATE * 40, np.float32)
    audio[position] = value
    with pytest.raises(ValueError, match="finite"):
        log_mel_spectrogram(audio)
    with CpuMelBackend(workers=2) as backend, pytest.raises(ValueError, match="finite"):
        backend.log_mel(audio)


def test_unsupported_n_mels_is_rejected():
    with pytest.raises(ValueError, match="n_mels"):
        log_mel_spectrogram(np.zeros(1000, np.float32), n_mels=64)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_every_shared_speech_file(n_mels):
    for path in speech_files():
        audio = decode_file(path)
        for padding in (0, N_SAMPLES):
            print(path.name, padding, end=" ")
            assert_whisperx_exact(audio, n_mels, padding)


def test_librosa_with_whispers_log_and_clamp_agrees():
    audio = SYNTHETIC["white_noise"]
    power = librosa.feature.melspectrogram(
        y=audio, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=80, pad_mode="reflect"
    )[:, :-1]
    log = np.log10(np.maximum(power, 1e-10))
    expected = (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0
    assert np.abs(log_mel_spectrogram(audio) - expected).max() <= TOLERANCE


@pytest.mark.parametrize("n_samples", [201, SAMPLE_RATE * 5 + 123, SAMPLE_RATE * 40 + 7])
@pytest.mark.parametrize("workers", [2, 3])
def test_threaded_backend_equals_single_thread_bit_for_bit(n_samples, workers):
    audio = (np.random.default_rng(n_samples).standard_normal(n_samples) * 0.2).astype(np.float32)
    with CpuMelBackend(80, workers=workers) as backend:
        assert np.array_equal(backend.log_mel(audio, 1000), log_mel_spectrogram(audio, 80, 1000))


def test_close_stops_the_pool_and_later_calls_fail():
    before = {t.ident for t in threading.enumerate()}
    backend = CpuMelBackend(80, workers=2)
    backend.log_mel(np.zeros(SAMPLE_RATE * 20, np.float32) + 0.1)
    backend.close()
    backend.close()
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("cpu-mel")]
    assert leftover == []
    with pytest.raises(RuntimeError, match="closed"):
        backend.log_mel(np.zeros(SAMPLE_RATE * 20, np.float32))


@pytest.mark.parametrize("n_samples", [201, 399, 400, 401, 521, SAMPLE_RATE * 10 + 37, N_SAMPLES - 1])
@pytest.mark.parametrize("workers", [1, 2])
def test_padding_frames_skipped_equal_the_padding_computed(n_samples, workers):
    """Frames that read only padding zeros skip the FFT: bit for bit what the same zeros give
    when they are passed as samples (where every frame goes through the FFT)."""
    audio = (np.random.default_rng(n_samples).standard_normal(n_samples) * 0.1).astype(np.float32)
    padding = N_SAMPLES - n_samples
    explicit = np.concatenate([audio, np.zeros(padding, np.float32)])
    with CpuMelBackend(workers=workers) as backend:
        np.testing.assert_array_equal(backend.log_mel(audio, padding), backend.log_mel(explicit))
    np.testing.assert_array_equal(log_mel_spectrogram(audio, 80, padding), log_mel_spectrogram(explicit))


def engine_like_batch(seed: int) -> tuple[list[np.ndarray], list[int]]:
    """Chunks as the engine passes them: various lengths (one a full 30 s), each padded to 30 s."""
    rng = np.random.default_rng(seed)
    lengths = [N_SAMPLES, SAMPLE_RATE * 7 + 31, 201, N_SAMPLES - 1, SAMPLE_RATE * 29]
    chunks = [(rng.standard_normal(n) * rng.uniform(0.01, 0.5)).astype(np.float32) for n in lengths]
    return chunks, [N_SAMPLES - chunk.size for chunk in chunks]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_is_each_chunks_features_bit_for_bit(workers):
    chunks, paddings = engine_like_batch(workers)
    with CpuMelBackend(80, workers=workers) as backend:
        batch = backend.log_mel_batch(chunks, paddings)
        assert batch.dtype == np.float32 and batch.shape == (len(chunks), 80, 3000)
        for chunk, padding, features in zip(chunks, paddings, batch):
            assert np.array_equal(features, log_mel_spectrogram(chunk, 80, padding))
            assert np.array_equal(features, backend.log_mel(chunk, padding))


def test_each_chunk_of_a_batch_is_clamped_at_its_own_peak():
    loud = (np.random.default_rng(5).standard_normal(SAMPLE_RATE * 10) * 0.5).astype(np.float32)
    with CpuMelBackend(80, workers=2) as backend:
        batch = backend.log_mel_batch([loud, loud * np.float32(1e-3)], [N_SAMPLES - loud.size] * 2)
    assert batch[0].max() - batch[1].max() == pytest.approx(1.5, abs=1e-3)  # 60 dB = 6 / 4
    # the padding's silence (log10 of the 1e-10 floor) is clamped at the loud chunk's maximum
    # minus 8 (2 after scaling), but lies above the quiet chunk's
    assert batch[0].max() - batch[0].min() == pytest.approx(2.0, abs=1e-6)
    assert batch[1].min() == pytest.approx((-10 + 4) / 4, abs=1e-6)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_chunk_fails_the_batch_naming_it(workers, value):
    chunks, paddings = engine_like_batch(3)
    chunks[3][SAMPLE_RATE * 20] = value
    with CpuMelBackend(80, workers=workers) as backend:
        with pytest.raises(ValueError, match=r"chunk 3 of 5: audio must be finite"):
            backend.log_mel_batch(chunks, paddings)
        good = backend.log_mel_batch(chunks[:3], paddings[:3])  # the pool is still usable
    assert np.array_equal(good[2], log_mel_spectrogram(chunks[2], 80, paddings[2]))


def test_a_batch_refuses_chunks_of_different_frame_counts_and_bad_chunks():
    with CpuMelBackend(80, workers=2) as backend:
        with pytest.raises(ValueError, match=r"same number of frames, got \[3000, 100\]"):
            backend.log_mel_batch([np.zeros(N_SAMPLES, np.float32), np.zeros(16_000, np.float32)],
                                  [0, 0])
        with pytest.raises(ValueError, match=r"chunk 1 of 2: audio must be 1-D"):
            backend.log_mel_batch([np.zeros(N_SAMPLES, np.float32), np.zeros((2, 10), np.float32)],
                                  [0, 0])
        with pytest.raises(ValueError, match="2 chunks but 1 paddings"):
            backend.log_mel_batch([np.zeros(N_SAMPLES, np.float32)] * 2, [0])
        with pytest.raises(ValueError, match="at least one chunk"):
            backend.log_mel_batch([], [])
