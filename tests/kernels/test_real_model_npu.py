"""The NPU path - the strict fake pyxrt running the host-compiled mel kernel - transcribes the
shared speech with the real default model as well as the CPU path does.

Identity of transcripts is measured twice. With the default int8 decoder (CTranslate2 quantises
activations to int8 on the fly) a transcript is a discontinuous function of the features: moving
0.1% of the CPU path's own feature values by one float32 ulp changes 4 of the 37 transcripts,
and WhisperX's own torch features give 30 of 37 identical to the CPU path's. There, only
bit-identical features could reach 95%. With a float32 decoder the transcript follows the
features continuously, and identity measures the front-end."""

from __future__ import annotations

import sys

import pytest

from app.evaluation.wer import normalise, word_error_rate
from app.runtime import create_runtime
from app.settings import Settings
from app.transcription.engine import Engine
from tests.kernels.conftest import install_fake_npu
from tests.speech import decode_16k_mono, speech_utterances

WER_POINTS_LIMIT = 0.5
IDENTICAL_SHARE = 0.95


def transcripts(settings: Settings, audios) -> tuple[list[str], dict]:
    with create_runtime(settings) as runtime, Engine(settings, runtime) as engine:
        texts = [engine.transcribe(audio).text for audio in audios]
        return texts, runtime.get_performance_metrics()


def cpu_and_npu_transcripts(root, **settings) -> tuple[list[str], list[str], list[str]]:
    """(references, CPU transcripts, NPU transcripts) of every shared utterance, both paths
    with the same ``settings``; the fake NPU lives under ``root``."""
    utterances = speech_utterances()
    audios = [decode_16k_mono(utterance.audio) for utterance in utterances]
    cpu, _ = transcripts(Settings(mel_backend="cpu", **settings), audios)
    with pytest.MonkeyPatch.context() as patch:
        fake = install_fake_npu(patch, root)
        npu, metrics = transcripts(Settings(mel_backend="npu", kernel_dir=fake.kernel_dir,
                                            npu_device_dir=fake.device_dir, **settings), audios)
        assert metrics["mel_backend"].startswith("npu"), metrics
        assert fake.pyxrt.STATS["runs"] >= len(audios)
    sys.modules.pop("pyxrt", None)
    return [utterance.reference for utterance in utterances], cpu, npu


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory):
    """Both paths with the default settings (int8 decoder)."""
    return cpu_and_npu_transcripts(tmp_path_factory.mktemp("fake-npu"))


def identical_shares(cpu: list[str], npu: list[str]) -> tuple[float, float]:
    """Share of identical transcripts as text and after Whisper's normaliser (words)."""
    text = sum(a == b for a, b in zip(cpu, npu, strict=True)) / len(cpu)
    words = sum(normalise(a) == normalise(b) for a, b in zip(cpu, npu, strict=True)) / len(cpu)
    print(f"identical transcripts: {text:.1%} as text, {words:.1%} by words")
    return text, words


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_npu_path_word_error_rate_is_within_half_a_point_of_the_cpu_path(both_paths):
    references, cpu, npu = both_paths
    cpu_wer, npu_wer = word_error_rate(references, cpu), word_error_rate(references, npu)
    print(f"WER cpu {cpu_wer:.4f} npu {npu_wer:.4f}")
    assert abs(npu_wer - cpu_wer) * 100 <= WER_POINTS_LIMIT


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.xfail(strict=True, reason=(
    "the int8 decoder, not the kernel: 81% of transcripts are identical as text and 86% by "
    "words with the NPU path's log-mel within 3.2e-5 of the CPU path's (mean 9e-7; 84% / 89% "
    "with the same kernel before its per-block input gains moved the last bits), as WhisperX's "
    "own features give 81% and one-ulp changes to 0.1% of the CPU path's features 89%; only "
    "bit-identical features reach 95% there (see the module docstring)"))
def test_npu_path_transcripts_are_the_cpu_paths_with_the_default_int8_decoder(both_paths):
    _, cpu, npu = both_paths
    identical_text, _ = identical_shares(cpu, npu)
    assert identical_text >= IDENTICAL_SHARE


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_npu_path_transcripts_are_the_cpu_paths_with_a_float32_decoder(tmp_path_factory):
    _, cpu, npu = cpu_and_npu_transcripts(tmp_path_factory.mktemp("fake-npu-float32"),
                                          compute_type="float32")
    identical_text, _ = identical_shares(cpu, npu)
    assert identical_text >= IDENTICAL_SHARE
