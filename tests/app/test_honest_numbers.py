"""Metrics that mean what their help says: processing x-realtime without the queue wait, the
queue wait as its own series, each mel back-end's x-realtime on ``/metrics`` as on ``/status``."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.app.service_helpers import clip, metric_samples, soundfile_duration
from tests.app.test_busy_and_faults import BlockingEngine, metric, post, serve, wait_for

QUEUED_SECONDS = 0.5


def test_queue_wait_is_its_own_series_and_not_in_the_realtime_factor():
    engine = BlockingEngine()
    with serve(engine, max_concurrent=1, max_queue=1) as (client, state), \
            ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(post, client)
        wait_for(lambda: engine.entered == 1, "the first request holds the slot")
        second = pool.submit(post, client)
        wait_for(lambda: state.admission.waiting == 1, "the second request queued")
        threading.Event().wait(QUEUED_SECONDS)
        engine.release.set()  # the second then runs at once: the engine no longer blocks
        assert [first.result().status_code, second.result().status_code] == [200, 200]
        scraped = client.get("/metrics").text

    assert metric(scraped, "amanuensis_queue_wait_seconds_count") == 2
    assert metric(scraped, "amanuensis_queue_wait_seconds_sum") >= QUEUED_SECONDS
    # 1 s of audio each. The first spent >= 0.5 s in the model (x-realtime <= 2); the second
    # spent its 0.5 s in the queue, which is not processing: its x-realtime is far above 2.
    assert metric(scraped, "amanuensis_realtime_factor_count") == 2
    assert metric(scraped, "amanuensis_realtime_factor_bucket", {"le": "2.0"}) == 1
    assert metric(scraped, "amanuensis_processing_seconds_total") < \
        metric(scraped, "amanuensis_request_duration_seconds_sum",
               {"endpoint": "/v1/audio/transcriptions"}) - QUEUED_SECONDS


def test_each_mel_back_ends_realtime_factor_is_on_metrics_as_on_status(live_server):
    jfk = clip("jfk")
    before = metric_samples(live_server)
    response = httpx.post(live_server + "/v1/audio/transcriptions", timeout=120,
                          files={"file": jfk.open("rb")})
    assert response.status_code == 200
    after = metric_samples(live_server)
    backends = httpx.get(live_server + "/status").json()["mel_backends"]

    cpu = (("backend", "cpu"),)
    audio = after[("amanuensis_mel_audio_seconds_total", cpu)]
    compute = after[("amanuensis_mel_compute_seconds_total", cpu)]
    assert audio == pytest.approx(backends["cpu"]["audio_seconds"])
    assert compute == pytest.approx(backends["cpu"]["compute_seconds"])
    assert after[("amanuensis_mel_realtime_factor", cpu)] == pytest.approx(audio / compute)
    sent = audio - before.get(("amanuensis_mel_audio_seconds_total", cpu), 0.0)
    # This request's speech chunks, plus its first 30 s again for language detection.
    assert 0 < sent <= 2 * soundfile_duration(jfk) + 1e-6
    for npu in ("npu-batch", "npu-frame"):
        assert after[("amanuensis_mel_realtime_factor", (("backend", npu),))] == 0
