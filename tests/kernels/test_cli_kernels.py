"""`amanuensis kernels verify` end to end on one file."""

from __future__ import annotations

import json

from app.cli import main
from app.cli.kernels import speech_files

SIGNALS = ("silence", "dc_max", "dc_min", "clipped_square", "full_scale_sweep", "impulses",
           "lsb_toggle")


def test_verify_prints_table_and_json(capsys):
    files = [p for p in speech_files() if p.name == "jfk.wav"]
    args = ["kernels", "verify", "--frames", "500", "--heads", "2"] + (
        ["--audio", str(files[0])] if files else [])
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
    gelu, attention = summary["gelu"], summary["attention"]
    assert gelu["values"] == 65536 and gelu["bit_exact"] and gelu["max_abs_err"] <= 2 ** -7
    assert attention["heads"] == 2 and attention["bit_exact"]
    assert 0 < attention["max_err_over_max_v"] <= 2 ** -8
    assert any(line.startswith("attention_head1_x4") for line in lines)


def test_verify_missing_file_is_an_error(capsys, tmp_path):
    assert main(["kernels", "verify", "--frames", "10", "--audio", str(tmp_path / "no.wav")]) == 2
    assert "not found" in capsys.readouterr().out
