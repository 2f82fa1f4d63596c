"""The generated tiny models load offline through the same calls the service makes."""

from __future__ import annotations

import json

import ctranslate2
import tokenizers
import whisperx

from app.transcription.tiny_model import RANDOM_WEIGHTS_NOTICE

# Whisper's multilingual token ids (openai/whisper tokenizer, 51865-token vocabulary).
WHISPER_IDS = {
    "<|endoftext|>": 50257,
    "<|startoftranscript|>": 50258,
    "<|en|>": 50259,
    "<|su|>": 50357,
    "<|translate|>": 50358,
    "<|transcribe|>": 50359,
    "<|startoflm|>": 50360,
    "<|startofprev|>": 50361,
    "<|nospeech|>": 50362,
    "<|notimestamps|>": 50363,
    "<|0.00|>": 50364,
    "<|30.00|>": 51864,
}


def test_tokenizer_has_whisper_special_token_layout(tiny_model_dir):
    tokenizer = tokenizers.Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 51865
    assert {token: tokenizer.token_to_id(token) for token in WHISPER_IDS} == WHISPER_IDS
    assert tokenizer.decode(tokenizer.encode(" hello world").ids) == " hello world"


def test_ctranslate2_sees_a_multilingual_whisper(tiny_model_dir):
    model = ctranslate2.models.Whisper(str(tiny_model_dir), device="cpu")
    assert model.is_multilingual
    assert model.num_languages == 99
    assert model.n_mels == 80
    config = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    assert config["feature_size"] == 80


def test_labelled_as_random_weights(tiny_models):
    for directory in (tiny_models.whisper, tiny_models.aligner):
        assert RANDOM_WEIGHTS_NOTICE in (directory / "README.md").read_text()


def test_whisperx_loads_it_offline(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for compute_type in ("int8", "float32"):
        pipeline = whisperx.load_model(str(tiny_model_dir), device="cpu", compute_type=compute_type,
                                       vad_method="pyannote", threads=1)
        assert pipeline.model.model.is_multilingual


def test_aligner_loads_through_whisperx(tiny_models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, metadata = whisperx.load_align_model("en", "cpu", model_name=str(tiny_models.aligner))
    assert metadata["type"] == "huggingface"
    assert set("abcdefghijklmnopqrstuvwxyz'") <= set(metadata["dictionary"])
    assert model.config.vocab_size == len(metadata["dictionary"])
