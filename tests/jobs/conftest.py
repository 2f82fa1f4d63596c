"""Real servers on loopback for the job tests: redis-server and PostgreSQL from Debian's packages
(``scripts/install-system-packages.sh``), moto's S3 server from PyPI; each started by a fixture
and stopped after. A missing server skips its tests with the reason, and fails them under CI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, _free_port
from tests.jobs.helpers import Receiver

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_S = 60


def require(available: bool, reason: str) -> None:
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open:\n{log.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server is not installed (scripts/install-system-packages.sh)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    log = folder / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)], stdout=out, stderr=subprocess.STDOUT)
    _wait_for_port(port, process, log)
    yield f"redis://127.0.0.1:{port}/0"
    _stop(process)


def _as_postgres(command: list[str]) -> list[str]:
    """Run as the ``postgres`` user when root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    require((POSTGRES_BIN / "initdb").is_file(),
            "PostgreSQL is not installed (scripts/install-system-packages.sh)")
    # Not under pytest's temporary directory: that is private to root, and the server runs as
    # the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="amanuensis-postgres-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    subprocess.run(_as_postgres([str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "amanuensis",
                                 "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
    port = _free_port()
    log = folder / "postgres.log"
    with log.open("wb") as out:
        if os.geteuid() == 0:
            shutil.chown(log, "postgres")
        process = subprocess.Popen(_as_postgres(
            [str(POSTGRES_BIN / "postgres"), "-D", str(data), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}",
             "-c", "fsync=off"]), stdout=out, stderr=subprocess.STDOUT)
    _wait_for_port(port, process, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while subprocess.run([str(POSTGRES_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                         capture_output=True, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(log.read_text())
        time.sleep(0.1)
    subprocess.run([str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                    "amanuensis", "jobs"], check=True, capture_output=True)
    yield f"postgresql+psycopg://amanuensis@127.0.0.1:{port}/jobs"
    _stop(process)
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class S3Server:
    endpoint_url: str
    process: subprocess.Popen
    env: dict[str, str]

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")


S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3-compatible server on loopback."""
    pytest.importorskip("moto.server")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                    "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    _wait_for_port(port, process, log)
    server = S3Server(f"http://127.0.0.1:{port}", process, S3_ENV)
    yield server
    _stop(process)


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path
    name: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its child at once: a machine that died mid-job."""
        os.killpg(self.process.pid, 9)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``amanuensis worker`` processes (each in its own process group); stopped at the end."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str) -> WorkerProcess:
        log_path = tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", "from app.cli import main; main()", "worker",
                 "--hostname", f"{name}@localhost"],
                cwd=REPO_ROOT, env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(process, log_path, name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()




@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback (answering 200 unless told otherwise)."""
    server = Receiver()
    yield server
    server.close()
