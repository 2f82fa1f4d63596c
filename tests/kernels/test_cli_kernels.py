"""`amanuensis kernels verify` end to end on one file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.cli import main
from tests.speech import speech_file

SIGNALS = ("silence", "dc_max", "dc_min", "clipped_square", "full_scale_sweep", "impulses",
           "lsb_toggle")


def test_verify_prints_table_and_json(capsys):
    args = ["kernels", "verify", "--frames", "500", "--heads", "2",
            "--audio", str(speech_file("jfk/jfk.wav"))]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["bit_exact"] is True
    assert summary["frames"] >= 500
    synthetic_rows = [line.split() for line in lines[1:] if line.split()[0] in SIGNALS]
    assert sorted(row[0] for row in synthetic_rows) == sorted(SIGNALS)
    assert all(row[2] == "true" for row in synthetic_rows)  # each input bit-exact
    assert summary["max_abs_err"] <= 0.05 and summary["within_bounds"]
    gelu, attention = summary["gelu"], summary["attention"]
    assert gelu["values"] == 65536 and gelu["bit_exact"] and gelu["max_abs_err"] <= 2 ** -7
    assert attention["heads"] == 2 and attention["bit_exact"]
    assert 0 < attention["max_err_over_max_v"] <= 2 ** -8
    assert any(line.startswith("attention_head1_x4") for line in lines)


def test_verify_missing_file_is_an_error(capsys, tmp_path):
    assert main(["kernels", "verify", "--frames", "10", "--audio", str(tmp_path / "no.wav")]) == 2
    assert "not found" in capsys.readouterr().out


def test_verify_runs_from_an_installed_wheel(tmp_path):
    """The wheel carries every kernel's sources and header; installed outside any checkout, its
    `kernels verify` compiles the host builds into the user's cache (never into the package)
    and they are bit-exact against the golden models."""
    wheels, site, cache = tmp_path / "wheels", tmp_path / "site", tmp_path / "cache"
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(wheels), str(repo)], check=True, capture_output=True)
    (wheel,) = wheels.glob("amanuensis-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    environment = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "kernels", "verify", "--frames", "200", "--heads", "1",
         "--audio", str(speech_file("jfk/jfk.wav"))],
        cwd=tmp_path, env=environment, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["bit_exact"] and summary["gelu"]["bit_exact"]
    assert summary["attention"]["bit_exact"]
    built = sorted(path.name for path in (cache / "amanuensis" / "kernels" / "host").glob("*.so"))
    assert built == ["libattention.so", "libgelu.so", "libmel_n128.so", "libmel_n80.so"]
    assert not (site / "npu" / "kernel_sources" / "build").exists()
