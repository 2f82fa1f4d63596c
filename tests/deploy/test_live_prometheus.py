"""The monitoring stack against a live service (the ``live_server`` fixture: a real uvicorn
subprocess with the tiny model): promtool accepts its /metrics, a real Prometheus scrapes it
with the project's scrape config, and every dashboard query runs against that Prometheus.
"""

import math
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from npu.audio_spec import SAMPLE_RATE
from tests.app.service_helpers import metric_samples_from_text
from tests.synth_media import tone, wav_pcm16

CLIP_SECONDS = 2.0
TRANSCRIPTIONS = 3
WAIT_SECONDS = 90  # deadline for Prometheus to catch up; a give-up point, not a speed claim
SCRAPE_INTERVAL = "1s"

pytestmark = pytest.mark.slow


def wav_clip(seconds: float = CLIP_SECONDS) -> bytes:
    """A 16 kHz mono 16-bit WAV of a quiet tone."""
    return wav_pcm16(tone(seconds, SAMPLE_RATE), SAMPLE_RATE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(base_url: str) -> str:
    response = httpx.get(f"{base_url}/metrics", timeout=30)
    response.raise_for_status()
    return response.text


def samples(metrics_text: str, name: str) -> dict[frozenset, float]:
    """{label set: value} for every sample called ``name`` in an exposition."""
    return {frozenset(labels): value
            for (sample_name, labels), value in metric_samples_from_text(metrics_text).items()
            if sample_name == name}


def transcribe_endpoint_label(metrics_text: str) -> str:
    """The ``endpoint`` label value the service gives POST /transcribe."""
    endpoints = {dict(labels)["endpoint"]
                 for labels in samples(metrics_text, "amanuensis_requests_total")}
    [label] = [e for e in endpoints if e.strip("/") == "transcribe"]
    return label


def prometheus_query(prometheus_url: str, expr: str, **params) -> list[dict]:
    """Result of an instant (or, with start/end/step, range) query; fails on a query error."""
    path = "query_range" if "step" in params else "query"
    response = httpx.get(f"{prometheus_url}/api/v1/{path}", params={"query": expr, **params},
                         timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def wait_for(description: str, condition) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {WAIT_SECONDS} s waiting for {description}")
        time.sleep(0.5)


def send_requests(base_url: str) -> None:
    """Transcriptions through both APIs, and one undecodable upload (an error to count)."""
    clip = wav_clip()
    with httpx.Client(base_url=base_url, timeout=300) as client:
        for _ in range(TRANSCRIPTIONS):
            response = client.post("/transcribe", files={"file": ("tone.wav", clip, "audio/wav")})
            assert response.status_code == 200, response.text
        response = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                               files={"file": ("tone.wav", clip, "audio/wav")})
        assert response.status_code == 200, response.text
        response = client.post("/transcribe",
                               files={"file": ("noise.wav", b"not audio" * 100, "audio/wav")})
        assert response.status_code == 415, response.text


@pytest.fixture
def prometheus(live_server, tools, repo_root, tmp_path):
    """A real Prometheus on a free loopback port, scraping the live service with the
    project's scrape config (target and interval rewritten); yields (url, start time)."""
    binary = tools.find("prometheus")
    config = yaml.safe_load((repo_root / "config/prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "amanuensis"]
    job["static_configs"] = [{"targets": [urlsplit(live_server).netloc]}]
    job["scrape_interval"] = SCRAPE_INTERVAL
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    started = time.time()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("Prometheus to become ready", lambda: ready(url, process, log_path))
        yield url, started
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ready(url: str, process: subprocess.Popen, log_path: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"Prometheus exited with {process.returncode}:\n{log_path.read_text()}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_promtool_accepts_live_metrics(live_server, tools):
    send_requests(live_server)
    result = subprocess.run([tools.find("promtool"), "check", "metrics"],
                            input=scrape(live_server), check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_reads_back_requests_and_realtime(live_server, prometheus):
    prometheus_url, _ = prometheus
    send_requests(live_server)
    exposition = scrape(live_server)
    endpoint = transcribe_endpoint_label(exposition)
    expected_ok = samples(exposition, "amanuensis_requests_total")[
        frozenset({("endpoint", endpoint), ("status", "200")})]
    assert expected_ok >= TRANSCRIPTIONS
    expected_realtime = sum(samples(exposition, "amanuensis_realtime_factor_count").values())
    expected_audio = sum(samples(exposition, "amanuensis_audio_seconds_total").values())
    assert expected_realtime >= TRANSCRIPTIONS + 1

    def value(expr: str) -> float | None:
        result = prometheus_query(prometheus_url, expr)
        return float(result[0]["value"][1]) if result else None

    requests_expr = f'amanuensis_requests_total{{endpoint="{endpoint}",status="200"}}'
    wait_for("the request counter in Prometheus", lambda: value(requests_expr) == expected_ok)
    wait_for("the x-realtime histogram in Prometheus",
             lambda: value("sum(amanuensis_realtime_factor_count)") == expected_realtime)
    assert math.isclose(value("sum(amanuensis_audio_seconds_total)"), expected_audio)
    realtime_sum = value("sum(amanuensis_realtime_factor_sum)")
    assert realtime_sum is not None and realtime_sum > 0


def test_every_dashboard_query_runs(live_server, prometheus, dashboard_queries, contract):
    prometheus_url, started = prometheus
    send_requests(live_server)
    exposition = scrape(live_server)
    expected_realtime = sum(samples(exposition, "amanuensis_realtime_factor_count").values())
    wait_for("Prometheus to scrape the requests", lambda: prometheus_query(
        prometheus_url, f"sum(amanuensis_realtime_factor_count) == {expected_realtime}"))
    time.sleep(3)  # a few more scrapes, so rate() has two samples after the last request

    exported = {line.split()[2] for line in exposition.splitlines()
                if line.startswith("# TYPE ")}
    for title, expr in dashboard_queries:
        for metric in contract.identifiers(expr)[1]:
            family = next(m for m in contract.metrics if metric in contract.series_names(m))
            assert family in exported, f"{title}: the service does not export {family}"
        for macro, value in contract.grafana_macros.items():
            expr = expr.replace(macro, value)
        result = prometheus_query(prometheus_url, expr, start=started, end=time.time(), step=1)
        if "amanuensis_mel_fallbacks_total" not in expr:  # none when the back-end never failed
            assert result, f"{title}: no data for {expr!r}"
