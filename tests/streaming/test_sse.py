"""``stream=true`` on ``/v1/audio/transcriptions`` with the real tiny.en model over real HTTP:
the official SDK's streaming call, deltas sent as chunks are decoded, hang-ups."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent

from tests.app.service_helpers import metric_samples
from tests.streaming.conftest import LiveService, ljspeech, wait_for, with_pauses, write_wav

pytestmark = pytest.mark.slow

ENDPOINT = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def minute_of_speech(tmp_path_factory) -> bytes:
    """About 60 s of LJ Speech (nine clips with half-second pauses): three 30 s VAD chunks."""
    path = write_wav(tmp_path_factory.mktemp("sse") / "minute.wav",
                     with_pauses(ljspeech(9), 0.5))
    return path.read_bytes()


class GatedEngine:
    """The real engine, whose chunk hook waits after each call's first chunk until ``gate``
    opens; counts the chunks decoded (all calls) and says how the last call ended."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.gate = threading.Event()
        self.chunks = 0
        self.gate_timed_out = False
        self.outcome: str | None = None

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def transcribe(self, audio, *, on_text, **options):
        first = True

        def gated(text: str) -> None:
            nonlocal first
            self.chunks += 1
            on_text(text)
            if first and not self.gate.wait(timeout=120):
                self.gate_timed_out = True
            first = False

        try:
            result = self._engine.transcribe(audio, on_text=gated, **options)
        except BaseException as error:
            self.outcome = type(error).__name__
            raise
        self.outcome = "finished"
        return result


@contextlib.contextmanager
def gated(service: LiveService) -> Iterator[GatedEngine]:
    real = service.state.engine
    engine = GatedEngine(real)
    service.state.engine = engine
    try:
        yield engine
    finally:
        engine.gate.set()
        service.state.engine = real


def sse_events(response: httpx.Response) -> Iterator[dict]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def stream_request(service: LiveService, client: httpx.Client, wav: bytes, **fields):
    return client.stream("POST", service.base_url + ENDPOINT,
                         files={"file": ("speech.wav", wav, "audio/wav")},
                         data={"model": "whisper-1", "stream": "true", **fields})


def test_sdk_stream_deltas_join_to_the_non_streamed_text(real_service, minute_of_speech):
    client = openai.OpenAI(base_url=real_service.base_url + "/v1", api_key="x", max_retries=0)
    before = metric_samples(real_service.base_url)[("amanuensis_streaming_requests_total", ())]

    started = time.perf_counter()
    whole = client.audio.transcriptions.create(model="whisper-1", file=minute_of_speech)
    whole_seconds = time.perf_counter() - started

    started = time.perf_counter()
    events, arrivals = [], []
    for event in client.audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", minute_of_speech), stream=True):
        events.append(event)
        arrivals.append(time.perf_counter() - started)

    *deltas, done = events
    assert all(isinstance(event, TranscriptionTextDeltaEvent) for event in deltas)
    assert isinstance(done, TranscriptionTextDoneEvent)
    assert len(deltas) == 3  # one per 30 s chunk
    assert "".join(event.delta for event in deltas) == done.text == whole.text
    assert done.text.startswith("Printing, in the only sense")
    assert done.usage.seconds == pytest.approx(len(minute_of_speech) / 32000, abs=0.05)
    after = metric_samples(real_service.base_url)[("amanuensis_streaming_requests_total", ())]
    assert after == before + 1
    print(f"\n60 s of speech: first delta after {arrivals[0]:.2f} s, done after "
          f"{arrivals[-1]:.2f} s; the same request without streaming took {whole_seconds:.2f} s")


def test_the_first_delta_is_sent_before_the_next_chunk_is_decoded(real_service,
                                                                  minute_of_speech):
    with gated(real_service) as engine, httpx.Client(timeout=180) as client, \
            stream_request(real_service, client, minute_of_speech) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        first = next(events)
        chunks_when_received = engine.chunks
        engine.gate.set()
        rest = list(events)
    assert first["type"] == "transcript.text.delta"
    assert chunks_when_received == 1  # the engine was still holding at the first chunk
    assert not engine.gate_timed_out
    assert rest[-1]["type"] == "transcript.text.done"
    assert first["delta"] + "".join(e["delta"] for e in rest[:-1]) == rest[-1]["text"]


def test_a_client_that_hangs_up_mid_stream_stops_the_work_and_frees_its_slot(
        real_service, minute_of_speech):
    requests = ("amanuensis_requests_total", (("endpoint", ENDPOINT), ("status", "200")))
    before = metric_samples(real_service.base_url).get(requests, 0)
    with gated(real_service) as engine:
        with httpx.Client(timeout=180) as client, \
                stream_request(real_service, client, minute_of_speech) as response:
            assert next(sse_events(response))["type"] == "transcript.text.delta"
            assert real_service.state.admission.running == 1
        # the server has seen the hang-up once the response counts as ended
        wait_for(lambda: metric_samples(real_service.base_url).get(requests, 0) == before + 1,
                 "the streamed response ended")
        engine.gate.set()
        wait_for(lambda: real_service.state.admission.running == 0, "the slot given back")
    assert engine.outcome == "WorkStopped"
    assert engine.chunks == 1  # the work stopped before the second of three chunks


@pytest.mark.parametrize("fields", [{"response_format": "srt"},
                                    {"response_format": "verbose_json"},
                                    {"timestamp_granularities[]": "segment"}])
def test_stream_with_a_format_it_cannot_stream_is_400(real_service, fields):
    response = httpx.post(real_service.base_url + ENDPOINT,
                          files={"file": ("a.wav", b"RIFF", "audio/wav")},
                          data={"stream": "true", **fields}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"


def test_undecodable_audio_with_stream_is_415_before_any_event(real_service):
    response = httpx.post(real_service.base_url + ENDPOINT,
                          files={"file": ("a.wav", b"not audio at all" * 50, "audio/wav")},
                          data={"stream": "true"}, timeout=30)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media"
    assert real_service.state.admission.running == 0
