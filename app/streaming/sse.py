"""``stream=true`` on ``/v1/audio/transcriptions``: Server-Sent Events in OpenAI's shape.

The request is admitted and its audio decoded before the response starts, so a busy server,
bad audio or an unready model still answer with their status and the error shape. Then the
engine decodes one VAD chunk at a time and each chunk's text goes out as a
``transcript.text.delta`` event the moment it is decoded; ``transcript.text.done`` carries the
whole text (equal to the deltas joined) and the usage. An error after the response started is a
``data: {"error": ...}`` event, which the official SDK raises as ``APIError``.

A client that hangs up stops the work: its slot is given up, the engine sees ``should_stop`` at
the next chunk, and the slot is given back after the chunk being decoded, not after the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request, UploadFile
from fastapi.responses import StreamingResponse

from app.admission import Slot
from app.errors import APIError, error_body
from app.state import ServiceState
from app.streaming.deltas import TextDeltas
from app.transcription.audio import decode_audio, duration_seconds
from app.transcription.result import Transcription

if TYPE_CHECKING:  # WhisperX takes seconds to import: the engine module loads with the model
    from app.transcription.engine import Engine


def event(payload: dict) -> str:
    """One SSE event: a ``data:`` line of JSON and the blank line that ends it."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def stream_transcription(
    state: ServiceState,
    request: Request,
    upload: UploadFile,
    *,
    clock: Any,
    finished: Callable[[Transcription], Any],
    **options: Any,
) -> StreamingResponse:
    """Admit, decode, then stream; ``finished`` gets the transcription when it is complete
    (for the request metrics), the route's ``clock`` the queue wait, the decode time and the
    engine's stage times."""
    engine = state.ready_engine()
    state.metrics.streaming_requests.inc()
    admitted = contextlib.AsyncExitStack()
    try:
        slot = await admitted.enter_async_context(
            state.admission.admit(is_disconnected=request.is_disconnected))
        clock.queue_wait = slot.queue_wait_seconds
        started = time.perf_counter()
        audio = await slot.run(lambda: decode_audio(
            upload.file, max_seconds=state.settings.max_audio_seconds,
            should_stop=slot.should_stop))
        clock.stages["decode"] = time.perf_counter() - started
        slot.allow_for_audio(duration_seconds(audio))
    except BaseException:
        await admitted.aclose()
        raise

    async def events() -> AsyncIterator[str]:
        async with admitted:
            async for item in _events(slot, engine, audio, options):
                if isinstance(item, Transcription):
                    clock.stages.update(item.stage_seconds)
                    finished(item)
                    yield event(_done(item))
                else:
                    yield item

    return EventStream(events(), media_type="text/event-stream",
                       headers={"Cache-Control": "no-cache"})


class EventStream(StreamingResponse):
    """A streaming response that closes its generator when it ends, however it ends: on a
    hang-up Starlette cancels the sending task and would leave the generator to the garbage
    collector, and with it the moment the engine hears that nobody reads any more."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


async def _events(slot: Slot, engine: Engine, audio: Any,
                  options: dict) -> AsyncIterator[str | Transcription]:
    """Delta events as the engine decodes chunks, then the transcription itself."""
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue[str] = asyncio.Queue()
    joiner = TextDeltas()

    def on_text(text: str) -> None:
        delta = joiner.delta(text)
        if delta:
            loop.call_soon_threadsafe(deltas.put_nowait, delta)

    run = asyncio.ensure_future(slot.run(
        lambda: engine.transcribe(audio, batch_size=1, on_text=on_text,
                                  should_stop=slot.should_stop, **options)))
    try:
        while not run.done():
            waiting = asyncio.ensure_future(deltas.get())
            await asyncio.wait({run, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                yield event({"type": "transcript.text.delta", "delta": waiting.result()})
            else:
                waiting.cancel()
        while not deltas.empty():
            yield event({"type": "transcript.text.delta", "delta": deltas.get_nowait()})
        try:
            transcription = run.result()
        except APIError as error:
            yield event(error_body(error.status_code, error.message, error.param, error.code))
            return
        yield transcription
    finally:
        if not run.done():
            run.cancel()  # the slot is given up: the engine stops at the next chunk


def _done(transcription: Transcription) -> dict:
    return {"type": "transcript.text.done", "text": transcription.text,
            "usage": {"type": "duration", "seconds": round(transcription.duration, 3)}}
