"""Word timestamps from the Whisper model itself, for when no wav2vec2 alignment model is set.

A Whisper model's ``config.json`` names its alignment heads: the decoder cross-attention heads
whose attention follows the audio. CTranslate2's ``Whisper.align`` runs dynamic time warping over
them, and faster-whisper's ``WhisperModel.add_word_timestamps`` turns the result into words
(punctuation merged into its word, overlong first and last words trimmed). This module feeds
that code one WhisperX segment at a time (a voice-activity chunk of at most 30 s, decoded
without timestamps) and keeps every word inside its segment and the audio. It needs nothing
beyond the Whisper model, so word timestamps work offline.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from npu.audio_spec import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE

_TRANSCRIBE_DEFAULTS = inspect.signature(WhisperModel.transcribe).parameters
PREPEND_PUNCTUATIONS: str = _TRANSCRIBE_DEFAULTS["prepend_punctuations"].default
APPEND_PUNCTUATIONS: str = _TRANSCRIBE_DEFAULTS["append_punctuations"].default


def cross_attention_words(pipeline: Any, segments: list[dict], audio: np.ndarray,
                          language: str, task: str) -> list[dict]:
    """``segments`` (with their decoded ``tokens``) each given its ``words``.

    ``pipeline`` is the engine's :class:`~app.transcription.engine.RuntimeFeaturePipeline`: its
    features come from the runtime, its ``model`` is faster-whisper's ``WhisperModel``.
    """
    model = pipeline.model
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                          task=task, language=language)
    features = pipeline.for_request().features
    audio_end = audio.shape[0] / SAMPLE_RATE
    last_speech = 0.0
    timed = []
    for segment in segments:
        words, last_speech = _segment_words(model, tokenizer, features, segment, audio,
                                            last_speech)
        end = min(segment["end"], audio_end)
        timed.append(dict(segment, words=[_clipped(word, segment["start"], end)
                                          for word in words]))
    return timed


def _segment_words(model: WhisperModel, tokenizer: Tokenizer, features: Any, segment: dict,
                   audio: np.ndarray, last_speech: float) -> tuple[list[dict], float]:
    """faster-whisper's words for one segment, and the end of speech so far."""
    if not segment["tokens"]:
        return [], last_speech
    chunk = audio[round(segment["start"] * SAMPLE_RATE):round(segment["end"] * SAMPLE_RATE)]
    chunk = chunk[:N_SAMPLES]
    encoder_output = model.encode(features(chunk))
    decoded = {"seek": segment["start"] * model.frames_per_second, "start": segment["start"],
               "end": segment["end"], "tokens": segment["tokens"]}
    last_speech = model.add_word_timestamps(
        [[decoded]], tokenizer, encoder_output, chunk.shape[0] // HOP_LENGTH,
        PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, last_speech)
    return decoded["words"], last_speech


def _clipped(word: dict, start: float, end: float) -> dict:
    """The word as the service reports it (no leading space), its times inside [start, end]."""
    word_start = min(max(float(word["start"]), start), end)
    word_end = min(max(float(word["end"]), word_start), end)
    return {"word": word["word"].strip(), "start": word_start, "end": word_end,
            "probability": float(word["probability"])}
