"""Decode uploaded audio to 16 kHz mono float32 with PyAV.

PyAV's wheels bundle FFmpeg, so any common container and codec decodes with no system FFmpeg
(WhisperX's own ``load_audio`` shells out to an ``ffmpeg`` binary). Failures map to client
errors: nothing decodable -> 415, empty upload or no audio stream -> 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from app.errors import EmptyAudio, UnsupportedMedia
from npu.audio_spec import SAMPLE_RATE


def decode_audio(source: BinaryIO, *, param: str = "file") -> np.ndarray:
    """All audio of the first audio stream in ``source`` as float32 mono at 16 kHz."""
    chunks = list(_decoded_chunks(source, param))
    if not chunks:
        raise EmptyAudio("the uploaded file contains no audio samples", param=param)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def measure_audio(source: BinaryIO, *, param: str = "file") -> float:
    """Seconds of audio in ``source``, decoded in full (so it is known to decode) without
    keeping the samples: what a job submission checks before storing hours of audio."""
    samples = sum(chunk.shape[0] for chunk in _decoded_chunks(source, param))
    if samples == 0:
        raise EmptyAudio("the uploaded file contains no audio samples", param=param)
    return samples / SAMPLE_RATE


def _decoded_chunks(source: BinaryIO, param: str) -> Iterator[np.ndarray]:
    """16 kHz mono float32 pieces of the first audio stream; client errors for what is not."""
    if _is_empty(source):
        raise EmptyAudio("the uploaded file is empty", param=param)
    try:
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise EmptyAudio("the uploaded file has no audio stream", param=param)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
    except av.FFmpegError as error:
        raise UnsupportedMedia(f"the uploaded file could not be decoded as audio: {error}",
                               param=param) from error


def _is_empty(source: BinaryIO) -> bool:
    position = source.tell()
    empty = not source.read(1)
    source.seek(position)
    return empty


def duration_seconds(audio: np.ndarray) -> float:
    """Seconds of decoded audio (16 kHz mono samples)."""
    return audio.shape[0] / SAMPLE_RATE
