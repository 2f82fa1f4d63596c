"""Helpers shared by the service tests: durations measured independently, metrics."""

from __future__ import annotations

import io
from pathlib import Path

import av
import httpx
import numpy as np
import soundfile
from prometheus_client.parser import text_string_to_metric_families


def soundfile_duration(path: Path) -> float:
    """Duration measured with libsndfile, independently of the service's PyAV decoder."""
    info = soundfile.info(str(path))
    return info.frames / info.samplerate


def metric_samples(base_url: str) -> dict[tuple[str, tuple], float]:
    """Every sample on ``/metrics`` as ``{(name, sorted labels): value}``."""
    return metric_samples_from_text(httpx.get(base_url + "/metrics", timeout=10).text)


def metric_samples_from_text(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus exposition as ``{(name, sorted labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_value(text: str, name: str, labels: dict | None = None) -> float | None:
    """The first sample called ``name`` (with exactly ``labels``, when given); ``None`` if none."""
    for (sample_name, sample_labels), value in metric_samples_from_text(text).items():
        if sample_name == name and (labels is None or dict(sample_labels) == labels):
            return value
    return None


def sine_file(container: str, codec: str, *, rate: int = 44100, layout: str = "stereo",
              seconds: float = 1.0, amplitude: float = 0.3) -> bytes:
    """A 440 Hz tone (silence with ``amplitude=0``) encoded with PyAV in ``container``/``codec``."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout=layout)
        channels = stream.codec_context.layout.nb_channels
        t = np.arange(int(rate * seconds)) / rate
        tone = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame_format = stream.codec_context.format.name
        samples_per_frame = stream.codec_context.frame_size or 1024
        for start in range(0, tone.size, samples_per_frame):
            part = tone[start:start + samples_per_frame]
            planar = np.tile(part, (channels, 1))
            frame = _frame(planar, frame_format, layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def _frame(planar: np.ndarray, frame_format: str, layout: str) -> av.AudioFrame:
    if frame_format.startswith("s16"):
        data = (planar * 32767).astype(np.int16)
    elif frame_format.startswith("s32"):
        data = (planar * 2147483647).astype(np.int32)
    else:
        data = planar.astype(np.float32)
    if not frame_format.endswith("p"):
        data = data.T.reshape(1, -1)
    return av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame_format, layout=layout)


def video_only_file() -> bytes:
    """A short MPEG-4 video with no audio stream."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as output:
        stream = output.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), index * 40, np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()
