"""What the tests that run containers share: free ports, waiting for a probe, container logs,
building a small image from a Dockerfile text, and docker-compose aimed at the private engine."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

COMPOSE_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_for(description: str, timeout: float, probe, on_timeout=lambda: ""):
    """Polls ``probe()`` until it returns something truthy; fails with ``on_timeout()``'s text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"{description} not reached within {timeout:.0f} s\n{on_timeout()}")


def container_logs(engine, name: str) -> str:
    result = engine.docker("logs", "--tail", "80", name, check=False)
    return result.stdout[-6000:] + result.stderr[-6000:]


def build_image(engine, context: Path, tag: str, dockerfile: str,
                files: dict[str, str] | None = None) -> float:
    """Build ``tag`` from ``dockerfile`` (text) with ``files`` (name: text, made executable)
    in ``context``; the seconds it took."""
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (context / name).write_text(text)
        (context / name).chmod(0o755)
    engine.ensure_base_image()
    return engine.build(context, tag)


def compose_runner(engine, docker_compose: str, project: str, repo_root: Path, override: Path,
            env: dict[str, str] | None = None) -> Callable[..., subprocess.CompletedProcess]:
    """``compose(*args, check=True)``: docker-compose on the product's compose file and
    ``override``, as project ``project``, against the private engine."""
    command = [docker_compose, "-p", project, "--project-directory", str(repo_root),
               "-f", str(repo_root / "docker-compose.yml"), "-f", str(override)]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(command + list(args), env={**engine.env, **(env or {})},
                                capture_output=True, text=True, timeout=COMPOSE_TIMEOUT_S,
                                check=False)
        assert not check or result.returncode == 0, result.stdout + result.stderr
        return result

    return run
