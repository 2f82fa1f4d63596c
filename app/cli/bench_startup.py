"""``amanuensis bench startup``: how soon a fresh service answers, is ready, and transcribes.

Starts ``amanuensis serve`` (as ``make run`` and the image do) with the current ``AMANUENSIS_*``
settings on a free local port, ``--repeats`` times, and times from the launch: the first 200 of
``/health``, the first 200 of ``/ready``, then the first request (``--seconds`` of the shared
speech as a WAV upload to ``/transcribe``) and a second one, for comparison. With
``--baseline DIR`` the runs alternate between DIR (another checkout, e.g. main) and this one,
so both see the same load on a shared machine. The last line is JSON: medians for this checkout,
the start-up phases the service reports on ``/status`` (last run), and with a baseline its
medians and ``ready_ratio`` (baseline / this).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.cli.local_process import free_loopback_port, wait_until_ok
from npu.audio_spec import SAMPLE_RATE

THIS_CHECKOUT = Path(__file__).resolve().parents[2]
TIMINGS = ("health_seconds", "ready_seconds", "first_request_seconds", "second_request_seconds")


def register(commands, bench) -> None:
    parser = bench.add_parser("startup", help="seconds to /health, /ready and the first request")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="audio length of the requests (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="service starts per checkout")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout to start alternately with this one")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a start may take to be ready (default 300)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app.cli.bench_serve import speech_audio
    from app.transcription.audio import wav_bytes

    if args.repeats < 1 or args.seconds <= 0:
        print("--repeats must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    if args.baseline is not None and not (args.baseline / "app" / "cli").is_dir():
        print(f"--baseline {args.baseline} is not a checkout of this project", file=sys.stderr)
        return 2
    audio = speech_audio(args.seconds)
    upload = wav_bytes(audio)
    checkouts = [THIS_CHECKOUT] if args.baseline is None else [args.baseline, THIS_CHECKOUT]
    runs: dict[Path, list[dict]] = {checkout: [] for checkout in checkouts}
    for repeat in range(1, args.repeats + 1):
        for checkout in checkouts:
            result = start_once(checkout, upload, args.timeout)
            runs[checkout].append(result)
            print(f"run {repeat} {checkout}: " + ", ".join(
                f"{name} {result[name]:.2f}" for name in TIMINGS))
    ours = runs[THIS_CHECKOUT]
    summary = {"audio_seconds": round(audio.size / SAMPLE_RATE, 3), "repeats": args.repeats,
               "model": ours[-1]["model"], "checkout": str(THIS_CHECKOUT), **_medians(ours),
               "phases": ours[-1]["phases"]}
    if args.baseline is not None:
        baseline = _medians(runs[args.baseline])
        summary["baseline"] = {"checkout": str(args.baseline), **baseline}
        summary["ready_ratio"] = round(baseline["ready_seconds"] / summary["ready_seconds"], 3)
    print(json.dumps(summary))
    return 0


def _medians(results: list[dict]) -> dict[str, float]:
    return {name: round(statistics.median(r[name] for r in results), 3) for name in TIMINGS}


def start_once(checkout: Path, upload: bytes, timeout: float) -> dict:
    """One launch of ``amanuensis serve`` from ``checkout``: its timings, model and phases."""
    import httpx

    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(checkout), "AMANUENSIS_HOST": "127.0.0.1",
           "AMANUENSIS_PORT": str(port)}
    with tempfile.TemporaryFile() as log:
        launched = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=checkout,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            health = wait_until_ok(url + "/health", process, launched, timeout, log)
            ready = wait_until_ok(url + "/ready", process, launched, timeout, log)
            requests = []
            for _ in range(2):
                started = time.perf_counter()
                response = httpx.post(url + "/transcribe", timeout=600,
                                      files={"file": ("bench.wav", upload, "audio/wav")})
                requests.append(time.perf_counter() - started)
                response.raise_for_status()
            status = httpx.get(url + "/status", timeout=10).json()
        finally:
            process.terminate()
            process.wait(timeout=60)
    return {"health_seconds": health, "ready_seconds": ready,
            "first_request_seconds": requests[0], "second_request_seconds": requests[1],
            "model": status["model"],
            "phases": {name: [round(span["start_seconds"], 3), round(span["end_seconds"], 3)]
                       for name, span in status.get("start_up", {}).items()}}
