"""``amanuensis bench jobs`` end to end on a tiny input: its own redis-server, two real workers on
the real tiny.en model, one round of two jobs per worker count; its final JSON line is checked
for every field and for sane values (no wall time is asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.jobs.conftest import require
from tests.jobs.helpers import real_model_env, require_speech
from tests.speech import SPEECH_DIR

JFK = SPEECH_DIR / "jfk" / "jfk.flac"
pytestmark = pytest.mark.slow


def test_bench_jobs_prints_throughput_and_scaling_as_a_final_json_line():
    require_speech()
    require(shutil.which("redis-server") is not None,
            "redis-server is not installed (scripts/install-system-packages.sh)")
    env = {**os.environ, **real_model_env(), "PYTHONPATH": str(REPO_ROOT)}
    for name in ("AMANUENSIS_BROKER_URL", "AMANUENSIS_DATABASE_URL", "AMANUENSIS_STORAGE_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; raise SystemExit(main())", "bench",
         "jobs", "--audio", str(JFK), "--jobs", "2", "--rounds", "1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    rows = [line for line in lines if line.startswith("round=")]
    assert [row.split()[1] for row in rows] == ["workers=1", "workers=2"]
    result = json.loads(lines[-1])
    assert set(result) == {
        "bench", "model", "jobs", "rounds", "jobs_succeeded", "audio_seconds_per_job",
        "threads_per_worker", "audio_hours_per_hour_1_worker", "audio_hours_per_hour_2_workers",
        "scaling_ratio_2_vs_1"}
    assert (result["bench"], result["jobs"], result["rounds"]) == ("jobs", 2, 1)
    assert result["jobs_succeeded"] == 4  # two jobs on one worker, two on two
    assert result["model"] == "tiny.en"  # the id clients see, not the bundled directory
    assert abs(result["audio_seconds_per_job"] - 11.0) < 0.1
    assert result["audio_hours_per_hour_1_worker"] > 0
    assert result["audio_hours_per_hour_2_workers"] > 0
    ratio = result["audio_hours_per_hour_2_workers"] / result["audio_hours_per_hour_1_worker"]
    assert result["scaling_ratio_2_vs_1"] == pytest.approx(ratio, abs=0.002)
    assert result["scaling_ratio_2_vs_1"] > 0
