"""``amanuensis bench stream`` against the live real-model service: per-row lines and a final
JSON line whose numbers agree with each other."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from tests.streaming.conftest import LJSPEECH, require_speech

pytestmark = pytest.mark.slow


def test_bench_stream_reports_turn_latencies_against_file_mode(real_service, capsys):
    require_speech()
    clips = [str(LJSPEECH / "wavs" / f"LJ001-000{n}.wav") for n in (2, 4)]
    status = main(["bench", "stream", *clips, "--url", real_service.base_url, "--sessions", "2",
                   "--pace", "10", "--rate", "16000"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert status == 0
    assert sum(line.startswith("round 1 realtime session") for line in lines) == 2
    assert sum(line.startswith("round 1 file client") for line in lines) == 2
    report = json.loads(lines[-1])
    assert report["turns"] == 4 and report["failed_turns"] == report["missing_turns"] == 0
    assert 0 < report["first_delta_p50_s"] <= report["end_of_turn_p50_s"]
    assert report["end_of_turn_p50_s"] <= report["end_of_turn_p95_s"]
    assert report["file_mode_p50_s"] <= report["file_mode_p95_s"]
    assert report["end_of_turn_over_file_mode_p50"] == pytest.approx(
        report["end_of_turn_p50_s"] / report["file_mode_p50_s"])


def test_bench_stream_refuses_a_remote_server(capsys):
    assert main(["bench", "stream", "x.wav", "--url", "http://192.0.2.1:8000"]) == 2
    assert "only loopback" in capsys.readouterr().err
