"""Decode uploaded audio to 16 kHz mono float32 with PyAV, bounded.

PyAV's wheels bundle FFmpeg, so any common container and codec decodes with no system FFmpeg
(WhisperX's own ``load_audio`` shells out to an ``ffmpeg`` binary). Failures map to client
errors: nothing decodable -> 415, empty upload or no audio stream -> 400.

Compressed size says little about decoded size (hours of silent FLAC fit in a few kilobytes),
so an upload whose container declares more than ``max_seconds`` is refused with 413 before
anything is decoded, and the decoder counts samples as it goes and stops at ``max_seconds``
(for containers that declare no length, or a false one): it never holds more than that much
decoded audio (64 KB per second as float32). Samples that are not finite numbers (NaN or infinity, which a float WAV can carry) are
refused with 400 as soon as a frame holds one.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from app.errors import AudioTooLong, EmptyAudio, InvalidAudio, UnsupportedMedia, WorkStopped
from npu.audio_spec import SAMPLE_RATE


def decode_audio(
    source: BinaryIO,
    *,
    max_seconds: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    param: str = "file",
) -> np.ndarray:
    """All audio of the first audio stream in ``source`` as float32 mono at 16 kHz.

    Raises :class:`AudioTooLong` once more than ``max_seconds`` have been decoded (no limit when
    ``None``) and :class:`WorkStopped` between frames once ``should_stop()`` says so.
    """
    chunks = list(_checked_pieces(source, _Limit(max_seconds, should_stop, param)))
    return np.concatenate(chunks).astype(np.float32, copy=False)


def measure_audio(source: BinaryIO, *, max_seconds: float | None = None,
                  param: str = "file") -> float:
    """Seconds of audio in ``source``, decoded in full (so it is known to decode, with the same
    refusals as :func:`decode_audio`) without keeping the samples: what a job submission checks
    before storing hours of audio."""
    limit = _Limit(max_seconds, None, param)
    for _ in _checked_pieces(source, limit):
        pass
    return limit.samples / SAMPLE_RATE


def _checked_pieces(source: BinaryIO, limit: _Limit) -> Iterator[np.ndarray]:
    """The decoded pieces of ``source``'s first audio stream, each checked by ``limit``; client
    errors for an empty upload, no audio stream, nothing decodable or no samples."""
    if _is_empty(source):
        raise EmptyAudio("the uploaded file is empty", param=limit.param)
    try:
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise EmptyAudio("the uploaded file has no audio stream", param=limit.param)
            stream = container.streams.audio[0]
            limit.check_declared(_declared_seconds(container, stream))
            yield from _pieces(container, stream, limit)
    except av.FFmpegError as error:
        raise UnsupportedMedia(f"the uploaded file could not be decoded as audio: {error}",
                               param=limit.param) from error
    if limit.samples == 0:
        raise EmptyAudio("the uploaded file contains no audio samples", param=limit.param)


def decode_file(path: Path) -> np.ndarray:
    """:func:`decode_audio` of the file at ``path``."""
    with Path(path).open("rb") as source:
        return decode_audio(source, param=str(path))


class _Limit:
    """Checks each decoded piece: the running total against the cap, the samples for NaN/inf,
    and whether the caller still wants the result."""

    def __init__(self, max_seconds: float | None, should_stop: Callable[[], bool] | None,
                 param: str) -> None:
        self.max_seconds = max_seconds
        self.max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        self.should_stop = should_stop
        self.param = param
        self.samples = 0

    def check_declared(self, seconds: float | None) -> None:
        """Refuse up front what the container itself says is too long."""
        if self.max_seconds is not None and seconds is not None and seconds > self.max_seconds:
            raise AudioTooLong(
                f"the uploaded audio is {seconds:.0f} s long, over the limit of "
                f"{self.max_seconds:g} s (AMANUENSIS_MAX_AUDIO_SECONDS)", param=self.param)

    def check(self, piece: np.ndarray) -> np.ndarray:
        self.samples += piece.size
        if self.max_samples is not None and self.samples > self.max_samples:
            raise AudioTooLong(
                f"the uploaded audio is longer than the limit of {self.max_seconds:g} s "
                f"(AMANUENSIS_MAX_AUDIO_SECONDS); decoding stopped there", param=self.param)
        if not np.isfinite(piece).all():
            raise InvalidAudio("the uploaded audio contains samples that are not finite numbers "
                               "(NaN or infinity)", param=self.param)
        if self.should_stop is not None and self.should_stop():
            raise WorkStopped("decoding stopped: the request no longer waits for it")
        return piece


def _declared_seconds(container: av.container.InputContainer,
                      stream: av.AudioStream) -> float | None:
    """The length the stream (or else the container) declares, if any."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _pieces(container: av.container.InputContainer, stream: av.AudioStream,
            limit: _Limit) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            yield limit.check(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        yield limit.check(out.to_ndarray().reshape(-1))


def _is_empty(source: BinaryIO) -> bool:
    position = source.tell()
    empty = not source.read(1)
    source.seek(position)
    return empty


def wav_bytes(audio: np.ndarray) -> bytes:
    """16 kHz mono 16-bit PCM WAV of float ``audio`` (clipped to [-1, 1]): how the benchmarks
    upload decoded audio."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(SAMPLE_RATE)
        output.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def duration_seconds(audio: np.ndarray) -> float:
    """Seconds of decoded audio (16 kHz mono samples)."""
    return audio.shape[0] / SAMPLE_RATE
