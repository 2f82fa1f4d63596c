"""``amanuensis bench jobs``: job throughput on one Celery worker against two, interleaved.

Starts a redis-server on loopback (or uses ``--broker-url``), keeps job records and files in a
temporary directory, and starts two ``amanuensis worker`` processes on the model named by the
environment (``AMANUENSIS_MODEL``...). Each round submits ``--jobs`` jobs of ``--audio`` first with
one worker consuming (the other told to stop consuming through Celery's remote control), then
with both; a row per measurement gives audio hours transcribed per wall-clock hour, from the
first submission to the last job's end. The last line is one JSON object with the medians and
the scaling ratio (two workers over one), and how many measured jobs succeeded (all of them, or
the bench stops with the first failure's error).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.cli.local_process import free_loopback_port

WORKER_NAMES = ("bench-one", "bench-two")
WARMUP_TIMEOUT_S = 600


def register(commands, bench) -> None:
    parser = bench.add_parser("jobs", help="job throughput on 1 vs 2 Celery workers")
    parser.add_argument("--audio", type=Path, required=True, help="audio file each job carries")
    parser.add_argument("--jobs", type=int, default=4, help="jobs per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per worker (AMANUENSIS_CPU_THREADS)")
    parser.add_argument("--broker-url", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    parser.set_defaults(handler=run)


def _start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: install it or pass --broker-url")
    port = free_loopback_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


def _start_workers(env: dict[str, str], folder: Path) -> list[subprocess.Popen]:
    workers = []
    for name in WORKER_NAMES:
        log = (folder / f"{name}.log").open("wb")
        workers.append(subprocess.Popen(
            [sys.executable, "-c", "from app.cli import main; main()", "worker",
             "--hostname", f"{name}@bench", "--loglevel", "WARNING"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return workers


def _stop(processes: list[subprocess.Popen]) -> None:
    """Workers with their children (each leads its own process group); redis on its own."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, 15)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def _run_batch(jobs, data: bytes, count: int, timeout: float) -> tuple[float, set[str]]:
    """Submit ``count`` jobs, wait for all; (wall seconds, the worker processes that ran them)."""
    started = time.time()
    ids = [jobs.submit(data, filename="bench", options={"task": "transcribe"},
                       callback_url=None).id for _ in range(count)]
    deadline = time.monotonic() + timeout
    while True:
        records = [jobs.records.get(job_id) for job_id in ids]
        if all(record.finished for record in records):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs did not finish in {timeout:.0f} s")
        time.sleep(0.2)
    failed = [record for record in records if record.status != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed: {failed[0].error}")
    return max(record.finished_at for record in records) - started, \
        {record.worker for record in records}


def _consume(celery, worker: str, on: bool) -> None:
    from app.jobs.celery_app import QUEUE

    destination = [f"{worker}@bench"]
    if on:
        celery.control.add_consumer(QUEUE, destination=destination, reply=True, timeout=5)
    else:
        celery.control.cancel_consumer(QUEUE, destination=destination, reply=True, timeout=5)


def _warm_up(jobs, data: bytes, timeout: float) -> None:
    """Run jobs until every worker's child has loaded the model and done one."""
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    seen: set[int] = set()
    while len(seen) < len(WORKER_NAMES):
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not all take a warm-up job")
        ids = [jobs.submit(data, filename="warmup", options={}, callback_url=None).id
               for _ in WORKER_NAMES]
        _wait_all(jobs, ids, timeout)
        seen |= {jobs.records.get(job_id).worker for job_id in ids}


def _wait_all(jobs, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(jobs.records.get(job_id).finished for job_id in ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs did not finish in {timeout:.0f} s")
        time.sleep(0.2)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from app.jobs.service import JobService
    from app.settings import Settings
    from app.transcription.audio import measure_audio

    data = args.audio.read_bytes()
    with args.audio.open("rb") as source:
        audio_seconds = measure_audio(source)
    folder = Path(tempfile.mkdtemp(prefix="amanuensis-bench-jobs-"))
    owned: list[subprocess.Popen] = []
    try:
        broker_url = args.broker_url
        if broker_url is None:
            redis, broker_url = _start_redis(folder)
            owned.append(redis)
        env = {**os.environ, "AMANUENSIS_BROKER_URL": broker_url,
               "AMANUENSIS_DATA_DIR": str(folder / "data"),
               "AMANUENSIS_CPU_THREADS": str(args.threads), "AMANUENSIS_MAX_CONCURRENT": "1"}
        env.pop("AMANUENSIS_DATABASE_URL", None)
        env.pop("AMANUENSIS_STORAGE_URL", None)
        settings = Settings(broker_url=broker_url, data_dir=folder / "data",
                            database_url=None, storage_url=None)
        jobs = JobService(settings, lambda: None, CollectorRegistry())
        owned.extend(_start_workers(env, folder))
        _warm_up(jobs, data, args.timeout)
        rates: dict[int, list[float]] = {1: [], 2: []}
        succeeded = 0
        for round_index in range(1, args.rounds + 1):
            for workers in (1, 2):
                _consume(jobs.celery, WORKER_NAMES[1], on=workers == 2)
                wall, used = _run_batch(jobs, data, args.jobs, args.timeout)
                succeeded += args.jobs
                rate = args.jobs * audio_seconds / wall
                rates[workers].append(rate)
                print(f"round={round_index} workers={workers} jobs={args.jobs} "
                      f"audio_s={args.jobs * audio_seconds:.1f} wall_s={wall:.2f} "
                      f"audio_hours_per_hour={rate:.2f} worker_processes={len(used)}",
                      flush=True)
        jobs.close()
    finally:
        _stop(owned)
        shutil.rmtree(folder, ignore_errors=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(json.dumps({
        "bench": "jobs", "model": settings.model_choice.id, "jobs": args.jobs, "rounds": args.rounds,
        "jobs_succeeded": succeeded, "audio_seconds_per_job": round(audio_seconds, 3), "threads_per_worker": args.threads,
        "audio_hours_per_hour_1_worker": round(one, 3),
        "audio_hours_per_hour_2_workers": round(two, 3),
        "scaling_ratio_2_vs_1": round(two / one, 3),
    }))
    return 0
