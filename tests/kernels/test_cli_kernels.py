"""`amanuensis kernels verify` end to end on one file."""

from __future__ import annotations

import json

from app.cli import main
from tests.speech import speech_file


def test_verify_prints_table_and_json(capsys):
    args = ["kernels", "verify", "--frames", "500", "--audio", str(speech_file("jfk/jfk.wav"))]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["bit_exact"] is True and summary["calls_per_hour"] == 120
    assert summary["frames"] >= 500
    assert any(line.startswith("silence") for line in lines)
    assert summary["max_abs_err"] <= 0.05 and summary["within_bounds"]


def test_verify_missing_file_is_an_error(capsys, tmp_path):
    assert main(["kernels", "verify", "--frames", "10", "--audio", str(tmp_path / "no.wav")]) == 2
    assert "not found" in capsys.readouterr().out
