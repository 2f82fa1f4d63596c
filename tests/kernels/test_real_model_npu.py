"""The NPU path - the strict fake pyxrt running the host-compiled mel kernel - transcribes the
shared speech with the real default model as well as the CPU path does."""

from __future__ import annotations

import pytest

from app.evaluation.wer import normalise, word_error_rate
from app.service import create_runtime
from app.settings import Settings
from app.transcription.engine import Engine
from tests.speech import decode_16k_mono, speech_utterances

WER_POINTS_LIMIT = 0.5
IDENTICAL_SHARE = 0.95
"""Share of transcripts whose words (after Whisper's normaliser) equal the CPU path's. Raw text
differs more often (a comma or a capital after a slightly different beam): the NPU kernel's
fixed-point log-mel is up to 4e-3 from the CPU's on quiet frames (mean 7e-5)."""


def transcripts(settings: Settings, audios) -> tuple[list[str], dict]:
    with create_runtime(settings) as runtime, Engine(settings, runtime) as engine:
        texts = [engine.transcribe(audio).text for audio in audios]
        return texts, runtime.get_performance_metrics()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_npu_path_transcribes_like_the_cpu_path(fake_npu):
    utterances = speech_utterances()
    audios = [decode_16k_mono(utterance.audio) for utterance in utterances]
    references = [utterance.reference for utterance in utterances]
    cpu, _ = transcripts(Settings(mel_backend="cpu"), audios)
    npu, metrics = transcripts(Settings(mel_backend="npu", kernel_dir=fake_npu.kernel_dir,
                                        npu_device_dir=fake_npu.device_dir), audios)
    assert metrics["mel_backend"].startswith("npu"), metrics
    assert fake_npu.pyxrt.STATS["runs"] >= len(audios)
    cpu_wer, npu_wer = word_error_rate(references, cpu), word_error_rate(references, npu)
    identical_text = sum(a == b for a, b in zip(cpu, npu)) / len(cpu)
    identical_words = sum(normalise(a) == normalise(b) for a, b in zip(cpu, npu)) / len(cpu)
    print(f"WER cpu {cpu_wer:.4f} npu {npu_wer:.4f}; identical transcripts: "
          f"{identical_words:.1%} by words, {identical_text:.1%} as raw text")
    assert abs(npu_wer - cpu_wer) * 100 <= WER_POINTS_LIMIT
    assert identical_words >= IDENTICAL_SHARE
