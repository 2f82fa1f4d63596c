"""``amanuensis bench load`` against a real loopback HTTP server whose answers the test scripts."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import REGISTRY, generate_latest

from app.cli import main
from app.cli.bench_load import is_loopback_url, percentile_ms

CLIENTS = 5
WARMUP_BURSTS = 2
WARMUP = CLIENTS * WARMUP_BURSTS  # requests the warm-up sends


def scripted_status(index: int) -> int:
    """Warm-up requests succeed; afterwards every 4th is refused and every 10th fails."""
    if index < WARMUP:
        return 200
    if index % 10 == 0:
        return 503
    if index % 4 == 0:
        return 429
    return 200


def make_scripted_app(sent: Counter, lock: threading.Lock, scripted_status=scripted_status,
                      retry_after: str = "1") -> FastAPI:
    app = FastAPI()
    counter = {"next": 0}

    @app.post("/v1/audio/transcriptions")
    async def transcribe(request: Request):
        form = await request.form()
        assert form["file"].filename == "tone.wav"
        with lock:
            index = counter["next"]
            counter["next"] += 1
            status = scripted_status(index)
            sent[status] += 1
        headers = {"Retry-After": retry_after} if status == 429 else {}
        return JSONResponse({"text": ""}, status_code=status, headers=headers)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(REGISTRY).decode())

    return app


@pytest.fixture
def scripted_server(request):
    sent: Counter = Counter()
    lock = threading.Lock()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        make_scripted_app(sent, lock, **getattr(request, "param", {})),
        host="127.0.0.1", port=port, log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started, "scripted server did not start"
    yield f"http://127.0.0.1:{port}", sent
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_bench_load_counts_every_answer_and_ends_with_json(scripted_server, capsys):
    url, sent = scripted_server
    requests = 60
    code = main(
        [
            "bench", "load", "--clients", str(CLIENTS), "--requests", str(requests),
            "--url", url, "--warmup", str(WARMUP_BURSTS), "--retries", "0",
        ]
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    expected = Counter(scripted_status(i) for i in range(WARMUP, WARMUP + requests))
    assert sum(sent.values()) == WARMUP + requests
    assert report["requests"] == report["answered"] == requests
    assert report["unanswered"] == 0
    assert report["ok"] == expected[200]
    assert report["rejected_429"] == expected[429]
    assert report["retried_429"] == 0
    assert report["errors_5xx"] == expected[503]
    assert report["by_status"] == {str(k): v for k, v in expected.items()}
    assert report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert report["rss_before_mb"] > 0 and report["rss_after_mb"] > 0
    assert report["rss_growth_mb"] == pytest.approx(
        report["rss_after_mb"] - report["rss_before_mb"], abs=0.11
    )
    assert code == 1  # the scripted 503s are server errors


def every_other_refused(index: int) -> int:
    """Warm-up requests succeed; afterwards every odd request is refused (Retry-After: 0)."""
    return 200 if index < WARMUP or index % 2 == 0 else 429


@pytest.mark.parametrize("scripted_server",
                         [{"scripted_status": every_other_refused, "retry_after": "0"}],
                         indirect=True)
def test_clients_retry_a_429_after_its_retry_after(scripted_server, capsys):
    url, sent = scripted_server
    requests = 10
    code = main(["bench", "load", "--clients", "1", "--requests", str(requests), "--url", url,
                 "--warmup", str(WARMUP), "--retries", "1"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # One client in turn: the first request lands on an even index; every later one first on
    # an odd (refused) index, then, retried, on the next, accepted one.
    assert report["ok"] == requests and report["rejected_429"] == 0
    assert report["retried_429"] == sent[429] == requests - 1
    assert sum(sent.values()) == WARMUP + 2 * requests - 1
    assert code == 0


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000", True),
        ("http://[::1]:8000", True),
        ("http://127.8.9.10", True),
        ("http://10.0.0.1:8000", False),
        ("http://example.org", False),
        ("ftp://127.0.0.1", False),
        ("127.0.0.1:8000", False),
    ],
)
def test_only_loopback_servers_are_driven(url, allowed):
    assert is_loopback_url(url) is allowed


def test_a_remote_url_is_refused_before_any_request(capsys):
    assert main(["bench", "load", "--url", "http://93.184.216.34:80", "--requests", "1"]) == 2
    assert "only loopback" in capsys.readouterr().err


def test_nearest_rank_percentiles():
    samples = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    assert percentile_ms(samples, 0.50) == 50.0
    assert percentile_ms(samples, 0.95) == 95.0
    assert percentile_ms(samples, 0.99) == 99.0
    assert percentile_ms([0.007], 0.99) == 7.0
    assert percentile_ms([], 0.5) is None
