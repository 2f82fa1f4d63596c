"""No hidden global serialisation: admitted transcriptions run inside the model at the same time,
and each gets exactly the transcript it would get alone.

The proof of overlap is a barrier for two parties inside the model's feature step (the runtime
the engine calls for every chunk): each request waits there, on its first chunk, for the other.
Run one at a time, the first request would wait alone until the barrier's timeout and break it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.settings import Settings
from app.transcription.audio import decode_file
from app.transcription.engine import Engine
from npu.runtime import MelFeatures, UnifiedNPURuntime
from tests.app.test_busy_and_faults import serve
from tests.speech import clip

BARRIER_TIMEOUT_S = 60
CONCURRENT = 2


class RendezvousRuntime:
    """The real runtime, except that each thread's first feature call waits at a barrier with
    ``parties`` places: it only returns once that many requests are inside the model."""

    def __init__(self, runtime: UnifiedNPURuntime, parties: int) -> None:
        self._runtime = runtime
        self.n_mels = runtime.n_mels
        self.barrier = threading.Barrier(parties, timeout=BARRIER_TIMEOUT_S)
        self._arrived: set[int] = set()
        self._lock = threading.Lock()

    def log_mel_batch(self, chunks: list[np.ndarray], paddings: list[int]) -> MelFeatures:
        with self._lock:
            first = threading.get_ident() not in self._arrived
            self._arrived.add(threading.get_ident())
        if first:
            self.barrier.wait()
        return self._runtime.log_mel_batch(chunks, paddings)

    def forget_threads(self) -> None:
        with self._lock:
            self._arrived.clear()

    def __getattr__(self, name: str):
        return getattr(self._runtime, name)


@pytest.fixture(scope="module")
def settings(tiny_models) -> Settings:
    return Settings(model=str(tiny_models.whisper), cpu_threads=1, batch_size=4,
                    max_concurrent=CONCURRENT, mel_backend="cpu", warmup=False)


@pytest.fixture(scope="module")
def cpu_runtime():
    with UnifiedNPURuntime(enable_mel=False) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Different speech clips (a mix-up between concurrent requests would show)."""
    return [decode_file(clip(corpus)) for corpus in ("jfk", "librispeech", "ljspeech")]


def transcript(transcription) -> list[tuple]:
    return [(s["start"], s["end"], s["text"], tuple(s["tokens"]), s["no_speech_prob"])
            for s in transcription.segments] + [transcription.language]


def test_the_model_has_one_worker_per_slot(settings, cpu_runtime, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with Engine(settings, cpu_runtime) as engine:
        assert engine.concurrency == CONCURRENT


def test_two_transcriptions_are_inside_the_model_at_once(settings, cpu_runtime, clips,
                                                         monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runtime = RendezvousRuntime(cpu_runtime, parties=CONCURRENT)
    with Engine(settings, runtime) as engine, ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(engine.transcribe, clips[:CONCURRENT]))
    assert not runtime.barrier.broken
    assert all(result.segments for result in results)


def test_concurrent_transcripts_equal_sequential_ones(settings, cpu_runtime, clips, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with Engine(settings, cpu_runtime) as engine:
        alone = [transcript(engine.transcribe(clip)) for clip in clips]
        work = [index % len(clips) for index in range(4 * len(clips))]
        with ThreadPoolExecutor(CONCURRENT) as pool:
            together = list(pool.map(lambda i: transcript(engine.transcribe(clips[i])), work))
    assert len({tuple(map(str, t)) for t in alone}) == len(clips)  # the clips tell apart
    assert together == [alone[i] for i in work]


def test_the_service_runs_admitted_requests_in_the_model_at_once(settings, cpu_runtime,
                                                                 monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    speech = clip("jfk").read_bytes()
    runtime = RendezvousRuntime(cpu_runtime, parties=CONCURRENT)
    with Engine(settings, runtime) as engine, \
            serve(engine, runtime=UnifiedNPURuntime(enable_mel=False),
                  max_concurrent=CONCURRENT, max_queue=0) as (client, state), \
            ThreadPoolExecutor(CONCURRENT) as pool:
        def post(_):
            return client.post("/transcribe", data={"language": "en"},
                               files={"file": ("s.wav", speech, "audio/wav")})

        responses = list(pool.map(post, range(CONCURRENT)))
        concurrency = client.get("/status").json()["concurrency"]
    assert [r.status_code for r in responses] == [200] * CONCURRENT, responses[0].text
    assert not runtime.barrier.broken
    assert responses[0].json()["text"] == responses[1].json()["text"]
    assert concurrency == {"max_concurrent": CONCURRENT, "max_queue": 0, "running": 0,
                           "waiting": 0, "model_workers": CONCURRENT}
