"""The NPU path - the strict fake pyxrt running the host-compiled mel kernel - transcribes the
shared speech with the real default model as well as the CPU path does."""

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


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory):
    """(references, CPU transcripts, NPU transcripts) of every shared utterance."""
    utterances = speech_utterances()
    audios = [decode_16k_mono(utterance.audio) for utterance in utterances]
    cpu, _ = transcripts(Settings(mel_backend="cpu"), audios)
    with pytest.MonkeyPatch.context() as patch:
        fake = install_fake_npu(patch, tmp_path_factory.mktemp("fake-npu"))
        npu, metrics = transcripts(Settings(mel_backend="npu", kernel_dir=fake.kernel_dir,
                                            npu_device_dir=fake.device_dir), audios)
        assert metrics["mel_backend"].startswith("npu"), metrics
        assert fake.pyxrt.STATS["runs"] >= len(audios)
    sys.modules.pop("pyxrt", None)
    return [utterance.reference for utterance in utterances], cpu, npu


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
    "known gap: 81% of transcripts are identical as text and 86% by words, not 95%. The NPU "
    "kernel's int16 input (one power-of-two gain per chunk) leaves near-floor frames of loud "
    "chunks a few bits, so its log-mel is up to 4e-3 from the CPU's there (mean 7e-5), and "
    "beam search turns that into a different comma or word"))
def test_npu_path_transcripts_are_the_cpu_paths(both_paths):
    _, cpu, npu = both_paths
    identical_text = sum(a == b for a, b in zip(cpu, npu)) / len(cpu)
    identical_words = sum(normalise(a) == normalise(b) for a, b in zip(cpu, npu)) / len(cpu)
    print(f"identical transcripts: {identical_text:.1%} as text, {identical_words:.1%} by words")
    assert identical_text >= IDENTICAL_SHARE
