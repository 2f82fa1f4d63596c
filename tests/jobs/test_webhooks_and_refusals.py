"""Webhooks against a real receiver on loopback (answering, down, slow, 500), and submissions the
store cannot take (disk full, S3 unreachable): 503, nothing left behind, the service still up."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.jobs.webhooks import SIGNATURE_HEADER, WebhookPolicy, deliver
from app.service import create_app
from app.settings import Settings
from tests.app.service_helpers import metric_samples_from_text, sine_file
from tests.conftest import _free_port
from tests.jobs.conftest import S3_ENV, require

SECRET = "hook-secret"


def _policy(**overrides) -> WebhookPolicy:
    return WebhookPolicy(**{"secret": SECRET, "max_attempts": 3, "backoff_seconds": 0.5,
                            "timeout_seconds": 2.0, **overrides})


def test_delivery_is_signed_with_hmac_sha256_of_the_body(receiver):
    document = {"id": "job_1", "status": "succeeded"}
    delivery = deliver(receiver.url, document, _policy())
    assert (delivery.delivered, delivery.attempts) == (True, 1)
    [(headers, body)] = receiver.received
    assert json.loads(body) == document
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"


def test_no_signature_without_a_secret(receiver):
    deliver(receiver.url, {"id": "job_1"}, _policy(secret=None))
    [(headers, _)] = receiver.received
    assert SIGNATURE_HEADER not in headers


@pytest.mark.parametrize("status", [500, 404])
def test_a_refusing_receiver_gets_bounded_retries_with_backoff(receiver, status):
    receiver.status = status
    waits: list[float] = []
    delivery = deliver(receiver.url, {"id": "job_1"}, _policy(), sleep=waits.append)
    assert (delivery.delivered, delivery.attempts) == (False, 3)
    assert delivery.last_error == f"HTTP {status}"
    assert len(receiver.received) == 3
    assert waits == [0.5, 1.0]


def test_a_receiver_that_is_down():
    waits: list[float] = []
    delivery = deliver(f"http://127.0.0.1:{_free_port()}/hook", {"id": "job_1"}, _policy(),
                       sleep=waits.append)
    assert (delivery.delivered, delivery.attempts) == (False, 3)
    assert delivery.last_error.startswith("ConnectError")
    assert waits == [0.5, 1.0]


def test_a_slow_receiver_times_out(receiver):
    receiver.delay = 1.5
    delivery = deliver(receiver.url, {"id": "job_1"}, _policy(timeout_seconds=0.2,
                                                              max_attempts=2),
                       sleep=lambda _: None)
    assert (delivery.delivered, delivery.attempts) == (False, 2)
    assert "Timeout" in delivery.last_error
    assert len(receiver.received) == 2


def _settings(tiny_model_dir: Path, data_dir: Path, **overrides) -> Settings:
    return Settings(model=str(tiny_model_dir), mel_backend="cpu", warmup=False, cpu_threads=1,
                    data_dir=data_dir, **overrides)


def _wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 120
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready").text
        time.sleep(0.1)


def _wait_finished(client: TestClient, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running") \
            or (job["callback"] and job["callback"]["status"] == "pending"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


@pytest.mark.slow
def test_job_succeeds_when_its_webhook_fails(tiny_model_dir, tmp_path, receiver):
    receiver.status = 500
    settings = _settings(tiny_model_dir, tmp_path, webhook_allowed_hosts=["127.0.0.1"],
                         webhook_max_attempts=2, webhook_backoff_seconds=0.05,
                         webhook_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        _wait_ready(client)
        refused = client.post("/v1/jobs", files={"file": ("a.wav", sine_file("wav", "pcm_s16le"))},
                              data={"callback_url": "http://example.com/hook"})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "callback_host_not_allowed"
        job = client.post("/v1/jobs", files={"file": ("a.wav", sine_file("wav", "pcm_s16le"))},
                          data={"callback_url": receiver.url}).json()
        ended = _wait_finished(client, job["id"])
        metrics = metric_samples_from_text(client.get("/metrics").text)
    assert ended["status"] == "succeeded"
    assert ended["callback"] == {"url": receiver.url, "status": "failed", "attempts": 2}
    assert len(receiver.received) == 2
    assert json.loads(receiver.received[0][1])["status"] == "succeeded"
    assert metrics[("amanuensis_job_webhooks_total", (("outcome", "failed"),))] == 1
    assert metrics[("amanuensis_jobs_finished_total", (("status", "succeeded"),))] == 1
    assert metrics[("amanuensis_jobs", (("status", "succeeded"),))] == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real file system that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                             capture_output=True, check=False).returncode == 0
    require(mounted, "cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_disk_full_at_submit_is_503_and_leaves_nothing(tiny_model_dir, small_disk):
    big = sine_file("wav", "pcm_s16le", rate=48000, layout="stereo", seconds=8.0)
    assert len(big) > 1024 * 1024
    with TestClient(create_app(_settings(tiny_model_dir, small_disk))) as client:
        response = client.post("/v1/jobs", files={"file": ("big.wav", big)})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "job_store_unavailable"
        assert "No space left" in response.json()["error"]["message"]
        assert client.get("/v1/jobs").json()["data"] == []
        assert list((small_disk / "files").iterdir()) == []
        small = client.post("/v1/jobs", files={"file": ("a.wav", sine_file("wav", "pcm_s16le"))})
        assert small.status_code == 202


@pytest.mark.slow
def test_s3_store_down_at_submit_is_503_and_leaves_nothing(tiny_model_dir, tmp_path,
                                                           monkeypatch):
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    settings = _settings(tiny_model_dir, tmp_path, storage_url="s3://jobs/audio",
                         storage_endpoint_url=f"http://127.0.0.1:{_free_port()}")
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/jobs", files={"file": ("a.wav", sine_file("wav", "pcm_s16le"))})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "job_store_unavailable"
        assert client.get("/v1/jobs").json()["data"] == []
        assert client.get("/health").status_code == 200


def test_refusals_in_the_error_shape(tiny_model_dir, tmp_path):
    settings = _settings(tiny_model_dir, tmp_path, job_max_audio_seconds=0.5, api_key="k")
    with TestClient(create_app(settings)) as client:
        tone = sine_file("wav", "pcm_s16le", seconds=1.0)
        unauthenticated = client.post("/v1/jobs", files={"file": ("a.wav", tone)})
        assert unauthenticated.status_code == 401
        for path in ("/v1/jobs", "/v1/jobs/job_x", "/v1/jobs/job_x/result"):
            refused = client.get(path)
            assert (refused.status_code, refused.json()["error"]["type"]) == \
                (401, "authentication_error"), path
        assert client.delete("/v1/jobs/job_x").status_code == 401
        client.headers["Authorization"] = "Bearer k"
        too_long = client.post("/v1/jobs", files={"file": ("a.wav", tone)})
        assert too_long.status_code == 413
        assert too_long.json()["error"]["code"] == "audio_too_long"
        empty = client.post("/v1/jobs", files={"file": ("a.wav", b"")})
        assert (empty.status_code, empty.json()["error"]["code"]) == (400, "empty_audio")
        assert client.get("/v1/jobs/job_none/result").status_code == 404
        assert client.get("/v1/jobs", params={"status": "lost"}).status_code == 400
        assert client.get("/v1/jobs").json()["data"] == []
        assert not (tmp_path / "files").exists() or not list((tmp_path / "files").iterdir())
