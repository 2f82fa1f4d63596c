"""Jobs on Celery workers: a real redis-server broker, PostgreSQL records, moto's S3 store, two
``amanuensis worker`` processes on the real tiny.en model, and a service that only submits; and a
message the broker lost, sent again by the service."""

from __future__ import annotations

import os
import time

import httpx
import pytest
import redis

from app.jobs.celery_app import QUEUE
from tests.app.service_helpers import metric_value
from tests.jobs.helpers import (
    finished,
    real_model_env,
    require_speech,
    submit,
    wait_for_job,
    word_error_rate,
)
from tests.speech import SPEECH_DIR

JFK = SPEECH_DIR / "jfk" / "jfk.flac"

BUCKET = "amanuensis-jobs"
VISIBILITY_SECONDS = 4
JOB_DRAIN_S = 300
pytestmark = pytest.mark.slow


@pytest.fixture
def scale_env(redis_url, postgres_url, s3_server) -> dict[str, str]:
    require_speech()
    s3_server.client().create_bucket(Bucket=BUCKET)
    return {
        **real_model_env(), **s3_server.env,
        "AMANUENSIS_BROKER_URL": redis_url,
        "AMANUENSIS_DATABASE_URL": postgres_url,
        "AMANUENSIS_STORAGE_URL": f"s3://{BUCKET}/jobs",
        "AMANUENSIS_STORAGE_ENDPOINT_URL": s3_server.endpoint_url,
        "AMANUENSIS_JOB_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_SECONDS),
    }


def test_sigkilled_worker_job_finishes_on_the_other(scale_env, start_service, start_worker,
                                                    s3_server):
    service = start_service(scale_env)
    workers = [start_worker(scale_env, name) for name in ("one", "two")]
    job = submit(service.base_url, JFK)

    running = wait_for_job(service.base_url, job["id"], lambda job: job["status"] == "running")
    child_pid = int(running["worker"].rsplit(":", 1)[1])
    [victim] = [w for w in workers if os.getpgid(child_pid) == w.process.pid]
    [survivor] = [w for w in workers if w is not victim]
    victim.kill()

    done = wait_for_job(service.base_url, job["id"], finished)
    assert done["status"] == "succeeded", (done, survivor.log())
    assert done["attempts"] == 2
    assert os.getpgid(int(done["worker"].rsplit(":", 1)[1])) == survivor.process.pid
    text = httpx.get(f"{service.base_url}/v1/jobs/{job['id']}/result", timeout=30).json()["text"]
    assert word_error_rate(JFK.with_suffix(".txt").read_text(), text) < 0.15
    stored = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{job['id']}/")
    assert sorted(item["Key"] for item in stored["Contents"]) == [
        f"jobs/{job['id']}/audio", f"jobs/{job['id']}/result.json"]

    httpx.delete(f"{service.base_url}/v1/jobs/{job['id']}", timeout=30)
    stored = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{job['id']}/")
    assert "Contents" not in stored


def _redispatches(base_url: str) -> float:
    return metric_value(httpx.get(f"{base_url}/metrics", timeout=10).text,
                        "amanuensis_job_redispatches_total")


def test_a_lost_message_is_sent_again_and_the_job_runs_once(redis_url, start_service,
                                                             start_worker, tmp_path):
    """The broker loses a job's message: the service sends it again, and once more while no
    worker takes it (a duplicate); the worker that comes up runs the job once and drops the
    duplicate. Records and files on SQLite and a directory both processes share."""
    require_speech()
    broker_url = redis_url.rsplit("/", 1)[0] + "/3"  # a database of its own on the one server
    broker = redis.Redis.from_url(broker_url)
    broker.flushdb()
    env = {**real_model_env(), "AMANUENSIS_BROKER_URL": broker_url,
           "AMANUENSIS_DATA_DIR": str(tmp_path / "data"),
           "AMANUENSIS_JOB_REDISPATCH_SECONDS": "1"}
    service = start_service(env)
    job = submit(service.base_url, JFK)
    assert broker.llen(QUEUE) == 1
    broker.delete(QUEUE)
    deadline = time.monotonic() + 60
    while _redispatches(service.base_url) < 2:
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.2)
    assert broker.llen(QUEUE) >= 2
    assert httpx.get(f"{service.base_url}/v1/jobs/{job['id']}").json()["status"] == "queued"

    worker = start_worker(env, "late")
    done = wait_for_job(service.base_url, job["id"], finished)
    assert (done["status"], done["attempts"]) == ("succeeded", 1), (done, worker.log())
    text = httpx.get(f"{service.base_url}/v1/jobs/{job['id']}/result", timeout=30).json()["text"]
    assert word_error_rate(JFK.with_suffix(".txt").read_text(), text) < 0.15
    deadline = time.monotonic() + JOB_DRAIN_S
    while broker.llen(QUEUE) or broker.hlen("unacked"):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)
    sent = 1 + _redispatches(service.base_url)
    log = worker.log()
    assert log.count("'ran'") == 1, log
    assert log.count("'already_finished'") == sent - 2, log  # the lost one never arrived
    assert httpx.get(f"{service.base_url}/v1/jobs/{job['id']}").json()["attempts"] == 1
