"""A private Docker engine for the image tests, and the images that can exist without a registry.

The daemon is Debian's ``dockerd`` (package ``docker.io``) with its own socket, exec root and pid
file in a temporary folder, no iptables and no default bridge; it is stopped when the tests end.
Its data root (images and the build cache) lives under ``CACHE_ROOT``, kept between runs on the
same machine and held under an exclusive lock while a run uses it, so a second run rebuilds only
what changed. The client is Debian's ``/usr/bin/docker``: it speaks BuildKit to this daemon
without the buildx plugin, which a newer client on PATH would require.

No registry is reachable here, so the base image is a Debian 12 root file system made by
``debootstrap --variant=minbase bookworm`` and ``docker import``-ed; containers and builds use
the host's network (``--network host``) and pip is handed the host's CA bundle as the build
secret ``ca_bundle``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("AMANUENSIS_DOCKER_CACHE", "/var/cache/amanuensis-docker"))
DOCKER_CLIENT = Path("/usr/bin/docker")
STORAGE_DRIVERS = ("overlay2", "vfs")
BASE_IMAGE = "amanuensis-test/debian:bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DAEMON_START_TIMEOUT_S = 60
BUILD_CACHE_KEEP = "20GB"


class EngineUnavailable(RuntimeError):
    """This machine cannot run the private engine; the message says why."""


def missing_prerequisites() -> list[str]:
    """What is missing to start the engine here (empty when it can start)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (dockerd and debootstrap need it)")
    for tool, package in (("dockerd", "docker.io"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    if not DOCKER_CLIENT.exists():
        missing.append(f"{DOCKER_CLIENT} (Debian package docker.io)")
    return missing


@dataclass
class DockerEngine:
    """A running private dockerd and the client commands that talk to it."""

    run_dir: Path
    storage_driver: str
    process: subprocess.Popen
    lock_file: object
    log_path: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"unix://{self.run_dir / 'docker.sock'}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for docker clients (docker, docker-compose) aimed at this daemon."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1",
                "COMPOSE_DOCKER_CLI_BUILD": "1"}

    def docker(self, *args: str, timeout: float = 600, check: bool = True,
               **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([str(DOCKER_CLIENT), *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout, check=False, **kwargs)
        if check and result.returncode:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)

    def build(self, context: Path, tag: str, *, dockerfile: Path | None = None,
              build_args: dict[str, str] | None = None, timeout: float = 3600) -> float:
        """``docker build`` with BuildKit on the host network; returns the seconds it took."""
        args = ["build", "--network", "host", "--progress", "plain", "-t", tag]
        if HOST_CA_BUNDLE.exists():
            args += ["--secret", f"id=ca_bundle,src={HOST_CA_BUNDLE}"]
        for name, value in (build_args or {}).items():
            args += ["--build-arg", f"{name}={value}"]
        if dockerfile is not None:
            args += ["-f", str(dockerfile)]
        started = time.monotonic()
        log_path = self.run_dir / f"build-{tag.replace('/', '_').replace(':', '_')}.log"
        with log_path.open("w") as log:
            result = subprocess.run([str(DOCKER_CLIENT), *args, str(context)], env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                    check=False)
        if result.returncode:
            raise AssertionError(f"docker build of {tag} failed:\n{log_path.read_text()[-6000:]}")
        seconds = time.monotonic() - started
        self.prune()
        return seconds

    def prune(self) -> None:
        """Drop the images a rebuild left untagged and keep the build cache bounded, so the
        cached data root does not grow with every run."""
        self.docker("image", "prune", "-f")
        self.docker("builder", "prune", "-f", "--keep-storage", BUILD_CACHE_KEEP)

    def ensure_base_image(self) -> None:
        """The Debian 12 base image, made with debootstrap unless the cached data root has it."""
        if self.has_image(BASE_IMAGE):
            return
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="amanuensis-rootfs-") as rootfs:
            subprocess.run(["debootstrap", "--variant=minbase",
                            f"--include={','.join(BASE_PACKAGES)}", "bookworm", rootfs,
                            DEBIAN_MIRROR], check=True, capture_output=True, timeout=1200)
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            subprocess.run([str(DOCKER_CLIENT), "import", "-", BASE_IMAGE], stdin=tar.stdout,
                           env=self.env, check=True, capture_output=True, timeout=600)
            tar.stdout.close()
            assert tar.wait() == 0
        self.timings["base_image_s"] = time.monotonic() - started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _remove_run_dir(self.run_dir)
        fcntl.flock(self.lock_file, fcntl.LOCK_UN)
        self.lock_file.close()


def _remove_run_dir(run_dir: Path) -> None:
    """Unmount what the daemon left mounted there (its network namespace file), then delete."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{run_dir}/")), reverse=True):
        subprocess.run(["umount", point], check=False, capture_output=True, timeout=60)
    shutil.rmtree(run_dir)


def _start_daemon(run_dir: Path, driver: str, log_path: Path) -> subprocess.Popen:
    data_root = CACHE_ROOT / driver
    data_root.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        return subprocess.Popen(
            ["dockerd", "--host", f"unix://{run_dir / 'docker.sock'}",
             "--data-root", str(data_root), "--exec-root", str(run_dir / "exec"),
             "--pidfile", str(run_dir / "docker.pid"), "--storage-driver", driver,
             "--iptables=false", "--bridge=none"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_until_serving(engine: DockerEngine) -> bool:
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            return False
        info = engine.docker("info", "--format", "{{json .Driver}}", check=False, timeout=30)
        if info.returncode == 0:
            return json.loads(info.stdout) == engine.storage_driver
        time.sleep(0.5)
    return False


def start_engine() -> DockerEngine:
    """Start the private daemon: overlay2 where the kernel allows it (much faster), else vfs."""
    missing = missing_prerequisites()
    if missing:
        raise EngineUnavailable("cannot start a private dockerd: missing " + ", ".join(missing))
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    lock_file = (CACHE_ROOT / "lock").open("w")
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    # Short path: a unix socket's path is limited to 108 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="amdk-", dir="/tmp"))
    failures = []
    for driver in STORAGE_DRIVERS:
        log_path = run_dir / f"dockerd-{driver}.log"
        engine = DockerEngine(run_dir, driver, _start_daemon(run_dir, driver, log_path),
                              lock_file, log_path)
        if _wait_until_serving(engine):
            return engine
        engine.process.terminate()
        engine.process.wait(timeout=60)
        failures.append(f"{driver}: {log_path.read_text()[-1500:]}")
    _remove_run_dir(run_dir)
    fcntl.flock(lock_file, fcntl.LOCK_UN)
    lock_file.close()
    raise EngineUnavailable("dockerd did not start:\n" + "\n".join(failures))
