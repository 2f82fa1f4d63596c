"""Realtime transcription sessions: the subset of OpenAI's realtime transcription-session
protocol that a transcription client needs, independent of the WebSocket that carries it.

Client events: ``transcription_session.update`` (``input_audio_format`` ``pcm16`` - 24 kHz as
OpenAI sends it - or ``{"type": "audio/pcm", "rate": 16000|24000}``; ``input_audio_transcription``
``language`` and ``prompt``; ``turn_detection`` ``server_vad`` with ``threshold``,
``prefix_padding_ms`` and ``silence_duration_ms``, or ``null`` for manual commits),
``input_audio_buffer.append`` / ``commit`` / ``clear``.

Server events: ``transcription_session.created`` / ``updated``,
``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed`` / ``cleared``,
``conversation.item.input_audio_transcription.delta`` / ``completed`` / ``failed``, ``error``.

Turns are cut by the server VAD (:class:`~app.streaming.vad.StreamingVad`) and each is handed,
in order, to the session's ``transcribe`` callable as it ends; that callable sends one delta per
decoded chunk, so a long turn yields partial deltas before it completes. A turn that reaches
the maximum turn length is committed there and the speech after it starts the next turn. A bad
event gets an ``error`` event and the session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import av
import numpy as np

from app.errors import APIError
from app.streaming.deltas import TextDeltas
from app.streaming.vad import FRAME_SAMPLES, StreamingVad
from npu.audio_spec import SAMPLE_RATE

INPUT_RATES = (16000, 24000)
MIN_COMMIT_SECONDS = 0.1
"""OpenAI refuses to commit less than 100 ms of audio; so does this server."""

Send = Callable[[dict], None]
"""Queues one server event (without ``event_id``) for the client, in order."""
Transcribe = Callable[[np.ndarray, "SessionConfig", Callable[[str], None]], Awaitable[str]]
"""Transcribes one turn's 16 kHz audio, calling back with each decoded chunk's text (from the
model thread) as it is decoded; returns the turn's transcript (the chunk texts joined)."""


class ProtocolError(Exception):
    """A client event the session cannot act on; answered with an ``error`` event."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass
class TurnDetection:
    """OpenAI's ``server_vad`` parameters."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass
class SessionConfig:
    input_rate: int = 24000
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)

    def describe(self) -> dict:
        """The ``session`` object of ``transcription_session.created`` / ``updated``."""
        detection = None
        if self.turn_detection is not None:
            detection = {"type": "server_vad", **vars(self.turn_detection)}
        return {
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16" if self.input_rate == 24000 else
            {"type": "audio/pcm", "rate": self.input_rate},
            "input_audio_transcription": {"model": "whisper-1", "language": self.language,
                                          "prompt": self.prompt or ""},
            "turn_detection": detection,
        }


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ProtocolError(f"{name} must be a number from {low} to {high}, not {value!r}",
                            code="invalid_value", param=f"session.turn_detection.{name}")
    return value


def _input_rate(spec: Any) -> int:
    if spec == "pcm16":
        return 24000
    if isinstance(spec, dict) and spec.get("type") in ("audio/pcm", "pcm16") \
            and spec.get("rate", 24000) in INPUT_RATES:
        return int(spec.get("rate", 24000))
    raise ProtocolError(
        f"input_audio_format must be 'pcm16' (24 kHz) or {{'type': 'audio/pcm', 'rate': 16000 "
        f"or 24000}}, not {spec!r}", code="invalid_value", param="session.input_audio_format")


def _turn_detection(spec: Any, current: TurnDetection | None) -> TurnDetection | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type", "server_vad") != "server_vad":
        raise ProtocolError("turn_detection must be null or {'type': 'server_vad', ...}",
                            code="invalid_value", param="session.turn_detection")
    base = current or TurnDetection()
    return TurnDetection(
        threshold=float(_number(spec.get("threshold", base.threshold), "threshold", 0, 1)),
        prefix_padding_ms=int(_number(spec.get("prefix_padding_ms", base.prefix_padding_ms),
                                      "prefix_padding_ms", 0, 5000)),
        silence_duration_ms=int(_number(spec.get("silence_duration_ms",
                                                 base.silence_duration_ms),
                                        "silence_duration_ms", 32, 10000)),
    )


def updated_config(config: SessionConfig, session: Any) -> SessionConfig:
    """``config`` with the fields a ``transcription_session.update`` sets."""
    if not isinstance(session, dict):
        raise ProtocolError("session must be an object", code="invalid_value", param="session")
    rate, language, prompt = config.input_rate, config.language, config.prompt
    detection = config.turn_detection
    if "input_audio_format" in session:
        rate = _input_rate(session["input_audio_format"])
    transcription = session.get("input_audio_transcription") or {}
    if not isinstance(transcription, dict):
        raise ProtocolError("input_audio_transcription must be an object", code="invalid_value",
                            param="session.input_audio_transcription")
    language = transcription.get("language", language) or None
    prompt = transcription.get("prompt", prompt) or None
    if "turn_detection" in session:
        detection = _turn_detection(session["turn_detection"], detection)
    return SessionConfig(rate, language, prompt, detection)


class PcmInput:
    """Little-endian 16-bit mono PCM at the session's rate to 16 kHz float32 (PyAV's resampler,
    which keeps its filter state between pieces)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = None if rate == SAMPLE_RATE else av.AudioResampler(
            format="flt", layout="mono", rate=SAMPLE_RATE)
        self._odd = b""

    def convert(self, pcm: bytes) -> np.ndarray:
        pcm = self._odd + pcm
        whole = len(pcm) - len(pcm) % 2
        pcm, self._odd = pcm[:whole], pcm[whole:]
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is None or samples.size == 0:
            return samples.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        return np.concatenate([out.to_ndarray().reshape(-1)
                               for out in self._resampler.resample(frame)] or
                              [np.zeros(0, np.float32)])


@dataclass
class Turn:
    item_id: str
    audio: np.ndarray
    ended_at: float
    """``time.monotonic()`` when the turn was committed."""


class RealtimeSession:
    """One client's session: its configuration, its audio buffer, turn detection, and the
    queue of committed turns waiting for transcription."""

    def __init__(self, send: Send, transcribe: Transcribe, *, max_turn_seconds: float,
                 on_turn_done: Callable[[float], None] = lambda latency: None) -> None:
        self._send = send
        self._transcribe = transcribe
        self._on_turn_done = on_turn_done
        self._max_turn_samples = int(max_turn_seconds * SAMPLE_RATE)
        self.id = "sess_" + uuid.uuid4().hex[:20]
        self.config = SessionConfig()
        self._input = PcmInput(self.config.input_rate)
        self._vad = StreamingVad()
        self._items = (f"item_{uuid.uuid4().hex[:12]}_{n}" for n in itertools.count())
        self._previous_item: str | None = None
        self._turns: asyncio.Queue[Turn | None] = asyncio.Queue()
        self._transcribing = False
        self._reset_buffer(origin=0)

    # --- the buffer and turn detection -------------------------------------------------
    def _reset_buffer(self, origin: int) -> None:
        self._buffer = np.zeros(0, dtype=np.float32)
        self._origin = origin  # stream sample index of _buffer[0]
        self._scored = origin  # stream sample index up to which the VAD has scored
        self._speech_start: int | None = None
        self._silence = 0
        self._item: str | None = None

    @property
    def _end(self) -> int:
        return self._origin + self._buffer.shape[0]

    def _ms(self, sample: int) -> int:
        return sample * 1000 // SAMPLE_RATE

    def _append(self, audio: np.ndarray) -> None:
        self._buffer = np.concatenate([self._buffer, audio])
        detection = self.config.turn_detection
        if detection is None:
            if self._end - self._origin >= self._max_turn_samples:
                self._commit(self._end)
            return
        for probability in self._vad.feed(audio):
            frame_end = self._scored + FRAME_SAMPLES
            self._score(probability >= detection.threshold, self._scored, frame_end, detection)
            self._scored = frame_end
        if self._speech_start is None:
            keep = detection.prefix_padding_ms * SAMPLE_RATE // 1000
            self._drop_before(max(self._origin, self._scored - keep))

    def _score(self, speech: bool, start: int, end: int, detection: TurnDetection) -> None:
        if speech:
            self._silence = 0
            if self._speech_start is None:
                padding = detection.prefix_padding_ms * SAMPLE_RATE // 1000
                self._speech_start = max(self._origin, start - padding)
                self._item = next(self._items)
                self._event("input_audio_buffer.speech_started",
                            audio_start_ms=self._ms(self._speech_start), item_id=self._item)
        elif self._speech_start is not None:
            self._silence += end - start
            if self._silence * 1000 >= detection.silence_duration_ms * SAMPLE_RATE:
                self._stop_turn(end)
                return
        if self._speech_start is not None and end - self._speech_start >= self._max_turn_samples:
            self._stop_turn(end)

    def _stop_turn(self, end: int) -> None:
        self._event("input_audio_buffer.speech_stopped", audio_end_ms=self._ms(end),
                    item_id=self._item)
        self._drop_before(self._speech_start)
        self._commit(end)

    def _drop_before(self, sample: int) -> None:
        self._buffer = self._buffer[sample - self._origin:]
        self._origin = sample

    def _commit(self, end: int) -> None:
        """Commit the buffer up to stream sample ``end`` as a turn; what follows stays."""
        item = self._item or next(self._items)
        audio, rest = self._buffer[:end - self._origin], self._buffer[end - self._origin:]
        self._event("input_audio_buffer.committed", previous_item_id=self._previous_item,
                    item_id=item)
        self._previous_item = item
        self._turns.put_nowait(Turn(item, audio, time.monotonic()))
        scored = self._scored
        self._reset_buffer(origin=end)
        self._buffer = rest
        self._scored = max(scored, end)

    # --- client events -------------------------------------------------------------------
    def start(self) -> None:
        self._event("transcription_session.created", session=self._described())

    def handle(self, message: str) -> None:
        """Act on one client message; a bad one is answered with an ``error`` event."""
        event_id = None
        try:
            event = json.loads(message)
            if not isinstance(event, dict):
                raise ProtocolError("a client event must be a JSON object", code="invalid_event")
            event_id = event.get("event_id")
            handler = self._handlers.get(event.get("type"))
            if handler is None:
                raise ProtocolError(
                    f"unknown or unsupported event type {event.get('type')!r}; this server "
                    f"handles {sorted(self._handlers)}", code="invalid_event", param="type")
            handler(self, event)
        except json.JSONDecodeError as error:
            self.error(f"the message is not JSON: {error}", code="invalid_json")
        except ProtocolError as error:
            self.error(str(error), code=error.code, param=error.param, event_id=event_id)

    def _update(self, event: dict) -> None:
        config = updated_config(self.config, event.get("session"))
        if config.input_rate != self.config.input_rate:
            self._input = PcmInput(config.input_rate)
            self._vad = StreamingVad()
        self.config = config
        self._event("transcription_session.updated", session=self._described())

    def _append_event(self, event: dict) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("input_audio_buffer.append needs 'audio', base64 PCM16",
                                code="invalid_value", param="audio")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ProtocolError(f"audio is not valid base64: {error}", code="invalid_value",
                                param="audio") from error
        self._append(self._input.convert(pcm))

    def _commit_event(self, _: dict) -> None:
        if self._end - self._origin < MIN_COMMIT_SECONDS * SAMPLE_RATE:
            raise ProtocolError(
                f"buffer too small: {self._ms(self._end - self._origin)} ms of audio, at least "
                f"{int(MIN_COMMIT_SECONDS * 1000)} ms needed", code="input_audio_buffer_commit_empty")
        self._commit(self._end)

    def _clear(self, _: dict) -> None:
        self._reset_buffer(origin=self._end)
        self._vad = StreamingVad()
        self._event("input_audio_buffer.cleared")

    _handlers: ClassVar[dict[str, Callable[[RealtimeSession, dict], None]]] = {
        "transcription_session.update": _update,
        "input_audio_buffer.append": _append_event,
        "input_audio_buffer.commit": _commit_event,
        "input_audio_buffer.clear": _clear,
    }

    # --- transcription of committed turns -----------------------------------------------
    async def transcribe_turns(self) -> None:
        """Transcribe committed turns in order until :meth:`finish`."""
        while (turn := await self._turns.get()) is not None:
            self._transcribing = True
            try:
                await self._transcribe_turn(turn)
            finally:
                self._transcribing = False

    @property
    def busy(self) -> bool:
        """Whether committed turns are waiting for or in transcription."""
        return self._transcribing or not self._turns.empty()

    def finish(self) -> None:
        """No more turns: :meth:`transcribe_turns` ends after the ones already committed."""
        self._turns.put_nowait(None)

    async def _transcribe_turn(self, turn: Turn) -> None:
        loop = asyncio.get_running_loop()
        joiner = TextDeltas()

        def on_text(text: str) -> None:
            delta = joiner.delta(text)
            if delta:
                loop.call_soon_threadsafe(functools.partial(
                    self._event, "conversation.item.input_audio_transcription.delta",
                    item_id=turn.item_id, content_index=0, delta=delta))

        try:
            transcript = await self._transcribe(turn.audio, self.config, on_text)
        except APIError as error:
            self._event("conversation.item.input_audio_transcription.failed",
                        item_id=turn.item_id, content_index=0,
                        error={"type": "transcription_error", "code": error.code,
                               "message": error.message, "param": error.param})
            return
        # the deltas were put on the loop before the model thread's result: completed follows
        self._event("conversation.item.input_audio_transcription.completed",
                    item_id=turn.item_id, content_index=0, transcript=transcript)
        self._on_turn_done(time.monotonic() - turn.ended_at)

    # --- server events -------------------------------------------------------------------
    def _described(self) -> dict:
        return {"id": self.id, **self.config.describe()}

    def error(self, message: str, *, code: str, param: str | None = None,
              event_id: str | None = None) -> None:
        self._event("error", error={"type": "invalid_request_error", "code": code,
                                    "message": message, "param": param, "event_id": event_id})

    def _event(self, kind: str, **fields: Any) -> None:
        self._send({"type": kind, **fields})
