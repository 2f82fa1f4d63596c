"""``/v1/realtime`` with the real tiny.en model: a real WebSocket client streams shared speech at
real-time pace (24 kHz, as OpenAI's clients send it) and at 10x (16 kHz); the protocol's
events, its bad frames, its limits, and turns sharing the model slots with HTTP."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import statistics

import httpx
import jiwer
import numpy as np
import pytest
import websockets
from whisper_normalizer.english import EnglishTextNormalizer

from app.streaming.client import COMPLETED, DELTA, FAILED, stream_utterances
from tests.app.service_helpers import metric_samples
from tests.streaming.conftest import ljspeech, wait_for, with_pauses, write_wav
from tests.streaming.test_sse import gated, stream_request

pytestmark = pytest.mark.slow

PAUSE_SECONDS = 1.0
normalise = EnglishTextNormalizer()


def wer(references: list[str], hypotheses: list[str]) -> float:
    return jiwer.wer(normalise(" ".join(references)), normalise(" ".join(hypotheses)))


@pytest.fixture(scope="module")
def utterances():
    return ljspeech(8)


@pytest.fixture(scope="module")
def file_mode_wer(real_service, utterances, tmp_path_factory) -> float:
    """The same audio (utterances and pauses) as one upload through the HTTP endpoint."""
    path = write_wav(tmp_path_factory.mktemp("realtime") / "session.wav",
                     with_pauses(utterances, PAUSE_SECONDS))
    response = httpx.post(real_service.base_url + "/v1/audio/transcriptions",
                          files={"file": path.open("rb")}, data={"model": "whisper-1"},
                          timeout=300)
    assert response.status_code == 200, response.text
    return wer([u.reference for u in utterances], [response.json()["text"]])


@pytest.mark.parametrize(("rate", "pace"), [(24000, 1.0), (16000, 10.0)])
def test_streamed_speech_is_transcribed_turn_by_turn(real_service, utterances, file_mode_wer,
                                                     rate, pace):
    sessions_before = metric_samples(real_service.base_url)[
        ("amanuensis_realtime_sessions_total", ())]
    record = asyncio.run(stream_utterances(
        real_service.ws_url + "/v1/realtime", [u.audio for u in utterances], rate=rate,
        pace=pace, pause_seconds=PAUSE_SECONDS))

    kinds = [event["type"] for _, event in record.events]
    assert kinds[:2] == ["transcription_session.created", "transcription_session.updated"]
    assert "error" not in kinds and FAILED not in kinds
    turns = record.turns()
    assert len(turns) == len(utterances)  # every utterance once, no extra turn
    for turn, utterance in zip(turns, utterances):
        assert "".join(turn.deltas) == turn.transcript
        assert wer([utterance.reference], [turn.transcript]) < 0.35, (turn, utterance.reference)
        item_events = [e["type"] for _, e in record.events if e.get("item_id") == turn.item_id]
        assert item_events[:3] == ["input_audio_buffer.speech_started",
                                   "input_audio_buffer.speech_stopped",
                                   "input_audio_buffer.committed"]
        assert set(item_events[3:-1]) == {DELTA} and item_events[-1] == COMPLETED
    stops = record.of_type("input_audio_buffer.speech_stopped")
    starts = record.of_type("input_audio_buffer.speech_started")
    assert all(a["audio_start_ms"] < b["audio_end_ms"] for a, b in zip(starts, stops))
    session_wer = wer([u.reference for u in utterances], [t.transcript for t in turns])
    assert session_wer <= file_mode_wer + 0.02, [t.transcript for t in turns]
    latencies = [turn.completed_at - end for turn, end in zip(turns, record.speech_ends)]
    print(f"\n{rate} Hz at {pace:g}x: WER {session_wer:.3f} (file mode {file_mode_wer:.3f}); "
          f"end of speech to completed: median {statistics.median(latencies):.2f} s, "
          f"max {max(latencies):.2f} s")
    samples = metric_samples(real_service.base_url)
    assert samples[("amanuensis_realtime_sessions_total", ())] == sessions_before + 1
    assert samples[("amanuensis_realtime_turn_latency_seconds_count", ())] >= len(utterances)


async def _session(url: str, *messages, until: str, after_updated: bool = True):
    """Send ``messages`` (dicts as JSON, strings and bytes as they are) and collect events up to and
    including the first of type ``until``."""
    async with websockets.connect(url) as socket:
        events = [json.loads(await socket.recv())]
        for message in messages:
            await socket.send(json.dumps(message) if isinstance(message, dict) else message)
        while events[-1]["type"] != until:
            events.append(json.loads(await asyncio.wait_for(socket.recv(), 120)))
    return events


def _append(audio: np.ndarray) -> dict:
    pcm = (audio * 32767).astype("<i2").tobytes()
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


MANUAL_16K = {"type": "transcription_session.update", "session": {
    "input_audio_format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}}


def test_bad_frames_get_error_events_and_the_session_goes_on(real_service):
    events = asyncio.run(_session(
        real_service.ws_url + "/v1/realtime",
        "{not json", b"\x00\x01", {"type": "response.create"},
        {"type": "input_audio_buffer.append", "audio": "%%% not base64"},
        {"type": "transcription_session.update", "session": {"turn_detection": {
            "type": "server_vad", "threshold": 7}}},
        {"type": "transcription_session.update", "session": {"input_audio_format": "g711"}},
        {"type": "input_audio_buffer.commit", "event_id": "mine"},
        MANUAL_16K, until="transcription_session.updated"))
    errors = [event["error"] for event in events if event["type"] == "error"]
    assert [e["code"] for e in errors] == [
        "invalid_json", "invalid_event", "invalid_event", "invalid_value", "invalid_value",
        "invalid_value", "input_audio_buffer_commit_empty"]
    assert errors[4]["param"] == "session.turn_detection.threshold"
    assert errors[6]["event_id"] == "mine"
    assert events[-1]["session"]["turn_detection"] is None
    assert all(event["event_id"].startswith("event_") for event in events)


def test_manual_commit_and_clear(real_service, utterances):
    speech = utterances[1].audio  # "in being comparatively modern."
    events = asyncio.run(_session(
        real_service.ws_url + "/v1/realtime", MANUAL_16K, _append(utterances[0].audio),
        {"type": "input_audio_buffer.clear"}, _append(speech),
        {"type": "input_audio_buffer.commit"}, until=COMPLETED))
    kinds = [event["type"] for event in events]
    assert "input_audio_buffer.cleared" in kinds and "input_audio_buffer.speech_started" not in kinds
    assert kinds.count("input_audio_buffer.committed") == 1
    assert normalise(events[-1]["transcript"]) == normalise(utterances[1].reference)


def test_sessions_beyond_the_limit_are_refused_with_1013(real_service):
    limit = real_service.state.settings.realtime_max_sessions

    async def scenario():
        url = real_service.ws_url + "/v1/realtime"
        open_sessions = [await websockets.connect(url) for _ in range(limit)]
        try:
            for socket in open_sessions:
                assert json.loads(await socket.recv())["type"] == "transcription_session.created"
            active = metric_samples(real_service.base_url)[
                ("amanuensis_realtime_sessions_active", ())]
            async with websockets.connect(url) as refused:
                event = json.loads(await refused.recv())
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await refused.recv()
            return active, event, closed.value.rcvd.code
        finally:
            for socket in open_sessions:
                await socket.close()

    active, event, code = asyncio.run(scenario())
    assert active == limit
    assert event["error"]["code"] == "too_many_sessions"
    assert code == 1013
    wait_for(lambda: real_service.state.realtime_sessions == 0, "sessions closed")


def test_an_idle_session_is_closed(real_service, monkeypatch):
    monkeypatch.setattr(real_service.state.settings, "realtime_idle_timeout_seconds", 0.5)

    async def scenario():
        async with websockets.connect(real_service.ws_url + "/v1/realtime") as socket:
            events = [json.loads(message) async for message in socket]
            return events, socket.close_code

    events, code = asyncio.run(scenario())
    assert [e["type"] for e in events] == ["transcription_session.created", "error"]
    assert events[1]["error"]["code"] == "idle_timeout"
    assert code == 1000


def test_turns_share_the_model_slots_with_http(real_service, utterances, monkeypatch):
    """Both slots held by HTTP streams and no queue: a committed turn is refused, as an HTTP
    request would be, with a ``failed`` event; the session goes on."""
    admission = real_service.state.admission
    monkeypatch.setattr(admission, "limits", dataclasses.replace(admission.limits, max_queue=0))
    wav = write_wav_bytes(utterances[0].audio)
    with gated(real_service) as engine, httpx.Client(timeout=180) as client:
        streams = [stream_request(real_service, client, wav) for _ in range(2)]
        responses = [stream.__enter__() for stream in streams]
        try:
            wait_for(lambda: engine.chunks == 2, "both HTTP streams inside the model")
            events = asyncio.run(_session(
                real_service.ws_url + "/v1/realtime", MANUAL_16K, _append(utterances[1].audio),
                {"type": "input_audio_buffer.commit"}, until=FAILED))
        finally:
            engine.gate.set()
            for stream, response in zip(streams, responses):
                response.read()
                stream.__exit__(None, None, None)
    assert events[-1]["error"]["code"] == "queue_full"


def write_wav_bytes(audio: np.ndarray) -> bytes:
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, subtype="PCM_16", format="WAV")
    return buffer.getvalue()
