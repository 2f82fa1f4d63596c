"""Jobs in the embedded deployment: a real service process on the real tiny.en model, records
and files under its data directory, jobs run by the service itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.jobs.helpers import (
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


def test_cancel_while_running_stops_within_a_chunk(start_service, tmp_path):
    speech = tmp_path / "speech.flac"
    long_speech(speech, clips=10)
    server = _service(start_service, tmp_path / "data")
    job = submit(server.base_url, speech)
    running = wait_for_job(server.base_url, job["id"], running_with_progress)
    cancelled = httpx.delete(f"{server.base_url}/v1/jobs/{job['id']}").json()
    assert cancelled["status"] == "cancelled"
    assert not (tmp_path / "data" / "files" / job["id"]).exists()

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
