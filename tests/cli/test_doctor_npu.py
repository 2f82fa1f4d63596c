"""``amanuensis doctor`` in a process that sees the fake NPU (device node, fake artifacts and
the strict fake pyxrt, through the environment ``make_fake_device`` returns)."""

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


def doctor(tmp_path: Path, faults: str = "") -> tuple[subprocess.CompletedProcess, dict]:
    fake = make_fake_device(tmp_path)
    artifacts = fake.pop("ARTIFACTS_DIR")
    env = dict(os.environ, **fake, FAKE_PYXRT_FAULTS=faults)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env["PYTHONPATH"]])
    result = subprocess.run([sys.executable, "-c", CLI, "doctor", "--kernel-dir", artifacts], check=False,
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def test_doctor_with_the_fake_npu_reports_npu_batch_and_passes_its_self_check(tmp_path):
    result, report = doctor(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["mel_backend"] == "npu-batch", report["mel_backend_reason"]
    assert report["pyxrt"] is True and report["fallbacks"] == {}
    assert report["accel_devices"] == [str(tmp_path / "accel" / "accel0")]
    assert "mel_n80_f3000.xclbin" in report["kernel_artifacts"]
    check = report["self_check"]
    assert check["backend"] == "npu-batch" and check["ok"] is True
    assert 0 < check["max_abs_err"] <= check["tolerance"]  # fixed point: close, never identical
    assert "mel back-end: npu-batch" in result.stdout


@pytest.mark.parametrize("faults, reason", [("zeros", "bad_output"), ("xclbin_load", "load_failed")])
def test_doctor_with_a_failing_fake_npu_reports_the_cpu_and_why(tmp_path, faults, reason):
    result, report = doctor(tmp_path, faults)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["mel_backend"] == "cpu" and report["fallbacks"] == {reason: 2}
    assert f"npu-batch unavailable ({reason}" in report["mel_backend_reason"]
    assert report["self_check"]["ok"] is True
