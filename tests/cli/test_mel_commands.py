"""Smoke tests of ``amanuensis bench mel`` and ``amanuensis doctor`` (never asserting speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from npu import runtime as runtime_module
from npu.audio_spec import HOP_LENGTH
from npu.backend import MelBackend
from npu.config import FrontEndConfig
from tests.speech import speech_files

REPO = Path(__file__).resolve().parents[2]
CLI = "import sys; from app.cli import main; sys.exit(main())"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("audio", ["noise", "speech"])
def test_bench_mel_prints_a_table_and_a_final_json_line(audio):
    result = run_cli("bench", "mel", "--seconds", "3", "--repeats", "1", "--audio", audio)
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    for key in ("ours_x_realtime", "librosa_x_realtime", "whisperx_x_realtime", "speedup_vs_librosa", "speedup_vs_whisperx"):
        assert report[key] > 0, key
    assert report["speedup_vs_librosa"] == pytest.approx(report["ours_x_realtime"] / report["librosa_x_realtime"], rel=0.02)
    assert report["max_abs_err"] <= 1e-4
    assert "librosa" in result.stdout and "whisperx (torch)" in result.stdout
    assert report["chunk_count"] == 1 and report["speedup_vs_asrfront_chunks"] > 0
    assert report["ours_chunks_ms"] > 0 and report["ours_chunk_calls_ms"] > 0
    assert report["speedup_vs_asrfront_long"] > 0
    assert report["max_abs_err_ours_vs_exact"] <= 1e-6  # float64 FFT, exact window: on the maths
    assert report["max_abs_err_asrfront_vs_whisperx"] <= 1e-4
    if audio == "speech":  # the engine's VAD finds it: its chunks are timed too
        assert report["vad_chunk_count"] >= 1 and report["speedup_vs_asrfront_vad_chunks"] > 0
        assert 0 < report["vad_chunk_mean_seconds"] <= 3


def test_bench_mel_every_file_reports_the_worst_errors_of_each_front_end():
    result = run_cli("bench", "mel", "--seconds", "3", "--repeats", "1", "--every-file")
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["signals_checked"] == len(speech_files()) + 1  # every file, and noise
    assert report["worst_err_ours_vs_exact"] <= 1e-6  # float64 FFT, exact window: on the maths
    assert 0 < report["worst_err_whisperx_vs_exact"] <= 1e-4
    assert report["worst_err_ours_vs_whisperx"] <= report["worst_err_whisperx_vs_exact"] + 1e-5
    for front_end in ("ours", "asrfront"):
        assert 0 <= report[f"signals_{front_end}_within_2e-5_of_whisperx"] <= report["signals_checked"]


def test_doctor_reports_and_self_checks():
    result = run_cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    report = last_json(result.stdout)
    assert report["mel_backend"] == report["self_check"]["backend"]
    assert report["self_check"]["ok"] is True
    assert report["pyxrt"] is False or "pyxrt importable: yes" in result.stdout
    if not Path("/dev/accel/accel0").exists():
        assert report["mel_backend"] == "cpu" and report["accel_devices"] == []


class WrongButPlausibleNpu(MelBackend):
    """A fake NPU tier whose features are finite and non-zero but wrong: only the self-check catches it."""

    name = "npu-batch"

    def __init__(self, config: FrontEndConfig) -> None:
        self.n_mels = config.n_mels

    def log_mel(self, audio, padding=0):
        return np.full((self.n_mels, (audio.size + padding) // HOP_LENGTH), 0.3, np.float32)

    def close(self):
        pass


def test_doctor_fails_when_the_active_backend_disagrees_with_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(runtime_module, "default_backend_factories", lambda: [("npu-batch", WrongButPlausibleNpu)])
    assert main(["doctor"]) == 1
    report = last_json(capsys.readouterr().out)
    assert report["mel_backend"] == "npu-batch" and report["self_check"]["ok"] is False
