"""Clients that hang up, over real HTTP: a real uvicorn server on a loopback socket, capacity 1
and queue 1.

The engine is a stand-in that blocks until the test releases it and counts the calls that reach
it (the model-call counter): the tests are about the server and admission around the model.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn

from app.service import create_app
from app.settings import Settings
from npu.runtime import UnifiedNPURuntime
from tests.app.service_helpers import metric_value
from tests.app.test_busy_and_faults import WAV, BlockingEngine, wait_for

UPLOAD = "/transcribe"


def multipart_request(port: int) -> bytes:
    """A complete ``POST /transcribe`` with the WAV upload, as raw bytes."""
    boundary = "amanuensis-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode() + WAV + \
        f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST {UPLOAD} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


@contextlib.contextmanager
def live_app(engine, **settings) -> Iterator[tuple[str, object]]:
    """The service app with ``engine`` behind a real uvicorn server in a thread."""
    runtime = UnifiedNPURuntime(enable_mel=False)
    app = create_app(Settings(warmup=False, mel_backend="cpu", **settings), runtime=runtime,
                     engine=engine)
    state = app.state.service
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn")
    thread.start()
    try:
        wait_for(lambda: server.started, "uvicorn started")
        yield f"http://127.0.0.1:{port}", state
    finally:
        engine.release.set()
        server.should_exit = True
        thread.join(timeout=30)
        runtime.close()
        state.admission.close()
        state.runtime.close()


def scrape(base_url: str) -> str:
    return httpx.get(base_url + "/metrics", timeout=10).text


def post(base_url: str) -> httpx.Response:
    return httpx.post(base_url + UPLOAD, files={"file": ("a.wav", WAV, "audio/wav")}, timeout=60)


def test_a_client_that_hangs_up_while_queued_never_starts_and_the_slot_is_released():
    engine = BlockingEngine()
    with live_app(engine, max_concurrent=1, max_queue=1) as (base_url, state), \
            ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, base_url)
        wait_for(lambda: engine.entered == 1, "the first request holds the slot in the model")

        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as leaver:
            leaver.sendall(multipart_request(port))
            wait_for(lambda: metric_value(scrape(base_url), "amanuensis_queue_depth") == 1,
                     "the second request queued")
        wait_for(lambda: metric_value(scrape(base_url), "amanuensis_rejected_requests_total",
                                {"reason": "client_disconnected"}) == 1,
                 "the hang-up noticed")
        assert metric_value(scrape(base_url), "amanuensis_queue_depth") == 0
        assert engine.entered == 1  # the leaver's work never started
        assert state.admission.running == 1

        engine.release.set()
        assert running.result().status_code == 200
        wait_for(lambda: state.admission.running == 0, "the slot released")
        after = post(base_url)
        assert after.status_code == 200, after.text
        assert engine.entered == 2
        assert metric_value(scrape(base_url), "amanuensis_rejected_requests_total",
                      {"reason": "client_disconnected"}) == 1


def test_a_client_that_hangs_up_while_running_keeps_the_slot_until_the_run_ends():
    engine = BlockingEngine()
    with live_app(engine, max_concurrent=1, max_queue=0) as (base_url, state):
        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as leaver:
            leaver.sendall(multipart_request(port))
            wait_for(lambda: engine.entered == 1, "the request is inside the model")
        time.sleep(0.5)  # several disconnect polls: the run is not abandoned mid-way
        assert state.admission.running == 1
        refused = post(base_url)
        assert refused.status_code == 429  # the slot is still held by the running work

        engine.release.set()
        wait_for(lambda: state.admission.running == 0, "the slot released when the run ended")
        after = post(base_url)
        assert after.status_code == 200, after.text
        assert engine.entered == 2
