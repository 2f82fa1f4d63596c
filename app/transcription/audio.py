"""Decode uploaded audio to 16 kHz mono float32 with PyAV.

PyAV's wheels bundle FFmpeg, so any common container and codec decodes with no system FFmpeg
(WhisperX's own ``load_audio`` shells out to an ``ffmpeg`` binary). Failures map to client
errors: nothing decodable -> 415, empty upload or no audio stream -> 400.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from app.errors import EmptyAudio, UnsupportedMedia
from npu.audio_spec import SAMPLE_RATE


def decode_audio(source: BinaryIO, *, param: str = "file") -> np.ndarray:
    """All audio of the first audio stream in ``source`` as float32 mono at 16 kHz."""
    if _is_empty(source):
        raise EmptyAudio("the uploaded file is empty", param=param)
    try:
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise EmptyAudio("the uploaded file has no audio stream", param=param)
            samples = _decode_stream(container, container.streams.audio[0])
    except av.FFmpegError as error:
        raise UnsupportedMedia(f"the uploaded file could not be decoded as audio: {error}",
                               param=param) from error
    if samples.size == 0:
        raise EmptyAudio("the uploaded file contains no audio samples", param=param)
    return samples


def decode_file(path: Path) -> np.ndarray:
    """:func:`decode_audio` of the file at ``path``."""
    with Path(path).open("rb") as source:
        return decode_audio(source, param=str(path))


def _decode_stream(container: av.container.InputContainer, stream: av.AudioStream) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    for frame in container.decode(stream):
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _is_empty(source: BinaryIO) -> bool:
    position = source.tell()
    empty = not source.read(1)
    source.seek(position)
    return empty


def duration_seconds(audio: np.ndarray) -> float:
    """Seconds of decoded audio (16 kHz mono samples)."""
    return audio.shape[0] / SAMPLE_RATE
