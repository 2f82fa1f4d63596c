"""WhisperX with the runtime's log-mel front-end: the one transcription engine of the service.

:class:`RuntimeFeaturePipeline` is WhisperX's ``FasterWhisperPipeline`` with its feature
extraction replaced: each decode batch's chunks get their features in one
``runtime.log_mel_batch`` call (``get_iterator``), and language detection calls the runtime too,
instead of ``whisperx.audio.log_mel_spectrogram`` per chunk. Everything else (VAD, chunk merging,
decoding) is WhisperX's own code, so transcripts equal stock WhisperX's whenever the features do.

:class:`ScoredWhisperModel` keeps WhisperX's batched decoding and also hands back, per chunk, the
generated token ids and CTranslate2's no-speech probability, which OpenAI's ``verbose_json``
reports and WhisperX drops.

:class:`Engine` owns the pipeline and the alignment models and times each stage of a request.
It has no thread of its own and no lock around the model: each call runs on its caller's thread
(in the service, one of the admission controller's ``max_concurrent`` slot threads) with its own
shallow copy of the pipeline (:meth:`RuntimeFeaturePipeline.for_request`), because WhisperX's
``transcribe`` keeps per-call state on the pipeline (tokenizer, options) as do the mel timing and
chunk scores here. The copies share the CTranslate2 model, which is loaded with
``inter_threads = max_concurrent`` so that many ``generate`` calls really run in parallel (each
with ``cpu_threads`` intra-op threads), the VAD model (pyannote's inference keeps no per-call
state; WhisperX's torch-hub Silero keeps state in its network, so its calls are serialised; the
default, :class:`~app.transcription.vad.SileroOnnx`, keeps none) and the runtime (thread-safe).

Import order matters: CTranslate2 and torch each bring an OpenMP runtime, and with torch
loaded first every transcription after the first ran ~2x slower on 2 cores
(measured: 30 s of speech, tiny model, 1.25 s vs 0.65 s). This module imports ``ctranslate2``
before ``torch``, as ``whisperx.asr`` does; keep it the first module of the process to import
torch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import ctranslate2  # must load before torch, see the module docstring
import numpy as np
import torch
import whisperx
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio
from threadpoolctl import threadpool_limits
from transformers.pipelines.pt_utils import PipelineIterator
from whisperx.asr import FasterWhisperPipeline, WhisperModel
from whisperx.vads import Silero, Vad

from app.errors import AlignmentUnavailable, InvalidRequest, WorkStopped
from app.settings import Settings
from app.transcription.audio import duration_seconds
from app.transcription.cross_attention import cross_attention_words
from app.transcription.result import Transcription, model_dir
from app.transcription.vad import bundled_vad
from npu.audio_spec import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from npu.config import whisper_windows

logger = logging.getLogger(__name__)

DEVICE = "cpu"
ENGLISH = "en"
CROSS_ATTENTION = "cross_attention"
"""Word timestamps from the Whisper model's alignment heads (:mod:`.cross_attention`)."""
WAV2VEC2 = "wav2vec2"
"""Word timestamps from WhisperX's wav2vec2 aligner (``settings.align_model``)."""


class _GenerationRecorder:
    """Stands in for the CTranslate2 model during one batched decode, asking it for the
    no-speech probability too and keeping the raw results."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.results: list = []

    def generate(self, *args: Any, **kwargs: Any) -> list:
        self.results = self._model.generate(*args, return_no_speech_prob=True, **kwargs)
        return self.results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class ScoredWhisperModel(WhisperModel):
    """WhisperX's batched model that also returns ``tokens`` and ``no_speech_prob`` per chunk.

    With :meth:`use_runtime_encoder` its encoder is :class:`npu.ops.encoder.WhisperEncoder` on
    the runtime (``AMANUENSIS_ENCODER_BACKEND=runtime``); CTranslate2 decodes from its output.
    """

    runtime_encoder: tuple[Any, Any] | None = None

    def use_runtime_encoder(self, model_dir: Path, runtime: Any) -> None:
        from npu.ops.encoder import WhisperEncoder

        self.runtime_encoder = (WhisperEncoder.from_model_dir(model_dir), runtime)

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        if self.runtime_encoder is None:
            return super().encode(features)
        encoder, runtime = self.runtime_encoder
        batch = np.asarray(features, dtype=np.float32)
        batch = batch[np.newaxis] if batch.ndim == 2 else batch
        # NumPy's BLAS on one thread: its idle threads spin between the encoder's matrix
        # products and take the cores CTranslate2's decoder needs (measured: the encoder twice
        # as slow, a decode up to ten times, on 2 cores).
        with threadpool_limits(1, user_api="blas"):
            encoded = np.stack([encoder.encode(chunk, runtime) for chunk in batch])
        return ctranslate2.StorageView.from_array(encoded)

    def generate_segment_batched(self, features, tokenizer, options, encoder_output=None):
        recorder = _GenerationRecorder(self.model)
        recording = copy.copy(self)  # shares everything but the model attribute: thread-safe
        recording.model = recorder
        outputs = WhisperModel.generate_segment_batched(
            recording, features, tokenizer, options, encoder_output)
        outputs["tokens"] = [
            [token for token in result.sequences_ids[0] if token < tokenizer.eot]
            for result in recorder.results
        ]
        outputs["no_speech_prob"] = [result.no_speech_prob for result in recorder.results]
        return outputs


class SerialVad(Vad):
    """A VAD whose calls take turns: for detectors that keep state in the network (Silero)."""

    def __init__(self, vad: Vad) -> None:
        self._vad = vad
        self._lock = threading.Lock()
        self.preprocess_audio = vad.preprocess_audio
        self.merge_chunks = vad.merge_chunks

    def __call__(self, audio: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._vad(audio, **kwargs)


class RuntimeFeaturePipeline(FasterWhisperPipeline):
    """WhisperX's pipeline taking its log-mel features from a ``UnifiedNPURuntime``.

    One instance is shared; each transcription uses its own :meth:`for_request` copy.
    """

    def __init__(self, *args: Any, runtime: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime
        self.mel_seconds = 0.0
        self.mel_backends: list[str] = []
        self.chunk_scores: list[dict] = []
        self.on_text: Callable[[str], None] | None = None
        self.should_stop: Callable[[], bool] | None = None
        self._call_batch_size: int | None = None

    @classmethod
    def from_pipeline(cls, pipeline: FasterWhisperPipeline, runtime: Any) -> RuntimeFeaturePipeline:
        """The same model, VAD and options as ``pipeline`` (from ``whisperx.load_model``)."""
        vad = pipeline.vad_model
        return cls(
            model=pipeline.model,
            vad=SerialVad(vad) if isinstance(vad, Silero) else vad,
            vad_params=pipeline._vad_params,
            options=pipeline.options,
            tokenizer=pipeline.tokenizer,
            language=pipeline.preset_language,
            suppress_numerals=pipeline.suppress_numerals,
            runtime=runtime,
        )

    def for_request(self) -> RuntimeFeaturePipeline:
        """A copy for one transcription: its own tokenizer, options, mel time, mel back-ends and
        chunk scores; the same model, VAD and runtime."""
        request = copy.copy(self)
        request.mel_seconds, request.mel_backends, request.chunk_scores = 0.0, [], []
        return request

    @property
    def n_mels(self) -> int:
        return self.model.feat_kwargs.get("feature_size") or 80

    def features(self, audio: np.ndarray) -> np.ndarray:
        """:meth:`batch_features` of one chunk: ``[n_mels, 3000]``."""
        return self.batch_features([audio])[0]

    def batch_features(self, chunks: list[np.ndarray]) -> np.ndarray:
        """Log-mel features ``[len(chunks), n_mels, 3000]`` of chunks each padded (or cut) to
        30 s as WhisperX computes them, in one runtime call.

        Raises :class:`WorkStopped` instead once ``should_stop()`` says the request is given up:
        every batch passes here before it is decoded, so abandoned work ends within a batch."""
        if self.should_stop is not None and self.should_stop():
            raise WorkStopped("transcription stopped: the request no longer waits for it")
        windows, paddings = whisper_windows(chunks)
        started = time.perf_counter()
        features, backend = self.runtime.log_mel_batch(windows, paddings)
        self.mel_seconds += time.perf_counter() - started
        self.mel_backends.extend([backend] * len(windows))
        return features

    def preprocess(self, audio):
        """One chunk's features, for transformers' single-input path and WhisperX's own
        iterator (``transcribe`` batches in :meth:`get_iterator` instead)."""
        return {"inputs": torch.from_numpy(self.features(audio["inputs"]))}

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params,
                     postprocess_params):
        """WhisperX's iterator with each batch's features from one :meth:`batch_features` call.

        WhisperX's own (``FasterWhisperPipeline.get_iterator``) preprocesses chunk by chunk and
        lets a DataLoader stack ``batch_size`` of them; here the ``batch_size`` VAD chunks of a
        batch go to the runtime together, so its back-end shares one batch's work over the
        cores at once. Decoding (``forward``, unrolled per chunk by transformers'
        ``PipelineIterator``) and ``postprocess`` are unchanged; ``num_workers`` (DataLoader
        worker processes, 0 in WhisperX's ``transcribe``) and ``preprocess_params`` (none) have
        nothing to drive here."""
        batch_size = max(1, batch_size)
        batches = (
            {"inputs": torch.from_numpy(self.batch_features([item["inputs"] for item in batch]))}
            for batch in _batches(inputs, batch_size))
        model_iterator = PipelineIterator(batches, self.forward, forward_params,
                                          loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def detect_language(self, audio: np.ndarray) -> str:
        encoder_output = self.model.encode(self.features(audio))
        language_token, probability = self.model.model.detect_language(encoder_output)[0][0]
        language = language_token[2:-2]
        logger.info("detected language %s (%.2f) in the first 30 s", language, probability)
        return language

    def postprocess(self, model_outputs):
        tokens, no_speech_prob = model_outputs["tokens"], model_outputs["no_speech_prob"]
        text = model_outputs["text"]
        if self._call_batch_size in (0, 1, None):
            tokens, no_speech_prob, text = tokens[0], no_speech_prob[0], text[0]
        self.chunk_scores.append({"tokens": list(tokens), "no_speech_prob": float(no_speech_prob)})
        if self.on_text is not None:
            self.on_text(text)
        return model_outputs

    def transcribe(self, audio, batch_size=None, *args, **kwargs):
        self.mel_seconds = 0.0
        self.mel_backends = []
        self.chunk_scores = []
        self._call_batch_size = batch_size or self._batch_size
        return super().transcribe(audio, batch_size, *args, **kwargs)


SILENT_PEAK = 1.0 / 32768
"""Audio that never moves by one 16-bit step carries no signal. Voice-activity detection finds
no speech in it, so the engine answers without running the VAD and the model over it (two hours
of digital silence would otherwise cost minutes)."""


def carries_signal(audio: np.ndarray) -> bool:
    """Whether any sample reaches :data:`SILENT_PEAK` (two reductions, no copy of the audio)."""
    return audio.size > 0 and max(float(audio.max()), -float(audio.min())) >= SILENT_PEAK


class Engine:
    """One WhisperX pipeline on one runtime, for up to ``settings.max_concurrent`` transcriptions
    at once, each on its caller's thread."""

    def __init__(self, settings: Settings, runtime: Any) -> None:
        """Load the Whisper model named in ``settings`` around ``runtime``."""
        self.settings = settings
        self._aligners: dict[str, tuple[Any, dict]] = {}
        self._aligner_lock = threading.Lock()
        self._closed = False
        self.pipeline = self._load_pipeline(settings, runtime)

    def close(self) -> None:
        """Refuse further transcriptions; idempotent. Callers finish their running ones first
        (the service closes its admission pool, which waits for them, before the engine)."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _load_pipeline(settings: Settings, runtime: Any) -> RuntimeFeaturePipeline:
        source = settings.model_choice.source
        model = ScoredWhisperModel(
            source,
            device=DEVICE,
            compute_type=settings.compute_type,
            download_root=str(settings.model_cache_dir) if settings.model_cache_dir else None,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.max_concurrent,
        )
        if not model.model.is_multilingual and settings.language not in (None, ENGLISH):
            raise ValueError(f"AMANUENSIS_LANGUAGE={settings.language!r}, but the model "
                             f"{settings.model_choice.id!r} is English-only")
        if settings.encoder_backend == "runtime":
            model.use_runtime_encoder(model_dir(settings), runtime)
        vad = bundled_vad(settings.vad_method)
        with contextlib.redirect_stdout(io.StringIO()):  # "Use manually assigned vad_model"
            pipeline = whisperx.load_model(
                source,
                device=DEVICE,
                compute_type=settings.compute_type,
                language=settings.language if model.model.is_multilingual else ENGLISH,
                vad_method=settings.vad_method,
                vad_model=vad,
                model=model,
                threads=settings.cpu_threads,
            )
        wrapped = RuntimeFeaturePipeline.from_pipeline(pipeline, runtime)
        runtime_n_mels = getattr(runtime, "n_mels", None)
        if runtime_n_mels not in (None, wrapped.n_mels):
            raise ValueError(
                f"the runtime computes {runtime_n_mels} mel bands but the model "
                f"expects {wrapped.n_mels}"
            )
        return wrapped

    @property
    def concurrency(self) -> int:
        """Transcriptions the CTranslate2 model runs in parallel (its inter-op workers)."""
        return self.pipeline.model.model.num_workers

    @property
    def n_mels(self) -> int:
        return self.pipeline.n_mels

    @property
    def supported_languages(self) -> list[str]:
        return self.pipeline.model.supported_languages

    @property
    def english_only(self) -> bool:
        """An English-only model (``*.en``): it never detects a language and cannot translate."""
        return not self.pipeline.model.model.is_multilingual

    def warm_up(self) -> None:
        """One encoder + decoder pass over a second of silence."""
        silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
        features = self.pipeline.features(silence)[np.newaxis]
        tokenizer = Tokenizer(self.pipeline.model.hf_tokenizer,
                              self.pipeline.model.model.is_multilingual,
                              task="transcribe", language="en")
        self.pipeline.model.generate_segment_batched(features, tokenizer, self.pipeline.options)

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        task: str = "transcribe",
        initial_prompt: str | None = None,
        batch_size: int | None = None,
        word_timestamps: bool = False,
        progress: Callable[[float], None] | None = None,
        on_text: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Transcription:
        """Transcribe 16 kHz mono ``audio``; ``progress`` gets the percentage of chunks done.
        Once ``should_stop()`` is true the work ends before the next decode batch (of
        ``batch_size`` chunks) with :class:`WorkStopped`.

        ``on_text`` gets each VAD chunk's text, in order, as soon as that chunk is decoded (on
        this thread; with ``batch_size=1`` every chunk is its own decode).
        """
        if self._closed:
            raise RuntimeError("the engine is closed: no transcriptions after shutdown")
        language, task = self._checked_request(language or self.settings.language, task)
        batch_size = min(batch_size or self.settings.batch_size, self.settings.batch_size)
        pipeline = self.pipeline.for_request()
        pipeline.should_stop = should_stop
        if not carries_signal(audio):
            return self._no_signal(pipeline, audio, language)
        pipeline.options = replace(pipeline.options, initial_prompt=initial_prompt)
        pipeline.on_text = on_text
        started = time.perf_counter()
        result = pipeline.transcribe(audio, batch_size=batch_size, language=language, task=task,
                                     progress_callback=progress)
        asr_seconds = time.perf_counter() - started
        stages = {"mel": pipeline.mel_seconds,
                  "asr": max(asr_seconds - pipeline.mel_seconds, 0.0)}
        segments = _scored_segments(result["segments"], pipeline.chunk_scores)
        method = None
        if word_timestamps:
            started = time.perf_counter()
            segments, method = self._word_timestamps(segments, audio, result["language"], task)
            stages["align"] = time.perf_counter() - started
        return Transcription(language=result["language"], duration=duration_seconds(audio),
                             segments=segments, stage_seconds=stages,
                             mel_backend=_most_used(pipeline.mel_backends),
                             word_timestamps_method=method)

    @staticmethod
    def _no_signal(pipeline: RuntimeFeaturePipeline, audio: np.ndarray,
                   language: str | None) -> Transcription:
        """The answer for audio with no signal at all: no segments, the language as asked or
        as the model detects it in the first 30 s (what WhisperX would say, minus the VAD pass
        over the whole file)."""
        started = time.perf_counter()
        language = language or pipeline.detect_language(audio[:N_SAMPLES])
        detect_seconds = time.perf_counter() - started
        return Transcription(language=language, duration=duration_seconds(audio), segments=[],
                             stage_seconds={"mel": pipeline.mel_seconds,
                                            "asr": max(detect_seconds - pipeline.mel_seconds, 0)},
                             mel_backend=_most_used(pipeline.mel_backends))

    def _checked_request(self, language: str | None, task: str) -> tuple[str | None, str]:
        """The language and task to run, or 400 for ones this model cannot serve.

        An English-only model hears English: no language means ``en``, another language is
        refused, and a translation (to English) is the English transcript.
        """
        if task not in ("transcribe", "translate"):
            raise InvalidRequest(f"task must be 'transcribe' or 'translate', not {task!r}",
                                 param="task")
        if self.english_only:
            if language not in (None, ENGLISH):
                raise InvalidRequest(
                    f"the model {self.settings.model_choice.id!r} is English-only: language "
                    f"must be 'en' or omitted, not {language!r}", param="language")
            return ENGLISH, "transcribe"
        if language is not None and language not in self.supported_languages:
            raise InvalidRequest(
                f"language {language!r} is not one this model knows (ISO 639-1 codes such as "
                f"'en', 'de')", param="language")
        return language, task

    def _word_timestamps(self, segments: list[dict], audio: np.ndarray, language: str,
                         task: str) -> tuple[list[dict], str]:
        """``segments`` with their words, and the method that timed them: WhisperX's wav2vec2
        aligner when ``settings.align_model`` names one, else Whisper's own cross-attention."""
        if self.settings.align_model is None:
            return cross_attention_words(self.pipeline, segments, audio, language,
                                         task), CROSS_ATTENTION
        return self._align(segments, audio, language), WAV2VEC2

    def _align(self, segments: list[dict], audio: np.ndarray, language: str) -> list[dict]:
        if not segments:
            return segments
        model, metadata = self._aligner(language)
        aligned = whisperx.align(
            [{"text": s["text"], "start": s["start"], "end": s["end"]} for s in segments],
            model, metadata, audio, DEVICE, return_char_alignments=False,
        )
        words_by_segment = _words_by_segment(aligned["segments"], segments)
        return [dict(segment, words=words) for segment, words in zip(segments, words_by_segment)]

    def _aligner(self, language: str) -> tuple[Any, dict]:
        """The wav2vec2 alignment model for ``language``, loaded once; 422 when it cannot be."""
        with self._aligner_lock:
            return self._load_aligner(language)

    def _load_aligner(self, language: str) -> tuple[Any, dict]:
        if language not in self._aligners:
            _require_sentence_splitter(language)
            name = self.settings.align_model
            try:
                self._aligners[language] = whisperx.load_align_model(
                    language, DEVICE, model_name=name,
                    model_dir=str(self.settings.model_cache_dir)
                    if self.settings.model_cache_dir else None,
                )
            except Exception as error:
                raise AlignmentUnavailable(
                    f"word timestamps need a wav2vec2 alignment model for language "
                    f"{language!r} ({name}), which could not be "
                    f"loaded: {error}. Set AMANUENSIS_ALIGN_MODEL to a local model "
                    f"directory or allow the download.",
                    param="timestamp_granularities",
                ) from error
        return self._aligners[language]


def _require_sentence_splitter(language: str) -> None:
    """WhisperX alignment needs NLTK's Punkt tables; say so instead of failing mid-request."""
    import nltk
    from whisperx.utils import PUNKT_LANGUAGES

    punkt_language = PUNKT_LANGUAGES.get(language, "english")
    try:
        nltk.data.find(f"tokenizers/punkt_tab/{punkt_language}/")
    except LookupError as error:
        raise AlignmentUnavailable(
            f"word timestamps need NLTK's 'punkt_tab' sentence splitter for {punkt_language!r}, "
            f"which is not installed: run `python -m nltk.downloader punkt_tab` or point "
            f"NLTK_DATA at a directory holding it.",
            param="timestamp_granularities",
        ) from error


def _batches(items, size: int):
    """Lists of ``size`` consecutive items (the last one shorter), as ``itertools.batched``
    (Python 3.12)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _most_used(backends: list[str]) -> str | None:
    return max(set(backends), key=backends.count) if backends else None


def _scored_segments(segments: list[dict], scores: list[dict]) -> list[dict]:
    if len(segments) != len(scores):
        raise RuntimeError(f"{len(segments)} segments but {len(scores)} decoded chunks")
    out = []
    for index, (segment, score) in enumerate(zip(segments, scores)):
        out.append({
            "id": index,
            "seek": round(segment["start"] * SAMPLE_RATE / HOP_LENGTH),
            "start": float(segment["start"]),
            "end": float(segment["end"]),
            "text": segment["text"],
            "tokens": score["tokens"],
            "temperature": 0.0,
            "avg_logprob": float(segment["avg_logprob"]),
            "compression_ratio": get_compression_ratio(segment["text"]) if segment["text"] else 0.0,
            "no_speech_prob": score["no_speech_prob"],
        })
    return out


def _words_by_segment(aligned: list[dict], segments: list[dict]) -> list[list[dict]]:
    """Assign each aligned word to the transcribed segment whose span holds its midpoint
    (WhisperX may split one segment into several sentences)."""
    words: list[list[dict]] = [[] for _ in segments]
    for aligned_segment in aligned:
        for word in aligned_segment.get("words", []):
            start = word.get("start", aligned_segment["start"])
            end = word.get("end", aligned_segment["end"])
            middle = (start + end) / 2
            index = next((i for i, s in enumerate(segments) if s["start"] <= middle <= s["end"]),
                         len(segments) - 1)
            words[index].append({"word": word["word"], "start": float(start), "end": float(end),
                                 "probability": float(word.get("score", 0.0))})
    return words
