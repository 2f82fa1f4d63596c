"""Start-up and shutdown in-process: the runtime and the model threads do not outlive the app."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.service import create_app
from app.settings import Settings
from npu.audio_spec import SAMPLE_RATE
from tests.synth_media import wav_pcm16


def model_threads() -> list[threading.Thread]:
    prefixes = ("amanuensis-model-load", "amanuensis-slot")
    return [t for t in threading.enumerate() if t.name.startswith(prefixes)]


def wait_until_loaded(client: TestClient) -> None:
    while client.get("/status").json()["problem"] == "the model is still loading":
        time.sleep(0.05)


def test_shutdown_closes_the_runtime_and_the_model_threads(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = create_app(Settings(model=str(tiny_model_dir), mel_backend="cpu", cpu_threads=1))
    with TestClient(app) as client:
        wait_until_loaded(client)
        assert client.get("/ready").status_code == 200
        silence = wav_pcm16(np.zeros((1, SAMPLE_RATE), np.float32), SAMPLE_RATE)
        response = client.post("/transcribe", files={"file": ("s.wav", silence, "audio/wav")})
        assert response.status_code == 200, response.text
        assert model_threads()
        state = app.state.service
    assert not model_threads()
    second = np.zeros(SAMPLE_RATE, np.float32)
    with pytest.raises(RuntimeError, match="closed"):
        state.engine.transcribe(second)
    with pytest.raises(RuntimeError, match="closed"):
        state.runtime.process_audio_to_features(second)


def test_npu_only_without_an_npu_is_not_ready_with_the_fix(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = create_app(Settings(model=str(tiny_model_dir), mel_backend="npu"))
    with TestClient(app) as client:
        wait_until_loaded(client)
        assert client.get("/health").status_code == 200
        response = client.get("/ready")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "runtime_unavailable"
        assert "AMANUENSIS_MEL_BACKEND=auto" in error["message"]


def test_runtime_gets_the_models_mel_band_count(tiny_model_dir, tmp_path):
    from app.transcription.result import model_n_mels

    assert model_n_mels(Settings(model=str(tiny_model_dir))) == 80
    (tmp_path / "preprocessor_config.json").write_text('{"feature_size": 128}')
    assert model_n_mels(Settings(model=str(tmp_path))) == 128
    (tmp_path / "preprocessor_config.json").unlink()
    assert model_n_mels(Settings(model=str(tmp_path))) == 80  # faster-whisper's default


def test_the_app_imports_without_whisperx():
    """Importing the service (what uvicorn does before it listens) leaves WhisperX, torch and
    transformers to the model-loading thread, so /health answers while they import."""
    import subprocess
    import sys

    script = ("import sys, app.service; "
              "print(sorted(m for m in ('whisperx.asr', 'torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


LOAD_SCRIPT = """
import gc, json, sys
from app.service import load
from app.settings import Settings
from app.state import ServiceState

state = ServiceState(Settings(model=sys.argv[1], mel_backend="cpu", cpu_threads=1))
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
load(state)
print(json.dumps({"ready": state.engine is not None, "problem": state.problem,
                  "phases": state.start_up, "collections": collections,
                  "collector_on": gc.isenabled(),
                  "engine_imported": "whisperx.asr" in sys.modules}))
"""


def test_loading_imports_the_engine_beside_the_runtime_with_the_collector_paused(tiny_model_dir):
    """In a fresh process (nothing imported yet): the engine import begins before the runtime is
    done, the warm-up beside the garbage collection, and while loading the cyclic garbage
    collector makes no pass of its own, only the one full collection at the end (with it on,
    importing WhisperX took over a thousand passes)."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(tiny_model_dir)],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ready"] and report["engine_imported"], report["problem"]
    phases = report["phases"]
    assert set(phases) == {"engine_import", "runtime", "model", "warm_up", "collect"}
    assert phases["engine_import"][0] < phases["runtime"][1]  # they overlap
    assert phases["runtime"][0] < phases["engine_import"][1]
    assert phases["engine_import"][1] <= phases["model"][0] <= phases["warm_up"][0]
    assert phases["warm_up"][0] < phases["collect"][1]  # they overlap
    assert phases["collect"][0] < phases["warm_up"][1]
    assert report["collections"][:1] == [2], report["collections"]  # the first: the full one
    assert report["collector_on"]


def test_the_start_up_pause_leaves_a_collector_turned_off_by_someone_else_off():
    import gc

    from app import gc_pause

    gc_pause.pause()
    assert not gc.isenabled()
    gc_pause.pause()  # loading inside `amanuensis serve`, which paused it first
    gc_pause.resume()
    assert gc.isenabled()
    gc.disable()
    try:
        gc_pause.pause()
        gc_pause.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
