"""`amanuensis kernels verify` end to end on one file."""

from __future__ import annotations

import json

from app.cli import main
from app.cli.kernels import speech_files

SIGNALS = ("silence", "dc_max", "dc_min", "clipped_square", "full_scale_sweep", "impulses",
           "lsb_toggle")


def test_verify_prints_table_and_json(capsys):
    files = [p for p in speech_files() if p.name == "jfk.wav"]
    args = ["kernels", "verify", "--frames", "500"] + (["--audio", str(files[0])] if files else [])
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["bit_exact"] is True
    assert summary["frames"] >= 500
    synthetic_rows = [line.split() for line in lines[1:] if line.split()[0] in SIGNALS]
    assert sorted(row[0] for row in synthetic_rows) == sorted(SIGNALS)
    assert all(row[2] == "true" for row in synthetic_rows)  # each input bit-exact
    if files:
        assert summary["max_abs_err"] <= 0.05 and summary["within_bounds"]


def test_verify_missing_file_is_an_error(capsys, tmp_path):
    assert main(["kernels", "verify", "--frames", "10", "--audio", str(tmp_path / "no.wav")]) == 2
    assert "not found" in capsys.readouterr().out
