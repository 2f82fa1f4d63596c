"""``create_app(settings, runtime=, engine=)``: the service runs what it is handed, closes only
what it built, and labels each request by the mel back-end that served it."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from app.service import create_app
from app.settings import Settings
from app.transcription.result import Transcription
from npu.audio_spec import SAMPLE_RATE
from npu.runtime import UnifiedNPURuntime
from tests.app.service_helpers import metric_samples_from_text
from tests.app.test_busy_and_faults import UPLOAD, WAV


class ServedByEngine:
    """Stands in for the model: says its features came from ``backend``."""

    concurrency = 1
    english_only = True

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def transcribe(self, audio: np.ndarray, **options) -> Transcription:
        return Transcription(language="en", duration=audio.size / SAMPLE_RATE,
                             mel_backend=self.backend,
                             segments=[{"id": 0, "start": 0.0, "end": 1.0, "text": " hi"}])


def test_handed_in_runtime_and_engine_serve_at_once_and_stay_the_callers():
    runtime = UnifiedNPURuntime(enable_mel=False)
    app = create_app(Settings(warmup=False, mel_backend="cpu"), runtime=runtime,
                     engine=ServedByEngine("cpu"))
    with TestClient(app) as client:
        assert client.get("/ready").status_code == 200
    features = runtime.process_audio_to_features(np.zeros(SAMPLE_RATE, np.float32))  # not closed
    assert features.shape == (80, 100)
    runtime.close()


def test_requests_are_labelled_by_the_back_end_that_served_them_not_the_active_one():
    runtime = UnifiedNPURuntime(enable_mel=False)  # active back-end: cpu
    app = create_app(Settings(warmup=False, mel_backend="cpu"), runtime=runtime,
                     engine=ServedByEngine("npu-batch"))
    with TestClient(app) as client:
        response = client.post("/transcribe", files={"file": ("a.wav", WAV, "audio/wav")})
        assert response.status_code == 200 and response.json()["mel_backend"] == "npu-batch"
        assert client.post(UPLOAD, files={"file": ("a.wav", WAV, "audio/wav")}).status_code == 200
        samples = metric_samples_from_text(client.get("/metrics").text)
    runtime.close()
    stage = "amanuensis_stage_duration_seconds_count"
    assert samples[(stage, (("mel_backend", "npu-batch"), ("stage", "decode")))] == 2
    assert not any(name == stage and dict(labels)["mel_backend"] == "cpu"
                   for name, labels in samples)
