"""``amanuensis tiny-model``, ``transcribe``, ``bench serve``, ``bench startup`` and ``bench wer``,
run as a user would."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from app.cli import main
from app.transcription.tiny_model import RANDOM_WEIGHTS_NOTICE
from tests.app.service_helpers import soundfile_duration
from tests.conftest import REPO_ROOT
from tests.speech import clip, speech_utterances


def test_tiny_model_writes_a_labelled_model(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "tiny")]) == 0
    out = capsys.readouterr().out
    assert RANDOM_WEIGHTS_NOTICE in out
    assert f"AMANUENSIS_MODEL={(tmp_path / 'tiny' / 'whisper').resolve()}" in out
    for name in ("whisper/model.bin", "whisper/tokenizer.json", "whisper/preprocessor_config.json",
                 "aligner/config.json", "aligner/vocab.json",
                 "nltk_data/tokenizers/punkt_tab/english/collocations.tab"):
        assert (tmp_path / "tiny" / name).is_file(), name


@pytest.fixture
def tiny_settings(tiny_env, monkeypatch):
    for name, value in tiny_env.items():
        monkeypatch.setenv(name, value)


def test_transcribe_writes_srt_and_json(tiny_settings, tmp_path, capsys):
    jfk = clip("jfk")
    assert main(["transcribe", str(jfk), "--format", "json", "--output", str(tmp_path)]) == 0
    body = json.loads((tmp_path / "jfk.json").read_text())
    assert body["duration"] == pytest.approx(soundfile_duration(jfk), abs=1e-3)
    assert body["segments"] and body["text"]
    assert main(["transcribe", str(jfk), "--format", "srt", "--output", str(tmp_path)]) == 0
    cues = re.findall(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)",
                      (tmp_path / "jfk.srt").read_text())
    assert len(cues) == len(body["segments"])
    assert f"{jfk.name}: 100%" in capsys.readouterr().err  # the progress bar


def test_transcribe_reports_a_missing_file(tiny_settings, tmp_path, capsys):
    assert main(["transcribe", str(tmp_path / "absent.wav"), "--format", "txt"]) == 1
    assert "absent.wav" in capsys.readouterr().err


REAL_MODEL_ENV = {"AMANUENSIS_MEL_BACKEND": "cpu", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                  "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
"""A user's environment with nothing but the mel back-end chosen: the default (real) model."""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())", *args],
        check=False, cwd=REPO_ROOT, env=REAL_MODEL_ENV, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_bench_serve_prints_a_json_last_line():
    result = run_cli("bench", "serve", "--seconds", "10", "--repeats", "1", "--settle", "0.1")
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["audio_seconds"] == 10.0
    assert last["model"] == "tiny.en"
    assert last["overhead_ratio"] == pytest.approx(last["service_seconds"] / last["direct_seconds"],
                                                   rel=1e-2)
    assert last["service_x_realtime"] == pytest.approx(10.0 / last["service_seconds"], rel=1e-2)
    assert last["mel_backend"] == "cpu"


@pytest.mark.slow
def test_bench_startup_prints_a_json_last_line():
    result = run_cli("bench", "startup", "--seconds", "5", "--repeats", "1")
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["model"] == "tiny.en"
    assert last["audio_seconds"] == 5.0
    assert 0 < last["health_seconds"] <= last["ready_seconds"]
    assert last["first_request_seconds"] > 0 and last["second_request_seconds"] > 0
    assert set(last["phases"]) == {"engine_import", "runtime", "model", "warm_up",
                                   "collect"}
    assert "baseline" not in last


@pytest.mark.slow
def test_bench_startup_refuses_a_baseline_that_is_no_checkout(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())",
         "bench", "startup", "--baseline", str(tmp_path)],
        check=False, cwd=REPO_ROOT, env=REAL_MODEL_ENV, capture_output=True, text=True)
    assert result.returncode == 2
    assert "is not a checkout of this project" in result.stderr


@pytest.mark.slow
def test_bench_wer_on_a_folder_of_audio_with_references(tmp_path):
    utterances = speech_utterances()
    chosen = [u for u in utterances if u.audio.parent.name in ("jfk", "librispeech")][:3]
    for utterance in chosen:
        (tmp_path / utterance.audio.name).symlink_to(utterance.audio)
        (tmp_path / utterance.audio.with_suffix(".txt").name).write_text(utterance.reference)
    (tmp_path / "unreferenced.flac").symlink_to(utterances[-1].audio)
    rows = run_cli("bench", "wer", str(tmp_path)).stdout.strip().splitlines()
    last = json.loads(rows[-1])
    assert [row.split(":")[0] for row in rows[-4:-1]] == sorted(u.name for u in chosen)
    assert last["files"] == 3 and last["model"] == "tiny.en" and last["beam_size"] == 5
    assert 0 <= last["engine_wer"] <= 0.1 and 0 <= last["faster_whisper_wer"] <= 0.1
    assert last["wer_delta_points"] == pytest.approx(
        100 * (last["engine_wer"] - last["faster_whisper_wer"]), abs=0.02)
    assert last["speed_ratio"] == pytest.approx(
        last["engine_x_realtime"] / last["faster_whisper_x_realtime"], rel=0.02)
