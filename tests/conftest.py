"""Suite-wide fixtures: a tiny random-weights model and a real service process serving it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.transcription.tiny_model import TinyModels, write_tiny_models

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_START_TIMEOUT_S = 180


@pytest.fixture(scope="session", autouse=True)
def job_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every app and service process a test starts keeps its job records and files in a
    temporary directory (``AMANUENSIS_DATA_DIR``), never in the working tree."""
    data_dir = tmp_path_factory.mktemp("job-data")
    previous = os.environ.get("AMANUENSIS_DATA_DIR")
    os.environ["AMANUENSIS_DATA_DIR"] = str(data_dir)
    yield data_dir
    if previous is None:
        os.environ.pop("AMANUENSIS_DATA_DIR", None)
    else:
        os.environ["AMANUENSIS_DATA_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Random-weights Whisper (CTranslate2), wav2vec2 aligner and Punkt tables, generated once."""
    return write_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_models: TinyModels) -> Path:
    """The tiny CTranslate2 Whisper model directory."""
    return tiny_models.whisper


@pytest.fixture(scope="session")
def tiny_env(tiny_models: TinyModels) -> dict[str, str]:
    """Environment for a service process on the tiny models, fully offline."""
    return {
        "AMANUENSIS_MODEL": str(tiny_models.whisper),
        "AMANUENSIS_ALIGN_MODEL": str(tiny_models.aligner),
        "AMANUENSIS_MEL_BACKEND": "cpu",
        "AMANUENSIS_CPU_THREADS": "2",
        "AMANUENSIS_BATCH_SIZE": "4",
        "AMANUENSIS_MAX_UPLOAD_BYTES": str(4_000_000),
        "NLTK_DATA": str(tiny_models.nltk_data),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


@dataclass
class ServiceProcess:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(server: ServiceProcess, path: str, status: int | None) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"service exited with {server.process.returncode}:\n{server.log()}")
        try:
            response = httpx.get(server.base_url + path, timeout=5)
            if status is None or response.status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not answer {status} in {SERVER_START_TIMEOUT_S} s:\n{server.log()}")


@pytest.fixture(scope="session")
def start_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServiceProcess]]:
    """Start real ``uvicorn --factory app.service:create_app`` processes; all stopped at the end.

    ``start_service(env, wait_ready=True)`` returns once ``/health`` answers (and ``/ready``
    says 200 when ``wait_ready``).
    """
    started: list[ServiceProcess] = []

    def start(env: dict[str, str], *, wait_ready: bool = True) -> ServiceProcess:
        port = _free_port()
        log_path = tmp_path_factory.mktemp("service") / "service.log"
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "app.service:create_app",
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            )
        server = ServiceProcess(f"http://127.0.0.1:{port}", process, log_path)
        started.append(server)
        _wait_for(server, "/health", 200)
        if wait_ready:
            _wait_for(server, "/ready", 200)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def live_service(start_service, tiny_env: dict[str, str]) -> ServiceProcess:
    """One service process on the tiny models for the whole session."""
    return start_service(tiny_env)


@pytest.fixture(scope="session")
def live_server(live_service: ServiceProcess) -> str:
    """Base URL of a real uvicorn process serving the tiny model (ready)."""
    return live_service.base_url
