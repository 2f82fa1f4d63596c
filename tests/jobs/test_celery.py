"""Jobs on Celery workers: a real redis-server broker, PostgreSQL records, moto's S3 store, two
``amanuensis worker`` processes on the real tiny.en model, and a service that only submits."""

from __future__ import annotations

import os

import httpx
import pytest

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
