"""A realtime transcription client (``websockets``) that streams utterances at a chosen pace and
records every server event with its arrival time: what ``amanuensis bench stream`` and the
tests use to drive ``/v1/realtime`` as a remote client would."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field

import numpy as np
import websockets
from scipy.signal import resample_poly

from npu.audio_spec import SAMPLE_RATE

COMPLETED = "conversation.item.input_audio_transcription.completed"
FAILED = "conversation.item.input_audio_transcription.failed"
DELTA = "conversation.item.input_audio_transcription.delta"


@dataclass
class Turn:
    """One transcribed turn as the client saw it (times in seconds on the client's clock)."""

    item_id: str
    transcript: str | None = None
    deltas: list[str] = field(default_factory=list)
    first_delta_at: float | None = None
    completed_at: float | None = None


@dataclass
class SessionRecord:
    events: list[tuple[float, dict]]
    speech_ends: list[float]
    """When the last sample of each utterance was sent."""

    def of_type(self, kind: str) -> list[dict]:
        return [event for _, event in self.events if event["type"] == kind]

    def turns(self) -> list[Turn]:
        turns: dict[str, Turn] = {}
        for arrived, event in self.events:
            if event["type"] == DELTA:
                turn = turns.setdefault(event["item_id"], Turn(event["item_id"]))
                turn.deltas.append(event["delta"])
                turn.first_delta_at = turn.first_delta_at or arrived
            elif event["type"] == COMPLETED:
                turn = turns.setdefault(event["item_id"], Turn(event["item_id"]))
                turn.transcript, turn.completed_at = event["transcript"], arrived
        return [turn for turn in turns.values() if turn.completed_at is not None]


def pcm16(audio: np.ndarray, rate: int) -> bytes:
    """16 kHz float audio as little-endian 16-bit PCM at ``rate`` (16000 or 24000)."""
    if rate != SAMPLE_RATE:
        audio = resample_poly(audio, rate // 8000, SAMPLE_RATE // 8000)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def stream_utterances(
    url: str,
    utterances: list[np.ndarray],
    *,
    rate: int = 24000,
    pace: float = 1.0,
    pause_seconds: float = 1.5,
    chunk_seconds: float = 0.1,
    turn_detection: dict | None = None,
    language: str | None = "en",
    timeout: float = 300.0,
) -> SessionRecord:
    """Stream each 16 kHz utterance followed by ``pause_seconds`` of silence, ``pace`` times
    faster than real time, then wait until every utterance's turn has completed or failed."""
    detection = turn_detection or {"type": "server_vad", "silence_duration_ms": 600}
    fmt = "pcm16" if rate == 24000 else {"type": "audio/pcm", "rate": rate}
    events: list[tuple[float, dict]] = []
    speech_ends: list[float] = []
    async with websockets.connect(url, max_size=None) as socket:
        receiver = asyncio.create_task(_receive(socket, events, len(utterances)))
        await socket.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": fmt, "turn_detection": detection,
            "input_audio_transcription": {"model": "whisper-1", "language": language}}}))
        step = int(rate * chunk_seconds) * 2
        clock = time.monotonic()
        sent_seconds = 0.0
        pause = np.zeros(int(SAMPLE_RATE * pause_seconds), dtype=np.float32)
        for utterance in utterances:
            for part, is_speech in ((utterance, True), (pause, False)):
                pcm = pcm16(part, rate)
                for start in range(0, len(pcm), step):
                    piece = pcm[start:start + step]
                    await socket.send(json.dumps({"type": "input_audio_buffer.append",
                                                  "audio": base64.b64encode(piece).decode()}))
                    sent_seconds += len(piece) / 2 / rate
                    await asyncio.sleep(max(0.0, clock + sent_seconds / pace - time.monotonic()))
                if is_speech:
                    speech_ends.append(time.monotonic())
        await asyncio.wait_for(receiver, timeout)
    return SessionRecord(events, speech_ends)


async def _receive(socket, events: list[tuple[float, dict]], turns: int) -> None:
    ended = 0
    async for message in socket:
        event = json.loads(message)
        events.append((time.monotonic(), event))
        if event["type"] in (COMPLETED, FAILED):
            ended += 1
            if ended >= turns:
                return
