"""``amanuensis bench decode``: the service's decoder (PyAV, ``app.transcription.audio``)
against asrfront's loader and the ``ffmpeg`` command line, each to 16 kHz mono float32.

The input is ``--seconds`` of the shared speech clips end to end, encoded here (with PyAV) as
16-bit WAV, FLAC, MP3 and Opus files in a temporary directory. Each repeat decodes every file
with every decoder in turn (interleaved, after a short pause); a decoder that cannot read a
format gets no row for it (asrfront has no Opus). Per-row lines give the best time and
x-realtime; the final JSON line has them and ``pyav_vs_<peer>_<format>`` = peer time / PyAV time
(above 1: PyAV is faster).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FORMATS = {"wav": ("pcm_s16le", "s16"), "flac": ("flac", "s16"), "mp3": ("libmp3lame", "s16p"),
           "opus": ("libopus", "s16")}
"""File suffix -> (PyAV encoder, its sample format)."""
ENCODE_RATE = {"opus": 48000}
"""Opus encodes only at 48 kHz (and a few lower rates); the others keep 16 kHz."""
SETTLE_SECONDS = 0.3


def register(commands, bench) -> None:
    parser = bench.add_parser("decode", help="PyAV decoding vs asrfront and the ffmpeg CLI")
    parser.add_argument("--seconds", type=float, default=600.0, help="audio length (default 600)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per decoder and file")
    parser.set_defaults(handler=run)


def encode(audio: np.ndarray, path: Path) -> None:
    """Write 16 kHz mono float32 ``audio`` to ``path`` in the format its suffix names."""
    import av

    codec, sample_format = FORMATS[path.suffix[1:]]
    rate = ENCODE_RATE.get(path.suffix[1:], 16000)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)[np.newaxis]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=rate)
        for resampled in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def decoders() -> dict[str, Callable[[Path], np.ndarray | None]]:
    """name -> (path -> samples, or ``None`` when the decoder does not read that format)."""
    import asrfront

    from app.transcription.audio import decode_audio

    def pyav(path: Path) -> np.ndarray:
        with path.open("rb") as source:
            return decode_audio(source)

    def asrfront_load(path: Path) -> np.ndarray | None:
        return None if path.suffix == ".opus" else asrfront.load(str(path))

    found = {"pyav": pyav, "asrfront": asrfront_load}
    if shutil.which("ffmpeg"):
        def ffmpeg(path: Path) -> np.ndarray:
            output = subprocess.run(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "f32le",
                 "-ac", "1", "-ar", "16000", "-"], check=True, capture_output=True).stdout
            return np.frombuffer(output, np.float32)
        found["ffmpeg"] = ffmpeg
    else:
        print("ffmpeg: not benchmarked (no ffmpeg on PATH)")
    return found


def run(args: argparse.Namespace) -> int:
    from app.cli.bench_mel import bench_audio

    audio, source = bench_audio("speech", args.seconds)
    seconds = audio.size / 16000
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as directory:
        files = {suffix: Path(directory) / f"speech.{suffix}" for suffix in FORMATS}
        for path in files.values():
            encode(audio, path)
        best, lengths = {}, {}
        contestants = decoders()
        for round_ in range(max(1, args.repeats) + 1):  # round 0 warms up
            for suffix, path in files.items():
                for name, decode in contestants.items():
                    time.sleep(SETTLE_SECONDS)
                    started = time.perf_counter()
                    samples = decode(path)
                    elapsed = time.perf_counter() - started
                    if samples is None or not round_:
                        continue
                    key = f"{name}_{suffix}"
                    best[key] = min(best.get(key, float("inf")), elapsed)
                    lengths[key] = samples.size / 16000
    print(f"decoding {seconds:.0f} s of {source} to 16 kHz mono float32, best of {args.repeats}")
    for key, elapsed in best.items():
        print(f"{key:<16} {elapsed * 1e3:>9.1f} ms {seconds / elapsed:>8.0f}x realtime "
              f"({lengths[key]:.2f} s decoded)")
    print(json.dumps({
        "seconds": round(seconds, 3),
        **{f"{key}_x_realtime": round(seconds / elapsed, 1) for key, elapsed in best.items()},
        **{f"pyav_vs_{key}": round(best[key] / best[f"pyav_{key.split('_')[1]}"], 3)
           for key in best if not key.startswith("pyav_")},
    }))
    return 0
