"""Transcription routes: ``/transcribe``, OpenAI's audio endpoints and ``/v1/models``.

Transcription handlers hold an admission slot (:mod:`app.admission`) and run decoding and the
model on its bounded pool of model threads, off the event loop, within the request's deadline.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from app.api.dependencies import State
from app.api.formatting import (
    MEDIA_TYPES,
    ResponseFormat,
    openai_body,
    render_text,
    service_body,
)
from app.errors import InvalidRequest, ModelNotFound, documented_errors
from app.state import ServiceState
from app.streaming.sse import stream_transcription
from app.transcription.audio import decode_audio, duration_seconds
from app.transcription.result import Transcription

TRANSCRIPTION_ERRORS = documented_errors(400, 401, 404, 413, 415, 422, 429, 500, 503, 504)
TRANSCRIPTION_MEDIA = {200: {"description": "The transcript in the requested format",
                             "content": {media_type: {} for media_type in MEDIA_TYPES.values()}}}
STREAM_MEDIA = {200: {**TRANSCRIPTION_MEDIA[200], "content": {
    **TRANSCRIPTION_MEDIA[200]["content"], "text/event-stream": {}}}}
router = APIRouter()
Task = Literal["transcribe", "translate"]
Granularity = Literal["word", "segment"]


class _Clock:
    """Per-request stage timer (decode, mel, asr, align, format) and the wait for a slot."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stages: dict[str, float] = {}
        self.queue_wait = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def processing(self) -> float:
        """Seconds since the request got its slot: the time spent on it, not waiting."""
        return max(self.elapsed() - self.queue_wait, 0.0)


async def _transcribe(
    state: ServiceState, request: Request, upload: UploadFile, clock: _Clock, **options
) -> Transcription:
    engine = state.ready_engine()
    max_seconds = state.settings.max_audio_seconds
    async with state.admission.admit(is_disconnected=request.is_disconnected) as slot:
        clock.queue_wait = slot.queue_wait_seconds
        started = time.perf_counter()
        audio = await slot.run(lambda: decode_audio(upload.file, max_seconds=max_seconds,
                                                    should_stop=slot.should_stop))
        clock.stages["decode"] = time.perf_counter() - started
        slot.allow_for_audio(duration_seconds(audio))
        transcription = await slot.run(
            lambda: engine.transcribe(audio, should_stop=slot.should_stop, **options))
    clock.stages.update(transcription.stage_seconds)
    return transcription


def served_by(state: ServiceState, transcription: Transcription) -> str:
    """The mel back-end that computed this request's features; the active one when it needed
    none (no signal: no mel call at all)."""
    return transcription.mel_backend or state.runtime.mel_backend_name


def _finish(state: ServiceState, transcription: Transcription, clock: _Clock, render) -> Response:
    started = time.perf_counter()
    response = render(clock)
    clock.stages["format"] = time.perf_counter() - started
    state.metrics.observe_transcription(
        audio_seconds=transcription.duration,
        processing_seconds=clock.processing(),
        queue_wait_seconds=clock.queue_wait,
        stage_seconds=clock.stages,
        mel_backend=served_by(state, transcription),
    )
    return response


@router.post("/transcribe", summary="Transcribe an audio file",
             responses={**TRANSCRIPTION_MEDIA, **TRANSCRIPTION_ERRORS})
async def transcribe(
    state: State,
    request: Request,
    file: Annotated[UploadFile, File(description="audio in any common container/codec")],
    language: Annotated[str | None, Form()] = None,
    task: Annotated[Task, Form()] = "transcribe",
    response_format: Annotated[ResponseFormat, Form()] = "json",
    word_timestamps: Annotated[bool, Form()] = False,
    initial_prompt: Annotated[str | None, Form()] = None,
    batch_size: Annotated[int | None, Form(ge=1, le=64)] = None,
) -> Response:
    clock = _Clock()
    transcription = await _transcribe(
        state, request, file, clock, language=language or None, task=task, initial_prompt=initial_prompt,
        batch_size=batch_size, word_timestamps=word_timestamps)

    def render(clock: _Clock) -> Response:
        if response_format in ("text", "srt", "vtt"):
            return render_text(transcription, response_format)
        return JSONResponse(service_body(
            transcription, words=word_timestamps, verbose=response_format == "verbose_json",
            processing_time=clock.elapsed(), mel_backend=served_by(state, transcription)))

    return _finish(state, transcription, clock, render)


def check_granularities(granularities: list[str]) -> None:
    unknown = sorted(set(granularities) - {"word", "segment"})
    if unknown:
        raise InvalidRequest(f"timestamp_granularities must be 'word' or 'segment', not {unknown}",
                             param="timestamp_granularities")


def _check_model(state: ServiceState, requested: str | None) -> None:
    """404 (OpenAI's ``model_not_found``) unless ``requested`` names the loaded model, is
    OpenAI's ``whisper-1`` alias, or is absent."""
    if not state.settings.model_choice.accepts(requested):
        raise ModelNotFound(
            f"The model {requested!r} does not exist here: this service serves "
            f"{state.model_id!r} (also accepted as 'whisper-1')", param="model")


async def _openai(
    state: ServiceState,
    request: Request,
    *,
    task: Task,
    file: UploadFile,
    model: str | None,
    language: str | None,
    prompt: str | None,
    response_format: ResponseFormat,
    granularities: list[str],
) -> Response:
    _check_model(state, model)
    check_granularities(granularities)
    words = "word" in granularities
    if words and response_format != "verbose_json":
        raise InvalidRequest("timestamp_granularities needs response_format=verbose_json",
                             param="timestamp_granularities")
    clock = _Clock()
    transcription = await _transcribe(state, request, file, clock, language=language or None,
                                      task=task, initial_prompt=prompt or None,
                                      word_timestamps=words)

    def render(_: _Clock) -> Response:
        if response_format in ("text", "srt", "vtt"):
            return render_text(transcription, response_format)
        return JSONResponse(openai_body(
            transcription, response_format, task=task, words=words,
            segments=not granularities or "segment" in granularities))

    return _finish(state, transcription, clock, render)


OpenAIFile = Annotated[UploadFile, File()]
Model = Annotated[str | None, Form(description=(
    "the loaded model's id (see /v1/models) or 'whisper-1'; any other name is a 404"))]
Prompt = Annotated[str | None, Form()]
Format = Annotated[ResponseFormat, Form()]
Temperature = Annotated[float, Form(ge=0.0, le=1.0, description=(
    "accepted for compatibility; WhisperX's batched decoding is beam search (temperature 0)"))]
Granularities = Annotated[list[Granularity] | None, Form()]
BracketGranularities = Annotated[list[Granularity] | None, Form(alias="timestamp_granularities[]")]


@router.post("/v1/audio/transcriptions", summary="OpenAI-compatible transcription",
             responses={**STREAM_MEDIA, **TRANSCRIPTION_ERRORS})
async def openai_transcriptions(
    state: State,
    request: Request,
    file: OpenAIFile,
    model: Model = None,
    language: Annotated[str | None, Form()] = None,
    prompt: Prompt = None,
    response_format: Format = "json",
    temperature: Temperature = 0.0,
    timestamp_granularities: Granularities = None,
    timestamp_granularities_brackets: BracketGranularities = None,
    stream: Annotated[bool, Form(description=(
        "Server-sent events: each chunk's text as it is decoded, then the whole text"))] = False,
) -> Response:
    granularities = [*(timestamp_granularities or []), *(timestamp_granularities_brackets or [])]
    if stream:
        return await _stream(state, request, file, model=model, language=language,
                             prompt=prompt, response_format=response_format,
                             granularities=granularities)
    return await _openai(state, request, task="transcribe", file=file, model=model,
                         language=language, prompt=prompt, response_format=response_format,
                         granularities=granularities)


async def _stream(state: ServiceState, request: Request, file: UploadFile, *,
                  model: str | None, language: str | None, prompt: str | None,
                  response_format: ResponseFormat, granularities: list[str]) -> Response:
    _check_model(state, model)
    if response_format not in ("json", "text") or granularities:
        raise InvalidRequest("stream=true sends text deltas: response_format must be json or "
                             "text, without timestamp_granularities", param="stream")
    clock = _Clock()
    return await stream_transcription(
        state, request, file, clock=clock,
        finished=lambda transcription: _finish(state, transcription, clock, lambda _: None),
        language=language or None, initial_prompt=prompt or None)


@router.post("/v1/audio/translations", summary="OpenAI-compatible translation to English",
             responses={**TRANSCRIPTION_MEDIA, **TRANSCRIPTION_ERRORS})
async def openai_translations(
    state: State,
    request: Request,
    file: OpenAIFile,
    model: Model = None,
    prompt: Prompt = None,
    response_format: Format = "json",
    temperature: Temperature = 0.0,
) -> Response:
    return await _openai(state, request, task="translate", file=file, model=model, language=None,
                         prompt=prompt, response_format=response_format, granularities=[])


@router.get("/v1/models", summary="The loaded model, OpenAI-style",
            responses=documented_errors(401))
def models(state: State) -> dict:
    return {"object": "list", "data": [_model_entry(state)]}


@router.get("/v1/models/{model}", summary="One model, OpenAI-style",
            responses=documented_errors(401, 404))
def retrieve_model(state: State, model: str) -> dict:
    _check_model(state, model)
    return _model_entry(state)


def _model_entry(state: ServiceState) -> dict:
    return {"id": state.model_id, "object": "model", "created": int(state.started_at),
            "owned_by": "amanuensis"}
