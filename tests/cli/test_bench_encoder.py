"""``amanuensis bench encoder``: per-row lines and a final JSON line with the runtime encoder
timed against CTranslate2's in the same run, its error, and the NPU ops' FLOP share."""

from __future__ import annotations

import json

import pytest

from app.cli import main


@pytest.mark.slow
def test_bench_encoder_prints_rows_and_a_final_json_line(capsys):
    assert main(["bench", "encoder", "--chunks", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    rows = [line.split() for line in lines[1:-1]]
    assert [row[1] for row in rows] == ["ctranslate2", "runtime"]
    assert summary["chunks"] == 1 and summary["runtime_over_ctranslate2"] > 0
    assert summary["max_abs_err_vs_ctranslate2"] <= 1e-3
    # tiny.en: 4 layers, d 384, 1500 positions, FFN 1536, 80 mels
    attention = 4 * 2 * 2 * 1500 * 1500 * 384
    gelu = 3000 * 384 + 1500 * 384 + 4 * 1500 * 1536
    matmul = 2 * 3000 * 384 * 240 + 2 * 1500 * 384 * 1152 + 4 * 2 * 1500 * 384 * (4 * 384 + 3072)
    assert summary["npu_ops_flop_share"] == round((attention + gelu) / (attention + gelu + matmul), 3)


def test_bench_encoder_refuses_no_chunks():
    with pytest.raises(SystemExit, match="--chunks"):
        main(["bench", "encoder", "--chunks", "0"])
