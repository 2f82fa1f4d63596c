"""PyAV decoding: any container/codec/rate/layout to 16 kHz mono float32; clear errors."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

from app.errors import AudioTooLong, EmptyAudio, InvalidAudio, UnsupportedMedia, WorkStopped
from app.settings import Settings
from app.transcription.audio import decode_audio, measure_audio
from npu.audio_spec import SAMPLE_RATE
from tests.app.service_helpers import sine_file, video_only_file
from tests.synth_media import float_wav, silent_flac, tone, without_declared_length


@pytest.mark.parametrize(("container", "codec", "rate", "layout"), [
    ("wav", "pcm_s16le", 44100, "stereo"),
    ("wav", "pcm_f32le", 8000, "mono"),
    ("flac", "flac", 22050, "stereo"),
    ("mp3", "libmp3lame", 44100, "stereo"),
    ("ogg", "libopus", 48000, "mono"),
    ("mp4", "aac", 44100, "stereo"),
])
def test_decodes_to_16k_mono_float32(container, codec, rate, layout):
    audio = decode_audio(io.BytesIO(sine_file(container, codec, rate=rate, layout=layout)))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] / SAMPLE_RATE == pytest.approx(1.0, abs=0.05)  # codec priming/padding
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert np.argmax(spectrum) * SAMPLE_RATE / 12000 == pytest.approx(440, abs=2)


def test_lossless_16k_mono_is_exact():
    audio = decode_audio(io.BytesIO(sine_file("wav", "pcm_f32le", rate=SAMPLE_RATE, layout="mono")))
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    np.testing.assert_allclose(audio, 0.3 * np.sin(2 * np.pi * 440 * t), atol=1e-6)


def test_empty_upload_is_400():
    with pytest.raises(EmptyAudio, match="empty") as caught:
        decode_audio(io.BytesIO(b""))
    assert caught.value.status_code == 400


def test_no_audio_stream_is_400():
    with pytest.raises(EmptyAudio, match="no audio stream") as caught:
        decode_audio(io.BytesIO(video_only_file()))
    assert caught.value.status_code == 400


def test_undecodable_is_415():
    with pytest.raises(UnsupportedMedia) as caught:
        decode_audio(io.BytesIO(b"this is not audio at all " * 100))
    assert caught.value.status_code == 415


def test_a_declared_length_over_the_default_cap_is_refused_before_decoding():
    bomb = silent_flac(6 * 3600)  # six hours in ~45 KB; ~1.4 GB as float32
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLong, match="21600 s long") as caught:
            decode_audio(io.BytesIO(bomb), max_seconds=Settings().max_audio_seconds)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (caught.value.status_code, caught.value.code) == (413, "audio_too_long")
    assert peak < 20 * 2**20


def test_hours_of_silent_flac_stop_at_the_cap_without_materialising_them():
    bomb = without_declared_length(silent_flac(6 * 3600))
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLong, match="decoding stopped") as caught:
            decode_audio(io.BytesIO(bomb), max_seconds=600)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (caught.value.status_code, caught.value.code) == (413, "audio_too_long")
    cap_bytes = 600 * SAMPLE_RATE * 4
    assert peak < 2 * cap_bytes  # what was decoded up to the cap, not six hours


def test_audio_up_to_the_cap_decodes_in_full():
    audio = decode_audio(io.BytesIO(silent_flac(120)), max_seconds=121)
    assert audio.shape[0] == 120 * SAMPLE_RATE


@pytest.mark.parametrize(("bad", "rate", "channels"), [
    (np.nan, SAMPLE_RATE, 1),  # no resampling: the samples reach the decoder's output as they are
    (np.inf, 44_100, 2),
    (-np.inf, 8_000, 1),
])
def test_samples_that_are_not_finite_are_400_invalid_audio(bad, rate, channels):
    samples = tone(1.0, rate, channels)
    samples[:, rate // 2] = bad
    with pytest.raises(InvalidAudio, match="not finite") as caught:
        decode_audio(io.BytesIO(float_wav(samples, rate)))
    assert (caught.value.status_code, caught.value.code) == (400, "invalid_audio")


def test_decoding_stops_between_frames_once_asked_to():
    asked = []

    def stop_after_three() -> bool:
        asked.append(True)
        return len(asked) > 3

    with pytest.raises(WorkStopped):
        decode_audio(io.BytesIO(silent_flac(3600)), should_stop=stop_after_three)
    assert len(asked) == 4


@pytest.mark.parametrize(("container", "codec", "seconds"), [("wav", "pcm_s16le", 2.5),
                                                            ("ogg", "libopus", 1.0)])
def test_measure_agrees_with_decode_and_refuses_the_same(container, codec, seconds):
    data = sine_file(container, codec, rate=48000, seconds=seconds)
    assert measure_audio(io.BytesIO(data)) == decode_audio(io.BytesIO(data)).shape[0] / 16000
    assert abs(measure_audio(io.BytesIO(data)) - seconds) < 0.05
    with pytest.raises(UnsupportedMedia):
        measure_audio(io.BytesIO(b"not audio at all"))
    with pytest.raises(EmptyAudio):
        measure_audio(io.BytesIO(b""))
