"""The service while every slot is busy, and when things break: the model raising, the model not
loading, the NPU failing in the middle of a request.

In-process apps are driven through Starlette's TestClient without its lifespan: each test puts
the runtime and engine in place itself. Where the engine is a stand-in it is because the test is
about the HTTP layer around it (blocking on an event, raising once); the NPU test runs the real
engine on the tiny model with a strict fake NPU back-end, since no NPU exists here.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from fastapi.testclient import TestClient

from app.service import create_app
from app.settings import Settings
from app.transcription.engine import Engine
from app.transcription.result import Transcription
from npu.audio_spec import SAMPLE_RATE
from npu.backend import FallbackReason, MelBackend, MelBackendError
from npu.config import FrontEndConfig
from npu.mel.cpu import log_mel_spectrogram
from npu.runtime import UnifiedNPURuntime
from tests.app.service_helpers import metric_value
from tests.speech import speech_file
from tests.synth_media import tone, wav_pcm16

WAV = wav_pcm16(tone(1.0, SAMPLE_RATE), SAMPLE_RATE)
UPLOAD = "/v1/audio/transcriptions"
JFK = "jfk/jfk.wav"  # real speech: language detection, then a chunk


class BlockingEngine:
    """Stands in for the model: each call waits for the test, then returns an empty transcript."""

    concurrency = 2  # calls it takes at once (any number, in fact), reported by /status
    english_only = True  # also reported by /status

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, **options) -> Transcription:
        with self._lock:
            self.entered += 1
        if not self.release.wait(timeout=60):
            raise RuntimeError("test never released the engine")
        return Transcription(language="en", duration=audio.size / SAMPLE_RATE, segments=[])


class FailingOnceEngine:
    """Stands in for the model: the first call raises inside the model, later calls succeed."""

    concurrency = 1

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, audio: np.ndarray, **options) -> Transcription:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("CUDA-free explosion inside the decoder")
        return Transcription(
            language="en",
            duration=audio.size / SAMPLE_RATE,
            segments=[{"id": 0, "start": 0.0, "end": 1.0, "text": " fine"}],
        )


@contextlib.contextmanager
def serve(engine, runtime=None, **settings):
    """A client on one event loop for the whole test (as under uvicorn) and the app's state.

    The test provides the engine and runtime (the app loads no model of its own)."""
    runtime = runtime or UnifiedNPURuntime(enable_mel=False)
    app = create_app(Settings(warmup=False, mel_backend="cpu", **settings), runtime=runtime,
                     engine=engine)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, app.state.service
    finally:
        runtime.close()


def post(client: TestClient) -> httpx.Response:
    return client.post(UPLOAD, files={"file": ("a.wav", WAV, "audio/wav")}, data={"model": "whisper-1"})


def wait_for(predicate, what: str) -> None:
    for _ in range(6000):
        if predicate():
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"never happened: {what}")


def test_monitoring_answers_and_excess_is_refused_while_every_slot_is_busy():
    engine = BlockingEngine()
    with serve(engine, max_concurrent=2, max_queue=1) as (client, state):
        with ThreadPoolExecutor(max_workers=3) as pool:
            running = [pool.submit(post, client) for _ in range(2)]
            wait_for(lambda: engine.entered == 2, "both slots busy inside the model")
            queued = pool.submit(post, client)
            wait_for(lambda: state.admission.waiting == 1, "third request queued")

            # Every slot is blocked on the event: these answer without waiting for a slot.
            assert client.get("/health").status_code == 200
            assert client.get("/ready").status_code == 200
            assert client.get("/status").json()["ready"] is True
            scraped = client.get("/metrics")
            assert scraped.status_code == 200
            assert metric_value(scraped.text, "amanuensis_queue_depth") == 1

            refused = post(client)
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert refused.json()["error"]["code"] == "queue_full"
            assert not engine.release.is_set() and engine.entered == 2

            engine.release.set()
            assert [f.result().status_code for f in [*running, queued]] == [200, 200, 200]
        scraped = client.get("/metrics").text
        assert metric_value(scraped, "amanuensis_queue_depth") == 0
        assert metric_value(scraped, "amanuensis_rejected_requests_total",
                            {"reason": "queue_full"}) == 1


def test_a_request_past_its_deadline_gets_504_in_the_error_shape_not_an_empty_200():
    engine = BlockingEngine()
    with serve(
        engine,
        max_concurrent=1,
        max_queue=0,
        request_timeout_base_seconds=0.2,
        request_timeout_per_audio_second=0.0,
    ) as (client, state):
        response = post(client)
        assert response.status_code == 504
        error = response.json()["error"]
        assert error["type"] == "timeout_error" and error["code"] == "deadline_exceeded"
        assert "deadline" in error["message"]
        # The model thread is still busy: the slot is held until it ends, then freed.
        assert state.admission.running == 1
        engine.release.set()
        wait_for(lambda: state.admission.running == 0, "slot freed when the run ended")
        assert post(client).status_code == 200


def test_an_exception_inside_the_model_is_a_500_in_the_error_shape_and_the_next_succeeds():
    engine = FailingOnceEngine()
    with serve(engine) as (client, state):
        failed = post(client)
        assert failed.status_code == 500
        assert failed.json() == {
            "error": {
                "message": "internal error: RuntimeError",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            }
        }
        assert "explosion" not in failed.text  # internals stay in the log
        assert state.admission.running == 0
        ok = post(client)
        assert ok.status_code == 200 and ok.json()["text"] == "fine"


def test_a_model_that_cannot_load_leaves_ready_503_and_health_200(start_service, tiny_env):
    server = start_service(
        {**tiny_env, "AMANUENSIS_MODEL": "/nonexistent/whisper-model"}, wait_ready=False
    )
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        wait_for(
            lambda: http.get("/ready").json()["error"]["code"] == "model_unavailable",
            "the load failure reported",
        )
        ready = http.get("/ready")
        assert ready.status_code == 503
        assert "/nonexistent/whisper-model" in ready.json()["error"]["message"]
        assert "Fix:" in ready.json()["error"]["message"]
        assert http.get("/health").status_code == 200
        refused = http.post(UPLOAD, files={"file": ("a.wav", WAV)}, data={"model": "whisper-1"})
        assert refused.status_code == 503


class MidRequestFailingNpu:
    """Strict fake NPU tier: each opened device answers ``good_calls`` calls, then fails."""

    name = "npu-batch"

    def __init__(self, good_calls: int) -> None:
        self.good_calls = good_calls
        self.opened = 0
        self.calls = 0

    def __call__(self, config: FrontEndConfig):
        self.opened += 1
        tier = self
        answered = 0

        class Device(MelBackend):
            name = "npu-batch"
            n_mels = config.n_mels

            def log_mel(self, audio, padding=0):
                nonlocal answered
                tier.calls += 1
                if answered >= tier.good_calls:
                    raise MelBackendError(FallbackReason.RUN_FAILED, "ERT_CMD_STATE_TIMEOUT")
                answered += 1
                return log_mel_spectrogram(audio, config.n_mels, padding)

            def close(self):
                pass

        return Device()


def test_an_npu_failing_mid_request_still_answers_via_the_cpu_and_is_retried_later(
    tiny_models, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    npu = MidRequestFailingNpu(good_calls=1)
    runtime = UnifiedNPURuntime(backend_factories=[("npu-batch", npu)], npu_retry_seconds=0)
    settings = Settings(model=str(tiny_models.whisper), cpu_threads=2, batch_size=4)
    with Engine(settings, runtime) as engine, serve(engine, runtime=runtime) as (client, _):
        speech = speech_file(JFK).read_bytes()

        for request in (1, 2):
            response = client.post("/transcribe", files={"file": ("s.wav", speech, "audio/wav")})
            assert response.status_code == 200, response.text
            assert npu.opened == request  # the second request retried the NPU (retry after 0 s)
            scraped = client.get("/metrics").text
            assert (
                metric_value(scraped, "amanuensis_mel_fallbacks_total", {"reason": "run_failed"})
                == request
            )
        assert npu.calls >= 4  # each request: one good NPU call, then the failing one
        assert runtime.get_performance_metrics()["backends"]["cpu"]["calls"] >= 2
    runtime.close()
