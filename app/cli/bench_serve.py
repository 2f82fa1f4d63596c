"""``amanuensis bench serve``: the service's overhead over calling WhisperX directly.

The same audio (shared speech clips joined to ``--seconds``, sent as 16 kHz PCM WAV) goes
through the running service (``--url``; without it a service is started here with the current
``AMANUENSIS_*`` settings) and through stock ``whisperx`` loaded in this process with the
model, compute type, threads, VAD (the engine's own detector object when it is one WhisperX does
not build) and batch size the service reports on ``/status``, alternating, ``--repeats`` times each, with a pause before each run so neither path's
spinning OpenMP threads slow the other.
The last line is JSON: medians, ``overhead_ratio`` (service / direct, medians),
``overhead_ratio_best`` (fastest runs: less sensitive to other load on a shared machine) and
both x-realtimes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from app.cli.local_process import free_loopback_port, wait_until_ok
from npu.audio_spec import SAMPLE_RATE

WARMUP_ROUNDS = 2
READY_TIMEOUT_SECONDS = 300


def register(commands, bench) -> None:
    parser = bench.add_parser("serve", help="service overhead vs WhisperX called directly")
    parser.add_argument("--url", default=None, help="running service (default: start one here)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path")
    parser.add_argument("--settle", type=float, default=1.0, help=(
        "seconds to wait before each timed run, so the other path's OpenMP threads (which "
        "spin after work) stop competing for the cores (default 1)"))
    parser.set_defaults(handler=run)


def speech_audio(seconds: float):
    """``seconds`` of the shared speech clips end to end, 16 kHz mono float32."""
    import numpy as np

    from app.evaluation.corpus import SHARED_SPEECH_DIR, speech_files
    from app.transcription.audio import decode_file

    files = speech_files()
    if not files:
        raise SystemExit(f"no speech clips under {SHARED_SPEECH_DIR}")
    parts, total, needed = [], 0, int(seconds * SAMPLE_RATE)
    while total < needed:
        for path in files:
            parts.append(decode_file(path))
            total += parts[-1].size
            if total >= needed:
                break
    return np.concatenate(parts)[:needed]


def start_service() -> tuple[str, subprocess.Popen]:
    port = free_loopback_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.service:create_app", "--host",
         "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(url + "/ready", process, time.perf_counter(), READY_TIMEOUT_SECONDS)
    except SystemExit:
        process.terminate()
        raise
    return url, process


def run(args: argparse.Namespace) -> int:
    import httpx
    import whisperx

    from app.transcription.vad import bundled_vad

    audio = speech_audio(args.seconds)
    from app.transcription.audio import wav_bytes

    upload = wav_bytes(audio)
    audio_seconds = audio.size / SAMPLE_RATE
    process = None
    url = args.url
    if url is None:
        url, process = start_service()
    try:
        status = httpx.get(url + "/status", timeout=10).json()
        language = "en" if status["english_only"] else status["language"]
        direct = whisperx.load_model(status["model_source"], device="cpu",
                                     compute_type=status["compute_type"],
                                     vad_method=status["vad_method"],
                                     vad_model=bundled_vad(status["vad_method"]),
                                     threads=status["cpu_threads"],
                                     language=language)
        service_times, direct_times = [], []
        for repeat in range(-WARMUP_ROUNDS + 1, args.repeats + 1):  # rounds <= 0 warm up
            time.sleep(args.settle)
            started = time.perf_counter()
            response = httpx.post(url + "/v1/audio/transcriptions", timeout=600,
                                  files={"file": ("bench.wav", upload, "audio/wav")},
                                  data={"response_format": "verbose_json"})
            service_seconds = time.perf_counter() - started
            response.raise_for_status()
            time.sleep(args.settle)
            started = time.perf_counter()
            direct.transcribe(audio, batch_size=status["batch_size"])
            direct_seconds = time.perf_counter() - started
            if repeat > 0:
                service_times.append(service_seconds)
                direct_times.append(direct_seconds)
                print(f"round {repeat}: service {service_seconds:.3f} s, "
                      f"whisperx {direct_seconds:.3f} s")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    service_median = statistics.median(service_times)
    direct_median = statistics.median(direct_times)
    print(json.dumps({
        "audio_seconds": round(audio_seconds, 3),
        "repeats": args.repeats,
        "model": status["model"],
        "mel_backend": status["mel_backend"],
        "service_seconds": round(service_median, 4),
        "direct_seconds": round(direct_median, 4),
        "overhead_ratio": round(service_median / direct_median, 4),
        "overhead_ratio_best": round(min(service_times) / min(direct_times), 4),
        "service_x_realtime": round(audio_seconds / service_median, 3),
        "direct_x_realtime": round(audio_seconds / direct_median, 3),
    }))
    return 0
