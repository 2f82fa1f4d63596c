"""Exact metric values after known requests (deltas around them, on the session's service)."""

from __future__ import annotations

import httpx
import pytest

from tests.app.service_helpers import metric_samples, soundfile_duration
from tests.speech import clip

STAGES_WITHOUT_ALIGN = ("decode", "mel", "asr", "format")


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counts_and_audio_seconds_after_known_requests(live_server):
    files = [clip("jfk"), clip("librispeech")]
    before = metric_samples(live_server)
    for path in files:
        ok = httpx.post(live_server + "/v1/audio/transcriptions", timeout=120,
                        files={"file": path.open("rb")})
        assert ok.status_code == 200
    assert httpx.post(live_server + "/transcribe", files={"file": ("x.wav", b"junk" * 99)},
                      timeout=60).status_code == 415
    assert httpx.post(live_server + "/transcribe", files={"file": ("x.wav", b"")},
                      timeout=60).status_code == 400
    assert httpx.get(live_server + "/health").status_code == 200
    after = metric_samples(live_server)

    requests = "amanuensis_requests_total"
    assert delta(after, before, requests, endpoint="/v1/audio/transcriptions", status="200") == 2
    assert delta(after, before, requests, endpoint="/transcribe", status="415") == 1
    assert delta(after, before, requests, endpoint="/transcribe", status="400") == 1
    assert delta(after, before, requests, endpoint="/health", status="200") == 1
    assert delta(after, before, requests, endpoint="/metrics", status="200") == 1  # `before`
    assert delta(after, before, "amanuensis_request_duration_seconds_count",
                 endpoint="/v1/audio/transcriptions") == 2

    sent_seconds = sum(soundfile_duration(path) for path in files)
    assert delta(after, before, "amanuensis_audio_seconds_total") == pytest.approx(
        sent_seconds, abs=1e-6)
    processing = delta(after, before, "amanuensis_processing_seconds_total")
    assert 0 < processing <= delta(after, before, "amanuensis_request_duration_seconds_sum",
                                   endpoint="/v1/audio/transcriptions")
    assert delta(after, before, "amanuensis_realtime_factor_count") == 2
    assert delta(after, before, "amanuensis_realtime_factor_sum") > 0
    for stage in STAGES_WITHOUT_ALIGN:
        assert delta(after, before, "amanuensis_stage_duration_seconds_count",
                     stage=stage, mel_backend="cpu") == 2, stage
    assert delta(after, before, "amanuensis_stage_duration_seconds_count",
                 stage="align", mel_backend="cpu") == 0
    assert after[("amanuensis_requests_in_flight", ())] == 1  # the scrape itself


def test_word_requests_time_the_align_stage(live_server):
    before = metric_samples(live_server)
    response = httpx.post(live_server + "/transcribe", timeout=120,
                          files={"file": clip("jfk").open("rb")},
                          data={"word_timestamps": "true"})
    assert response.status_code == 200
    after = metric_samples(live_server)
    assert delta(after, before, "amanuensis_stage_duration_seconds_count",
                 stage="align", mel_backend="cpu") == 1


def test_runtime_and_model_gauges(live_server):
    samples = metric_samples(live_server)
    assert samples[("amanuensis_mel_backend_info", (("backend", "cpu"),))] == 1
    assert samples[("amanuensis_mel_backend_info", (("backend", "npu-batch"),))] == 0
    assert samples[("amanuensis_mel_backend_info", (("backend", "npu-frame"),))] == 0
    status = httpx.get(live_server + "/status").json()
    for reason, count in status["mel_fallbacks"].items():
        assert samples[("amanuensis_mel_fallbacks_total", (("reason", reason),))] == count
    assert samples[("amanuensis_model_load_seconds", ())] > 0
