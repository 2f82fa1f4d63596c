"""PyAV decoding: any container/codec/rate/layout to 16 kHz mono float32; clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from app.errors import EmptyAudio, UnsupportedMedia
from app.transcription.audio import decode_audio, measure_audio
from tests.app.service_helpers import sine_file, video_only_file


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
    assert audio.shape[0] / 16000 == pytest.approx(1.0, abs=0.05)  # codec priming/padding
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert np.argmax(spectrum) * 16000 / 12000 == pytest.approx(440, abs=2)


def test_lossless_16k_mono_is_exact():
    audio = decode_audio(io.BytesIO(sine_file("wav", "pcm_f32le", rate=16000, layout="mono")))
    t = np.arange(16000) / 16000
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
