"""``amanuensis doctor`` and ``bench mel`` in a process that sees the fake NPU (device node,
fake artifacts and the strict fake pyxrt, through the environment ``make_fake_device`` returns),
and ``bench mel --npu-host-only``, which needs no device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.pyxrt import make_fake_device

REPO = Path(__file__).resolve().parents[2]
CLI = "import sys; from app.cli import main; sys.exit(main())"


def run_cli(tmp_path: Path, *args: str, faults: str = "", fake_npu: bool = True,
            env_extra: dict[str, str] | None = None):
    env = dict(os.environ, FAKE_PYXRT_FAULTS=faults, PYTHONPATH=str(REPO), **(env_extra or {}))
    if fake_npu:
        fake = make_fake_device(tmp_path)
        artifacts = fake.pop("ARTIFACTS_DIR")
        env.update(fake, PYTHONPATH=os.pathsep.join([str(REPO), fake["PYTHONPATH"]]))
        args = tuple(artifacts if arg == "{artifacts}" else arg for arg in args)
    result = subprocess.run([sys.executable, "-c", CLI, *args], check=False, cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def doctor(tmp_path: Path, faults: str = "", env_extra: dict[str, str] | None = None):
    return run_cli(tmp_path, "doctor", "--kernel-dir", "{artifacts}", faults=faults,
                   env_extra=env_extra)


def test_doctor_with_the_fake_npu_reports_npu_batch_and_passes_its_self_check(tmp_path):
    result, report = doctor(tmp_path)
    assert report["mel_backend"] == "npu-batch", report["mel_backend_reason"]
    assert report["pyxrt"] is True and report["fallbacks"] == {}
    assert report["accel_devices"] == [str(tmp_path / "accel" / "accel0")]
    assert "mel_n80_f3000.xclbin" in report["kernel_artifacts"]
    check = report["self_check"]
    assert check["backend"] == "npu-batch" and check["ok"] is True
    assert 0 < check["max_abs_err"] <= check["tolerance"]  # fixed point: close, never identical
    assert "mel back-end: npu-batch" in result.stdout
    assert report["encoder_backend"] == "ctranslate2"
    for op in ("gelu", "attention"):
        ops = report["ops"][op]
        assert ops["backend"] == "npu" and ops["fallbacks"] == {}, ops["reason"]
        assert ops["self_check"]["ok"] is True
        assert 0 < ops["self_check"]["max_abs_err"] <= ops["self_check"]["tolerance"]  # bf16
        assert f"{op}: npu (npu opened); fallbacks none" in result.stdout


def test_doctor_names_the_configured_encoder_back_end(tmp_path):
    result, report = doctor(tmp_path, env_extra={"AMANUENSIS_ENCODER_BACKEND": "runtime"})
    assert report["encoder_backend"] == "runtime"
    assert "encoder back-end: runtime" in result.stdout


@pytest.mark.parametrize("faults, reason", [("zeros", "bad_output"), ("xclbin_load", "load_failed")])
def test_doctor_with_a_failing_fake_npu_reports_the_cpu_and_why(tmp_path, faults, reason):
    _, report = doctor(tmp_path, faults)
    assert report["mel_backend"] == "cpu" and report["fallbacks"] == {reason: 2}
    assert f"npu-batch unavailable ({reason}" in report["mel_backend_reason"]
    assert report["self_check"]["ok"] is True
    for op in ("gelu", "attention"):
        ops = report["ops"][op]
        assert ops["backend"] == "cpu" and ops["fallbacks"] == {reason: 1}
        assert f"npu unavailable ({reason}" in ops["reason"]
        assert ops["self_check"]["ok"] is True


def test_bench_mel_adds_the_npu_back_ends_when_they_open(tmp_path):
    result, report = run_cli(tmp_path, "bench", "mel", "--seconds", "3", "--repeats", "1",
                             "--audio", "noise", "--kernel-dir", "{artifacts}")
    assert report["mel_backend"] == "npu-batch"
    assert report["npu_batch_x_realtime"] > 0 and report["npu_frame_x_realtime"] > 0
    assert 0 < report["max_abs_err"] <= 0.05  # the runtime on npu-batch: fixed point vs WhisperX
    assert "amanuensis npu-batch" in result.stdout and "amanuensis npu-frame" in result.stdout


def test_bench_mel_npu_host_only_reports_the_host_cpu_ratio(tmp_path):
    result, report = run_cli(tmp_path, "bench", "mel", "--seconds", "40", "--repeats", "1",
                             "--audio", "noise", "--npu-host-only", fake_npu=False)
    assert report["mel_backend"] == "cpu" or Path("/dev/accel/accel0").exists()
    assert report["npu_host_cpu_ms_per_chunk"] > 0 and report["cpu_backend_cpu_ms_per_chunk"] > 0
    assert report["npu_host_cpu_ratio"] == pytest.approx(
        report["npu_host_cpu_ms_per_chunk"] / report["cpu_backend_cpu_ms_per_chunk"], rel=0.02)
    assert report["npu_frame_host_cpu_ratio"] > 0
    assert "NPU path host-side CPU time per 30 s chunk" in result.stdout
