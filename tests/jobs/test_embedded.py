"""Jobs in the embedded deployment: a real service process on the real tiny.en model, records
and files under its data directory, jobs run by the service itself."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.jobs.webhooks import SIGNATURE_HEADER
from tests.app.service_helpers import metric_value
from tests.conftest import REPO_ROOT
from tests.jobs.helpers import (
    JOB_TIMEOUT_S,
    finished,
    long_speech,
    real_model_env,
    running_with_progress,
    submit,
    wait_for_job,
    word_error_rate,
)
from tests.speech import SPEECH_DIR

JFK = SPEECH_DIR / "jfk" / "jfk.flac"
JFK_TEXT = (SPEECH_DIR / "jfk" / "jfk.txt").read_text() if JFK.is_file() else ""
CHUNK_SECONDS = 30.0
"""The most audio one chunk holds (WhisperX merges VAD segments up to Whisper's 30 s window)."""
SECRET = "hook-secret"
pytestmark = pytest.mark.slow


def _service(start_service, data_dir: Path, **extra: str):
    return start_service({**real_model_env(), "AMANUENSIS_DATA_DIR": str(data_dir), **extra})


def _cli(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; raise SystemExit(main())", *args[:1],
         "--url", server.base_url, *args[1:]],
        capture_output=True, text=True, check=check, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_job_round_trip_in_every_format(start_service, tmp_path):
    server = _service(start_service, tmp_path / "data")
    with JFK.open("rb") as audio:
        response = httpx.post(f"{server.base_url}/v1/jobs", files={"file": ("jfk.flac", audio)},
                              timeout=60)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"

    done = wait_for_job(server.base_url, job["id"], finished)
    assert done["status"] == "succeeded", done
    assert done["progress"]["audio_seconds"] == done["progress"]["total_seconds"]
    assert abs(done["progress"]["total_seconds"] - 11.0) < 0.1

    result = lambda fmt: httpx.get(f"{server.base_url}/v1/jobs/{job['id']}/result",
                                   params={"response_format": fmt}, timeout=30)
    text = result("json").json()["text"]
    assert word_error_rate(JFK_TEXT, text) < 0.15
    assert result("text").text.strip() == text
    assert result("srt").text.startswith("1\n00:00:")
    assert result("vtt").text.startswith("WEBVTT")
    verbose = result("verbose_json").json()
    assert verbose["language"] == "english" and verbose["segments"]
    with JFK.open("rb") as audio:
        sync = httpx.post(f"{server.base_url}/v1/audio/transcriptions",
                          files={"file": ("jfk.flac", audio)}, timeout=120).json()
    assert sync["text"] == text

    listed = httpx.get(f"{server.base_url}/v1/jobs", params={"status": "succeeded"}).json()
    assert [entry["id"] for entry in listed["data"]] == [job["id"]]

    assert _cli(server, "jobs", "result", job["id"], "--format", "srt").stdout == \
        result("srt").text
    status = json.loads(_cli(server, "jobs", "status", job["id"]).stdout)
    assert (status["id"], status["status"]) == (job["id"], "succeeded")
    missing = _cli(server, "jobs", "status", "job_missing", check=False)
    assert missing.returncode == 1 and "404" in missing.stderr
    submitted = _cli(server, "jobs", "submit", str(JFK), "--wait")
    second_id = submitted.stdout.strip()
    assert httpx.get(f"{server.base_url}/v1/jobs/{second_id}").json()["status"] == "succeeded"
    assert "100%" in submitted.stderr
    httpx.delete(f"{server.base_url}/v1/jobs/{second_id}")
    files = tmp_path / "data" / "files" / job["id"]
    assert sorted(p.name for p in files.iterdir()) == ["audio", "result.json"]
    assert httpx.delete(f"{server.base_url}/v1/jobs/{job['id']}").status_code == 200
    assert not files.exists()
    assert httpx.get(f"{server.base_url}/v1/jobs/{job['id']}").status_code == 404


def test_restart_with_jobs_queued_and_one_running(start_service, tmp_path):
    """SIGKILL the service mid-job: the next process on the same data directory runs every job
    to its end, the interrupted one again from the start; none lost, none twice."""
    data_dir = tmp_path / "data"
    first = _service(start_service, data_dir)
    submitted = [submit(first.base_url, JFK) for _ in range(3)]
    wait_for_job(first.base_url, submitted[0]["id"], lambda job: job["status"] == "running")
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()

    second = _service(start_service, data_dir)
    ended = [wait_for_job(second.base_url, job["id"], finished) for job in submitted]
    assert [job["status"] for job in ended] == ["succeeded"] * 3
    assert [job["attempts"] for job in ended] == [2, 1, 1]
    listed = httpx.get(f"{second.base_url}/v1/jobs", params={"limit": 100}).json()["data"]
    assert sorted(job["id"] for job in listed) == sorted(job["id"] for job in submitted)
    for job in submitted:
        text = httpx.get(f"{second.base_url}/v1/jobs/{job['id']}/result").json()["text"]
        assert word_error_rate(JFK_TEXT, text) < 0.15


def _signed(headers: dict, body: bytes) -> bool:
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return headers[SIGNATURE_HEADER] == f"sha256={expected}"


def test_cancel_while_running_stops_within_a_chunk(start_service, tmp_path, receiver):
    """Cancel a running and a queued job: the running one stops within a chunk, both lose their
    files, and each one's webhook gets its cancelled document, signed."""
    speech = tmp_path / "speech.flac"
    long_speech(speech, clips=10)
    server = _service(start_service, tmp_path / "data", AMANUENSIS_WEBHOOK_SECRET=SECRET,
                      AMANUENSIS_WEBHOOK_ALLOWED_HOSTS='["127.0.0.1"]')
    job = submit(server.base_url, speech, callback_url=receiver.url)
    running = wait_for_job(server.base_url, job["id"], running_with_progress)
    waiting = submit(server.base_url, speech, callback_url=receiver.url)
    assert httpx.get(f"{server.base_url}/v1/jobs/{waiting['id']}").json()["status"] == "queued"
    unqueued = httpx.delete(f"{server.base_url}/v1/jobs/{waiting['id']}").json()
    assert unqueued["status"] == "cancelled"
    cancelled = httpx.delete(f"{server.base_url}/v1/jobs/{job['id']}").json()
    assert cancelled["status"] == "cancelled"
    assert not (tmp_path / "data" / "files" / job["id"]).exists()
    assert not (tmp_path / "data" / "files" / waiting["id"]).exists()

    follower = submit(server.base_url, JFK)
    assert wait_for_job(server.base_url, follower["id"], finished)["status"] == "succeeded"
    after = httpx.get(f"{server.base_url}/v1/jobs/{job['id']}").json()
    assert after["status"] == "cancelled"
    # The worker records how far it got when it noticed: at most one chunk past the cancel.
    stopped_at = after["progress"]["audio_seconds"]
    assert running["progress"]["audio_seconds"] <= cancelled["progress"]["audio_seconds"]
    assert cancelled["progress"]["audio_seconds"] <= stopped_at
    assert stopped_at - cancelled["progress"]["audio_seconds"] <= CHUNK_SECONDS
    assert stopped_at < after["progress"]["total_seconds"]
    assert httpx.get(f"{server.base_url}/v1/jobs/{job['id']}/result").status_code == 409

    for cancelled_id in (job["id"], waiting["id"]):
        wait_for_job(server.base_url, cancelled_id,
                     lambda ended: ended["callback"]["status"] != "pending")
    hooks = {json.loads(body)["id"]: (headers, json.loads(body))
             for headers, body in receiver.received}
    assert sorted(hooks) == sorted([job["id"], waiting["id"]])
    for headers, body in receiver.received:
        assert _signed(headers, body)
    assert hooks[job["id"]][1]["status"] == hooks[waiting["id"]][1]["status"] == "cancelled"
    assert hooks[job["id"]][1]["started_at"] is not None
    assert hooks[waiting["id"]][1]["started_at"] is None
    for cancelled_id in (job["id"], waiting["id"]):
        assert httpx.get(f"{server.base_url}/v1/jobs/{cancelled_id}").json()["callback"] == \
            {"url": receiver.url, "status": "delivered", "attempts": 1}
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert metric_value(metrics, "amanuensis_jobs_finished_total", {"status": "cancelled"}) == 2


def _transcribe_now(server) -> httpx.Response:
    with JFK.open("rb") as audio:
        return httpx.post(f"{server.base_url}/v1/audio/transcriptions",
                          files={"file": ("jfk.flac", audio)}, timeout=120)


def _slots_held(server) -> int:
    return httpx.get(f"{server.base_url}/status").json()["concurrency"]["running"]


def test_a_running_job_holds_an_admission_slot(start_service, tmp_path):
    """With one slot and no queue, a synchronous request while a job transcribes is refused
    (the job holds the slot, it does not run beside it); the slot is free again once the job is
    cancelled, and after a job that succeeds."""
    speech = tmp_path / "speech.flac"
    long_speech(speech, clips=20)  # outlasts the requests below; cancelled
    server = _service(start_service, tmp_path / "data", AMANUENSIS_MAX_QUEUE="0")
    assert _slots_held(server) == 0
    job = submit(server.base_url, speech)
    wait_for_job(server.base_url, job["id"], running_with_progress)
    assert _slots_held(server) == 1
    refused = _transcribe_now(server)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "queue_full")

    httpx.delete(f"{server.base_url}/v1/jobs/{job['id']}")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (answer := _transcribe_now(server)).status_code == 429:  # until its next chunk ends
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert answer.status_code == 200
    assert word_error_rate(JFK_TEXT, answer.json()["text"]) < 0.15

    follower = submit(server.base_url, JFK)
    assert wait_for_job(server.base_url, follower["id"], finished)["status"] == "succeeded"
    assert _slots_held(server) == 0
    assert _transcribe_now(server).status_code == 200
