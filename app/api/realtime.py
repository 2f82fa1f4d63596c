"""``/v1/realtime``: realtime transcription sessions over WebSocket (OpenAI's protocol, the
subset in :mod:`app.streaming.realtime`).

A session needs the API key when one is set, as ``Authorization: Bearer <key>`` or, from a
browser, as the ``openai-insecure-api-key.<key>`` subprotocol. At most
``realtime_max_sessions`` are open at once; the next is accepted, told why in an ``error``
event and closed with 1013 (try again later). A session that sends nothing for
``realtime_idle_timeout_seconds`` is closed. Each turn is transcribed in an admission slot,
shared with the HTTP requests; a turn refused there gets a ``...transcription.failed`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.api.security import key_is_valid
from app.state import ServiceState
from app.streaming.realtime import RealtimeSession, SessionConfig
from app.transcription.audio import duration_seconds

router = APIRouter()
KEY_SUBPROTOCOL = "openai-insecure-api-key."
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008


def _offered_key(websocket: WebSocket) -> tuple[bytes | None, str | None]:
    """The key the client sent and the subprotocol to answer with (browsers must get back
    one they offered)."""
    authorization = websocket.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    offered = websocket.scope.get("subprotocols", [])
    chosen = next((p for p in offered if p == "realtime"), None)
    if scheme.lower() == "bearer" and credentials:
        return credentials.encode("latin-1"), chosen
    for protocol in offered:
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol.removeprefix(KEY_SUBPROTOCOL).encode("utf-8"), protocol
    return None, chosen


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    state: ServiceState = websocket.app.state.service
    settings = state.settings
    sent_key, subprotocol = _offered_key(websocket)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    if api_key and (sent_key is None or not key_is_valid(api_key, sent_key)):
        await websocket.close(code=POLICY_VIOLATION, reason="missing or invalid API key")
        return
    await websocket.accept(subprotocol=subprotocol)
    refusal = _refusal(state)
    if refusal is not None:
        code, message = refusal
        await websocket.send_json(_stamped({"type": "error", "error": {
            "type": "invalid_request_error", "code": code, "message": message,
            "param": None, "event_id": None}}))
        await websocket.close(code=TRY_AGAIN_LATER, reason=code)
        return
    state.realtime_sessions += 1
    state.metrics.realtime_sessions.inc()
    state.metrics.realtime_sessions_active.inc()
    try:
        await _serve(websocket, state)
    finally:
        state.realtime_sessions -= 1
        state.metrics.realtime_sessions_active.dec()


def _refusal(state: ServiceState) -> tuple[str, str] | None:
    if state.engine is None:
        return "model_not_ready", state.problem or "the model is not loaded"
    limit = state.settings.realtime_max_sessions
    if state.realtime_sessions >= limit:
        return "too_many_sessions", (f"{limit} realtime sessions are open, the most this server "
                                     f"takes (AMANUENSIS_REALTIME_MAX_SESSIONS); try again later")
    return None


async def _serve(websocket: WebSocket, state: ServiceState) -> None:
    outbox: asyncio.Queue[dict | None] = asyncio.Queue()
    session = RealtimeSession(
        lambda event: outbox.put_nowait(_stamped(event)), _turn_transcriber(state),
        max_turn_seconds=state.settings.realtime_max_turn_seconds,
        on_turn_done=state.metrics.realtime_turn_latency.observe)
    sender = asyncio.create_task(_send_all(websocket, outbox))
    turns = asyncio.create_task(session.transcribe_turns())
    session.start()
    client_left = await _receive_all(websocket, session, state.settings.realtime_idle_timeout_seconds)
    session.finish()
    if client_left:
        turns.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await turns
    outbox.put_nowait(None)
    with contextlib.suppress(asyncio.CancelledError):
        await sender
    if not client_left:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code=1000)


async def _receive_all(websocket: WebSocket, session: RealtimeSession, idle: float) -> bool:
    """Hand every client message to the session until the client leaves (True) or idles:
    sends nothing for ``idle`` seconds while none of its turns is being transcribed."""
    receiving = asyncio.ensure_future(websocket.receive())
    while True:
        done, _ = await asyncio.wait({receiving}, timeout=idle)
        if not done:
            if session.busy:
                continue
            receiving.cancel()
            session.error(f"no client event for {idle:g} s "
                          f"(AMANUENSIS_REALTIME_IDLE_TIMEOUT_SECONDS): closing the session",
                          code="idle_timeout")
            return False
        message = receiving.result()
        if message["type"] == "websocket.disconnect":
            return True
        receiving = asyncio.ensure_future(websocket.receive())
        if message.get("text") is None:
            session.error("binary frames are not events: send JSON text frames, audio as "
                          "base64 in input_audio_buffer.append", code="invalid_event")
        else:
            session.handle(message["text"])


async def _send_all(websocket: WebSocket, outbox: asyncio.Queue[dict | None]) -> None:
    while (event := await outbox.get()) is not None:
        try:
            await websocket.send_json(event)
        except (WebSocketDisconnect, RuntimeError):
            return  # the client left; the receive loop hears it


def _stamped(event: dict) -> dict:
    return {"event_id": "event_" + uuid.uuid4().hex[:20], **event}


def _turn_transcriber(state: ServiceState):
    async def transcribe(audio: np.ndarray, config: SessionConfig,
                         on_text: Callable[[str], None]) -> str:
        engine = state.ready_engine()
        seconds = duration_seconds(audio)
        async with state.admission.admit(audio_seconds=seconds) as slot:
            transcription = await slot.run(lambda: engine.transcribe(
                audio, language=config.language, initial_prompt=config.prompt, batch_size=1,
                on_text=on_text, should_stop=slot.should_stop))
        state.metrics.observe_transcription(
            audio_seconds=seconds, processing_seconds=sum(transcription.stage_seconds.values()),
            queue_wait_seconds=slot.queue_wait_seconds, stage_seconds=transcription.stage_seconds,
            mel_backend=transcription.mel_backend or state.runtime.mel_backend_name)
        return transcription.text

    return transcribe
