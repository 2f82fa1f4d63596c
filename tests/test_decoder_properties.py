"""Property tests of the upload decoder: whatever bytes arrive, it returns audio or refuses.

"Refuses" means its own client errors (400 empty / no audio stream, 415 undecodable), never
another exception; "returns audio" means 16 kHz mono float32, finite, non-empty. A hang would be
caught by the test timeout; a crash would take the test run down with it.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import APIError
from app.transcription.audio import decode_audio
from npu.audio_spec import SAMPLE_RATE
from tests.speech import speech_files
from tests.synth_media import encode_audio, tone, video_only

pytestmark = pytest.mark.timeout(600)

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
MAGIC_PREFIXES = [
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    b"fLaC\x00\x00\x00\x22",
    b"ID3\x03\x00\x00\x00\x00\x00\x00",
    b"\xff\xfb\x90\x64",
    b"OggS\x00\x02",
    b"\x00\x00\x00\x18ftypmp42",
    b"\x1a\x45\xdf\xa3",
    b"#!AMR\n",
]


def decode_or_refuse(data: bytes) -> np.ndarray | None:
    """The property itself; returns the audio when there is some."""
    try:
        audio = decode_audio(io.BytesIO(data))
    except APIError as error:
        assert error.status_code in (400, 415), error.status_code
        assert error.message
        return None
    assert audio.dtype == np.float32
    assert audio.ndim == 1 and audio.size > 0
    assert np.isfinite(audio).all(), "decoder returned NaN or inf samples"
    return audio


@functools.cache
def synthetic_files() -> dict[str, bytes]:
    return {
        "mp3": encode_audio(tone(2, 44_100, 2), 44_100, container="mp3", codec="libmp3lame"),
        "opus": encode_audio(tone(2, 48_000), 48_000, container="ogg", codec="libopus"),
        "flac": encode_audio(tone(2, SAMPLE_RATE), SAMPLE_RATE, container="flac", codec="flac"),
        "mp4": encode_audio(tone(2, 44_100, 2), 44_100, container="mp4", codec="aac", video=True),
        "video-only": video_only(),
    }


@pytest.fixture(scope="module")
def recordings() -> list[Path]:
    return speech_files()


@functools.cache
def full_length(path: Path) -> int:
    audio = decode_or_refuse(path.read_bytes())
    assert audio is not None, f"{path} must decode whole"
    return audio.size


@PROPERTY
@given(st.binary(max_size=4096))
def test_random_bytes_decode_or_are_refused(data):
    decode_or_refuse(data)


@PROPERTY
@given(st.sampled_from(MAGIC_PREFIXES), st.binary(max_size=4096))
def test_random_bytes_behind_a_container_signature_decode_or_are_refused(prefix, body):
    decode_or_refuse(prefix + body)


@PROPERTY
@given(st.sampled_from(sorted(synthetic_files())), st.floats(0, 1), st.binary(max_size=64))
def test_truncated_encoded_files_decode_or_are_refused(name, fraction, tail):
    data = synthetic_files()[name]
    decode_or_refuse(data[: int(len(data) * fraction)] + tail)


@PROPERTY
@given(st.data())
def test_truncated_real_recordings_decode_to_no_more_than_the_whole(recordings, data):
    path = data.draw(st.sampled_from(recordings), label="recording")
    raw = path.read_bytes()
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    audio = decode_or_refuse(raw[:cut])
    if audio is not None:
        # The resampler may flush up to one block more than the whole file gives.
        assert audio.size <= full_length(path) + 1024


@PROPERTY
@given(st.data())
def test_real_recordings_with_corrupted_bytes_decode_or_are_refused(recordings, data):
    path = data.draw(st.sampled_from(recordings), label="recording")
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 16), label="flips")):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    decode_or_refuse(bytes(raw))
