"""Turn a :class:`~app.transcription.engine.Transcription` into the five response formats.

``srt`` and ``vtt`` come from WhisperX's own subtitle writers (``whisperx.utils``), ``text`` is
the transcript as one paragraph, and the two JSON shapes follow OpenAI's audio API (``json``:
just the text; ``verbose_json``: language, duration, segments and, when asked, words) so the
official SDK parses them.
"""

from __future__ import annotations

import io
from typing import Literal

from fastapi.responses import PlainTextResponse, Response
from whisperx.utils import LANGUAGES, WriteSRT, WriteVTT

from app.transcription.result import Transcription

ResponseFormat = Literal["json", "verbose_json", "text", "srt", "vtt"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
}
_SUBTITLE_OPTIONS = {"max_line_width": None, "max_line_count": None, "highlight_words": False}
OPENAI_SEGMENT_FIELDS = ("id", "seek", "start", "end", "text", "tokens", "temperature",
                         "avg_logprob", "compression_ratio", "no_speech_prob")


def subtitles(transcription: Transcription, kind: Literal["srt", "vtt"]) -> str:
    writer = (WriteSRT if kind == "srt" else WriteVTT)(output_dir=".")
    # WhisperX's writers cut subtitles at word timings when every segment has them.
    segments = transcription.segments
    if not all(segment.get("words") for segment in segments):
        segments = [{k: v for k, v in segment.items() if k != "words"} for segment in segments]
    buffer = io.StringIO()
    writer.write_result({"segments": segments, "language": transcription.language}, buffer,
                        _SUBTITLE_OPTIONS)
    return buffer.getvalue()


def render_text(transcription: Transcription, response_format: ResponseFormat) -> Response:
    """``text``, ``srt`` or ``vtt`` with their own media types."""
    if response_format == "text":
        body = transcription.text + "\n"
    else:
        body = subtitles(transcription, response_format)
    return PlainTextResponse(body, media_type=MEDIA_TYPES[response_format])


def openai_body(transcription: Transcription, response_format: ResponseFormat, *, task: str,
                words: bool, segments: bool = True) -> dict:
    """OpenAI's ``json`` or ``verbose_json`` transcription object."""
    if response_format == "json":
        return {"text": transcription.text}
    body: dict = {
        "task": task,
        "language": LANGUAGES.get(transcription.language, transcription.language),
        "duration": float(transcription.duration),
        "text": transcription.text,
    }
    if segments:
        body["segments"] = [
            {field: segment[field] for field in OPENAI_SEGMENT_FIELDS}
            for segment in transcription.segments
        ]
    if words:
        body["words"] = [word_entry(word) for segment in transcription.segments
                         for word in segment.get("words", [])]
        body["word_timestamps_method"] = transcription.word_timestamps_method
    return body


def service_body(transcription: Transcription, *, words: bool, verbose: bool,
                 processing_time: float, mel_backend: str) -> dict:
    """``POST /transcribe``'s JSON: the transcript, its timing and how it was computed."""
    segment_fields = OPENAI_SEGMENT_FIELDS if verbose else ("id", "start", "end", "text")
    segments = []
    for segment in transcription.segments:
        entry = {field: segment[field] for field in segment_fields}
        if words:
            entry["words"] = [word_entry(word) for word in segment.get("words", [])]
        segments.append(entry)
    body = {
        "text": transcription.text,
        "language": transcription.language,
        "duration": float(transcription.duration),
        "segments": segments,
        "processing_time": processing_time,
        "realtime_factor": realtime_factor(transcription.duration, processing_time),
        "mel_backend": mel_backend,
    }
    if words:
        body["word_timestamps_method"] = transcription.word_timestamps_method
    return body


def word_entry(word: dict) -> dict:
    return {"word": word["word"], "start": word["start"], "end": word["end"],
            "probability": word["probability"]}


def realtime_factor(audio_seconds: float, processing_seconds: float) -> float:
    """Audio seconds per processing second."""
    return audio_seconds / processing_seconds if processing_seconds > 0 else 0.0
