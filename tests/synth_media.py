"""Media files made in memory with PyAV for the bad-input and decoder tests.

Everything is generated, so the tests need no binary fixtures: codecs and containers come from
the FFmpeg build inside PyAV's wheel.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SPEECH_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "speech"


def tone(seconds: float, rate: int, channels: int = 1, hz: float = 440.0) -> np.ndarray:
    """Float32 ``[channels, samples]``: a tone per channel (each a little higher), amplitude 0.3."""
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * (hz + 110 * c) * t) for c in range(channels)]).astype(
        np.float32
    )


def encode_audio(
    samples: np.ndarray,
    rate: int,
    *,
    container: str,
    codec: str,
    sample_format: str | None = None,
    video: bool = False,
) -> bytes:
    """``samples`` (float32 ``[channels, n]``) encoded with ``codec`` into ``container``.

    With ``video`` a small moving picture track comes first, as in a screen recording.
    """
    channels, n = samples.shape
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        if video:
            picture = out.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if sample_format:
            stream.format = sample_format
        frame_size = stream.codec_context.frame_size or 1024
        fmt = stream.codec_context.format.name
        for start in range(0, n, frame_size):
            chunk = samples[:, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(_as_format(chunk, fmt), format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if video:
            for i in range(int(n / rate * 10)):
                image = np.full((48, 64, 3), (i * 7) % 255, dtype=np.uint8)
                out.mux(picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(picture.encode(None))
    return buffer.getvalue()


def _as_format(chunk: np.ndarray, fmt: str) -> np.ndarray:
    """Samples in PyAV's layout for ``fmt``: planar ``[channels, n]`` or packed ``[1, n*ch]``."""
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "s16":
        data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
    elif base == "s32":
        data = (np.clip(chunk, -1, 1) * 2147483647).astype(np.int32)
    else:
        data = chunk.astype(np.float32)
    return np.ascontiguousarray(data if planar else data.T.reshape(1, -1))


def wav_pcm16(samples: np.ndarray, rate: int) -> bytes:
    return encode_audio(samples, rate, container="wav", codec="pcm_s16le")


def video_only(seconds: float = 1.0) -> bytes:
    """An MP4 with a picture track and no audio stream."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        picture = out.add_stream("mpeg4", rate=10)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * 10)):
            image = np.full((48, 64, 3), i * 20, dtype=np.uint8)
            out.mux(picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(picture.encode(None))
    return buffer.getvalue()


def wav_header_announcing(data_bytes: int, rate: int = 16_000) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono whose data chunk claims ``data_bytes``, and no
    data after it."""
    riff_size = min(36 + data_bytes, 0xFFFFFFFF)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", min(data_bytes, 0xFFFFFFFF))
    )


def speech_files() -> list[Path]:
    """The shared real speech recordings (WAV and FLAC); empty when the folder is absent."""
    if not SPEECH_DIR.is_dir():
        return []
    return sorted(p for p in SPEECH_DIR.rglob("*") if p.suffix in (".wav", ".flac"))


def silent_flac(seconds: float, rate: int = 8_000) -> bytes:
    """``seconds`` of digital silence as FLAC in FLAC's largest blocks: a decompression bomb
    (six hours are about 45 KB) that encodes in about a second."""
    block = 65_535  # FLAC's largest block size; a silent block is a few bytes
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono", options={"frame_size": str(block)})
        stream.format = "s16"
        zeros = np.zeros((1, block), np.int16)
        total = int(seconds * rate)
        for start in range(0, total, block):
            frame = av.AudioFrame.from_ndarray(zeros[:, : min(block, total - start)], format="s16",
                                               layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def float_wav(samples: np.ndarray, rate: int) -> bytes:
    """32-bit float WAV: the one common format whose samples can be NaN or infinite."""
    return encode_audio(samples, rate, container="wav", codec="pcm_f32le")
