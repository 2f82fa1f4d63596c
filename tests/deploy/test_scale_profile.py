"""The compose file's ``scale`` profile up for real on the private engine: the service, two
Celery workers, and stand-ins for the images it names that no registry can give here - Redis and
PostgreSQL from Debian's packages, moto's S3 server from PyPI for MinIO - each doing what the
named image does at start (the same command line, the same POSTGRES_* set-up). A job submitted
to the service runs on one of the workers, with a correct transcript, through Redis, PostgreSQL
and the S3 store.
"""

from __future__ import annotations

import os

import httpx
import pytest
import yaml

from tests.deploy.containers import build_image, compose_runner, port_is_free, wait_for
from tests.deploy.docker_engine import BASE_IMAGE
from tests.jobs.helpers import word_error_rate
from tests.speech import SPEECH_DIR, missing_speech

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

JFK = SPEECH_DIR / "jfk" / "jfk.flac"
WORKERS = 2
READY_TIMEOUT_S = 300
JOB_TIMEOUT_S = 300  # give-up points, not speed claims
SERVICES = ("amanuensis", "worker", "redis", "postgres", "minio")

REDIS_IMAGE = "amanuensis-test/redis:debian"
REDIS_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data && chown redis:redis /data
COPY entrypoint.sh /usr/local/bin/
WORKDIR /data
USER redis
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["redis-server"]
"""
# As redis's own image does: with no configuration file, accept other containers' connections.
REDIS_ENTRYPOINT = """\
#!/bin/sh
if [ "$1" = redis-server ]; then shift; set -- redis-server --protected-mode no "$@"; fi
exec "$@"
"""

POSTGRES_IMAGE = "amanuensis-test/postgres:debian"
POSTGRES_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN mkdir -p /etc/postgresql-common \\
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \\
 && apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /var/lib/postgresql/data /run/postgresql \\
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY entrypoint.sh /usr/local/bin/
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
"""
# As postgres's own image does: on an empty data volume, create the cluster with POSTGRES_USER
# and POSTGRES_PASSWORD (password logins from the network) and the database POSTGRES_DB.
POSTGRES_ENTRYPOINT = """\
#!/bin/sh
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\\n' "$POSTGRES_PASSWORD" > /tmp/password
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/password -E UTF8 \\
    --auth-local=trust --auth-host=scram-sha-256
  rm /tmp/password
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  createdb -U "$POSTGRES_USER" "$POSTGRES_DB"
  pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
"""

S3_IMAGE = "amanuensis-test/s3:moto"
S3_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY constraints.txt /tmp/
RUN --mount=type=secret,id=ca_bundle \\
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \\
 && python3 -m venv /opt/moto \\
 && /opt/moto/bin/pip install --no-cache-dir -c /tmp/constraints.txt "moto[server]"
USER nobody
ENTRYPOINT ["/opt/moto/bin/python", "-m", "moto.server"]
"""

# The only changes to the product's compose file: images that can exist here, and moto's
# command line in MinIO's place (it keeps MinIO's port; any credentials are accepted).
COMPOSE_OVERRIDE = {"services": {
    "redis": {"image": REDIS_IMAGE},
    "postgres": {"image": POSTGRES_IMAGE},
    "minio": {"image": S3_IMAGE, "command": ["-H", "0.0.0.0", "-p", "9000"]},
}}


@pytest.fixture(scope="module")
def stand_in_images(engine, repo_root, tmp_path_factory, deploy_report) -> None:
    folder = tmp_path_factory.mktemp("stand-ins")
    builds = ((REDIS_IMAGE, REDIS_DOCKERFILE, {"entrypoint.sh": REDIS_ENTRYPOINT}),
              (POSTGRES_IMAGE, POSTGRES_DOCKERFILE, {"entrypoint.sh": POSTGRES_ENTRYPOINT}),
              (S3_IMAGE, S3_DOCKERFILE,
               {"constraints.txt": (repo_root / "constraints.txt").read_text()}))
    for tag, dockerfile, files in builds:
        seconds = build_image(engine, folder / tag.split("/")[1].split(":")[0], tag,
                              dockerfile, files)
        deploy_report(f"{tag} build: {seconds:.0f} s")


@pytest.fixture(scope="module")
def scale_stack(engine, service_image, stand_in_images, repo_root, tools, tmp_path_factory,
                deploy_report):
    """``docker-compose --profile scale up --scale worker=2``; yields (service URL, compose)."""
    if not port_is_free(8000):
        pytest.fail("port 8000, which docker-compose.yml publishes, is in use on this host")
    override = tmp_path_factory.mktemp("scale-compose") / "docker-compose.override.yml"
    override.write_text(yaml.safe_dump(COMPOSE_OVERRIDE))
    compose = compose_runner(engine, tools.find("docker-compose"),
                             f"amanuensis-scale-{os.getpid()}", repo_root, override,
                             env={"JOBS": "scale"})
    compose("--profile", "scale", "up", "-d", "--no-build", "--scale", f"worker={WORKERS}",
            *SERVICES)
    try:
        base_url = "http://127.0.0.1:8000"
        wait_for("/ready under the scale profile", READY_TIMEOUT_S,
                 lambda: httpx.get(f"{base_url}/ready", timeout=5).status_code == 200,
                 lambda: compose("logs", "--tail", "60", check=False).stdout)
        yield base_url, compose
    finally:
        compose("down", "-v", "--remove-orphans", check=False)


def _workers(engine, compose) -> dict[str, dict]:
    """Each worker container's configuration, by host name."""
    ids = compose("--profile", "scale", "ps", "-q", "worker").stdout.split()
    configs = [yaml.safe_load(engine.docker("inspect", "--format", "{{json .Config}}",
                                            container).stdout) for container in ids]
    return {config["Hostname"]: config for config in configs}


def test_a_job_runs_on_a_worker_of_the_scale_profile(engine, scale_stack):
    if not JFK.exists():
        missing_speech(f"the shared JFK clip is not at {JFK}")
    base_url, compose = scale_stack
    workers = _workers(engine, compose)
    assert len(workers) == WORKERS, compose("ps", check=False).stdout
    # Not the image's check of the service's /health, which a worker would fail forever.
    assert all(config["Healthcheck"]["Test"] == ["NONE"] for config in workers.values()), workers
    with JFK.open("rb") as audio:
        submitted = httpx.post(f"{base_url}/v1/jobs", files={"file": (JFK.name, audio)},
                               timeout=60)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    def ended():
        job = httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=10).json()
        return job["status"] not in ("queued", "running") and job

    job = wait_for(f"job {job_id} finished", JOB_TIMEOUT_S, ended,
                   lambda: compose("logs", "--tail", "60", check=False).stdout)
    assert job["status"] == "succeeded", (job, compose("logs", "--tail", "60", check=False).stdout)
    assert job["worker"].rsplit(":", 1)[0] in workers, (job["worker"], workers)
    text = httpx.get(f"{base_url}/v1/jobs/{job_id}/result", timeout=30).json()["text"]
    assert word_error_rate(JFK.with_suffix(".txt").read_text(), text) < 0.15, text
    status = httpx.get(f"{base_url}/status", timeout=10).json()
    assert status["ready"] is True, status
