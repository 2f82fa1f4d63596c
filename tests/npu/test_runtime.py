"""UnifiedNPURuntime: tier selection, every fallback reason, metrics, threads, lifecycle.

The NPU does not exist here, so NPU tiers are strict fakes injected through
``backend_factories``; the CPU tier is the real front-end.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from npu import UnifiedNPURuntime
from npu.audio_spec import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from npu.backend import FallbackReason, MelBackend, MelBackendError
from npu.config import FrontEndConfig
from npu.kernel_files import DEFAULT_KERNEL_DIR
from npu.mel.cpu import log_mel_spectrogram

AUDIO = (np.random.default_rng(7).standard_normal(SAMPLE_RATE * 2 + 55) * 0.2).astype(np.float32)
OPEN_REASONS = [
    FallbackReason.NO_DEVICE,
    FallbackReason.NO_XRT,
    FallbackReason.NO_KERNEL_ARTIFACTS,
    FallbackReason.LOAD_FAILED,
]


class FakeNpuBackend(MelBackend):
    """A stand-in NPU back-end. ``mode``: 'ok' (CPU maths + a marker offset so tests can tell
    who answered), 'run_failed', 'zeros', 'nan', 'crash' (a non-MelBackendError exception)."""

    MARKER = np.float32(0.5)

    def __init__(self, name: str, config: FrontEndConfig, mode: str = "ok") -> None:
        self.name, self.n_mels, self.mode, self.config = name, config.n_mels, mode, config
        self.calls = 0
        self.closed = False

    def log_mel(self, audio: np.ndarray, padding: int = 0) -> np.ndarray:
        assert not self.closed, "called after close()"
        self.calls += 1
        n_frames = (audio.size + padding) // HOP_LENGTH
        if self.mode == "run_failed":
            raise MelBackendError(FallbackReason.RUN_FAILED, "ERT_CMD_STATE_ERROR")
        if self.mode == "crash":
            raise OSError("DMA sync failed")
        if self.mode == "zeros":
            return np.zeros((self.n_mels, n_frames), np.float32)
        if self.mode == "nan":
            return np.full((self.n_mels, n_frames), np.nan, np.float32)
        return log_mel_spectrogram(audio, self.n_mels, padding) + self.MARKER

    def close(self) -> None:
        self.closed = True


class Tier:
    """A factory for one named tier: raises ``open_error`` or opens a :class:`FakeNpuBackend`."""

    def __init__(self, name: str, open_error: FallbackReason | None = None, mode: str = "ok"):
        self.name, self.open_error, self.mode = name, open_error, mode
        self.opened: list[FakeNpuBackend] = []

    def __call__(self, config: FrontEndConfig) -> FakeNpuBackend:
        if self.open_error is not None:
            raise MelBackendError(self.open_error, f"fake {self.name} cannot open")
        backend = FakeNpuBackend(self.name, config, self.mode)
        self.opened.append(backend)
        return backend

    def pair(self):
        return (self.name, self)


def must_not_open(config):
    raise AssertionError("this factory must not be called")


def fallbacks(rt) -> dict:
    return {r: n for r, n in rt.get_performance_metrics()["fallbacks"].items() if n}


def test_healthy_batch_tier_is_chosen_and_used():
    batch = Tier("npu-batch")
    with UnifiedNPURuntime(backend_factories=[batch.pair(), ("npu-frame", must_not_open)], batch_size=1500) as rt:
        assert rt.mel_backend_name == "npu-batch"
        assert "npu-batch opened" in rt.mel_backend_reason
        out = rt.process_audio_to_features(AUDIO)
        np.testing.assert_array_equal(out, log_mel_spectrogram(AUDIO) + FakeNpuBackend.MARKER)
        assert batch.opened[0].config.frames_per_call == 1500
        assert fallbacks(rt) == {}
    assert batch.opened[0].closed


@pytest.mark.parametrize("reason", OPEN_REASONS)
def test_open_failure_on_batch_falls_to_frame(reason):
    frame = Tier("npu-frame")
    tiers = [Tier("npu-batch", open_error=reason).pair(), frame.pair()]
    with UnifiedNPURuntime(backend_factories=tiers) as rt:
        assert rt.mel_backend_name == "npu-frame"
        assert reason.value in rt.mel_backend_reason
        assert fallbacks(rt) == {reason.value: 1}
        rt.process_audio_to_features(AUDIO)
        assert frame.opened[0].calls == 1


@pytest.mark.parametrize("reason", OPEN_REASONS)
def test_open_failure_everywhere_lands_on_cpu(reason):
    tiers = [Tier("npu-batch", open_error=reason).pair(), Tier("npu-frame", open_error=reason).pair()]
    with UnifiedNPURuntime(backend_factories=tiers) as rt:
        assert rt.mel_backend_name == "cpu"
        assert fallbacks(rt) == {reason.value: 2}
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), log_mel_spectrogram(AUDIO))


def test_factory_crash_counts_as_load_failed():
    def crashing(config):
        raise OSError("xclbin UUID mismatch")

    with UnifiedNPURuntime(backend_factories=[("npu-batch", crashing)]) as rt:
        assert rt.mel_backend_name == "cpu"
        assert fallbacks(rt) == {"load_failed": 1}
        assert "xclbin UUID mismatch" in rt.mel_backend_reason


@pytest.mark.parametrize(
    "mode, reason", [("run_failed", "run_failed"), ("crash", "run_failed"), ("zeros", "bad_output"), ("nan", "bad_output")]
)
def test_call_failure_retries_the_same_audio_on_the_next_tier(mode, reason):
    batch, frame = Tier("npu-batch", mode=mode), Tier("npu-frame")
    with UnifiedNPURuntime(backend_factories=[batch.pair(), frame.pair()]) as rt:
        out = rt.process_audio_to_features(AUDIO)
        np.testing.assert_array_equal(out, log_mel_spectrogram(AUDIO) + FakeNpuBackend.MARKER)
        assert rt.mel_backend_name == "npu-frame"
        assert batch.opened[0].closed and batch.opened[0].calls == 1
        assert frame.opened[0].calls == 1
        assert fallbacks(rt) == {reason: 1}
        rt.process_audio_to_features(AUDIO)
        assert batch.opened[0].calls == 1 and frame.opened[0].calls == 2
        backends = rt.get_performance_metrics()["backends"]
        assert set(backends) == {"npu-frame"} and backends["npu-frame"]["calls"] == 2


def test_both_npu_tiers_failing_at_run_time_end_on_cpu_with_correct_features():
    tiers = [Tier("npu-batch", mode="zeros").pair(), Tier("npu-frame", mode="run_failed").pair()]
    with UnifiedNPURuntime(backend_factories=tiers) as rt:
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), log_mel_spectrogram(AUDIO))
        assert rt.mel_backend_name == "cpu"
        assert fallbacks(rt) == {"bad_output": 1, "run_failed": 1}


def test_wrong_shape_is_bad_output():
    class Truncating(FakeNpuBackend):
        def log_mel(self, audio, padding=0):
            return super().log_mel(audio, padding)[:, :-1]

    with UnifiedNPURuntime(backend_factories=[("npu-batch", lambda c: Truncating("npu-batch", c))]) as rt:
        rt.process_audio_to_features(AUDIO)
        assert rt.mel_backend_name == "cpu" and fallbacks(rt) == {"bad_output": 1}


@pytest.mark.parametrize("reason", OPEN_REASONS)
def test_no_cpu_fallback_raises_naming_the_reason_at_start(reason):
    with pytest.raises(MelBackendError, match=reason.value) as info:
        UnifiedNPURuntime(backend_factories=[Tier("npu-batch", open_error=reason).pair()], fallback_to_cpu=False)
    assert info.value.reason is reason


def test_no_cpu_fallback_raises_naming_the_reason_at_run_time():
    batch = Tier("npu-batch", mode="zeros")
    with UnifiedNPURuntime(backend_factories=[batch.pair()], fallback_to_cpu=False) as rt:
        with pytest.raises(MelBackendError, match="bad_output") as info:
            rt.process_audio_to_features(AUDIO)
        assert info.value.reason is FallbackReason.BAD_OUTPUT
        with pytest.raises(MelBackendError):
            rt.process_audio_to_features(AUDIO)
        assert fallbacks(rt) == {"bad_output": 1}


def test_enable_mel_false_never_touches_the_npu():
    with UnifiedNPURuntime(enable_mel=False, backend_factories=[("npu-batch", must_not_open)]) as rt:
        assert rt.mel_backend_name == "cpu"
        assert "enable_mel=False" in rt.mel_backend_reason
        assert fallbacks(rt) == {}


def test_use_batch_processor_false_skips_the_batch_tier():
    frame = Tier("npu-frame")
    with UnifiedNPURuntime(use_batch_processor=False, backend_factories=[("npu-batch", must_not_open), frame.pair()]) as rt:
        assert rt.mel_backend_name == "npu-frame"


def test_each_reason_is_logged_once_but_counted_every_time(caplog):
    tiers = [Tier(f"npu-{i}", open_error=FallbackReason.NO_DEVICE).pair() for i in range(3)]
    with caplog.at_level(logging.DEBUG, logger="npu.runtime"):
        with UnifiedNPURuntime(backend_factories=tiers) as rt:
            for _ in range(5):
                rt.process_audio_to_features(AUDIO)
            assert fallbacks(rt) == {"no_device": 3}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "no_device" in r.getMessage()]
    assert len(warnings) == 1


def test_metrics_count_exactly_and_reset():
    lengths = [SAMPLE_RATE, SAMPLE_RATE * 3 + 17, N_SAMPLES]
    with UnifiedNPURuntime(enable_mel=False) as rt:
        for n in lengths:
            rt.process_audio_to_features(AUDIO[:1].repeat(n) + 0.1, padding=HOP_LENGTH)
        cpu = rt.get_performance_metrics()["backends"]["cpu"]
        assert cpu["calls"] == 3
        assert cpu["frames"] == sum((n + HOP_LENGTH) // HOP_LENGTH for n in lengths)
        assert cpu["audio_seconds"] == pytest.approx(sum(lengths) / SAMPLE_RATE, abs=1e-12)
        assert cpu["compute_seconds"] > 0
        assert cpu["x_realtime"] == pytest.approx(cpu["audio_seconds"] / cpu["compute_seconds"])
        rt.reset_metrics()
        metrics = rt.get_performance_metrics()
        assert metrics["backends"] == {} and not any(metrics["fallbacks"].values())
        assert metrics["mel_backend"] == "cpu"


def test_eight_threads_get_correct_features_and_exact_totals():
    lengths = [SAMPLE_RATE * (1 + i % 4) + 31 * i for i in range(8)]
    signals = [(np.random.default_rng(i).standard_normal(n) * 0.1).astype(np.float32) for i, n in enumerate(lengths)]
    expected = [log_mel_spectrogram(s) for s in signals]
    errors = []
    with UnifiedNPURuntime(enable_mel=False) as rt:
        barrier = threading.Barrier(8)

        def work(i):
            barrier.wait()
            for _ in range(10):
                if not np.array_equal(rt.process_audio_to_features(signals[i]), expected[i]):
                    errors.append(i)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu = rt.get_performance_metrics()["backends"]["cpu"]
    assert errors == []
    assert cpu["calls"] == 80
    assert cpu["frames"] == 10 * sum(n // HOP_LENGTH for n in lengths)
    assert cpu["audio_seconds"] == pytest.approx(10 * sum(lengths) / SAMPLE_RATE, abs=1e-9)


def test_eight_threads_hitting_a_failing_tier_count_one_fallback():
    batch, frame = Tier("npu-batch", mode="run_failed"), Tier("npu-frame")
    with UnifiedNPURuntime(backend_factories=[batch.pair(), frame.pair()]) as rt:
        barrier = threading.Barrier(8)
        results = []

        def work():
            barrier.wait()
            results.append(rt.process_audio_to_features(AUDIO))

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8
        assert all(np.array_equal(r, log_mel_spectrogram(AUDIO) + FakeNpuBackend.MARKER) for r in results)
        assert fallbacks(rt) == {"run_failed": 1}
        assert batch.opened[0].calls == 1 and frame.opened[0].calls == 8
        assert rt.get_performance_metrics()["backends"]["npu-frame"]["calls"] == 8


def test_bad_input_is_a_clear_error_not_a_fallback():
    with UnifiedNPURuntime(backend_factories=[Tier("npu-batch").pair()]) as rt:
        with pytest.raises(ValueError, match="finite"):
            rt.process_audio_to_features(np.full(SAMPLE_RATE, np.nan, np.float32))
        with pytest.raises(ValueError, match="1-D"):
            rt.process_audio_to_features(np.zeros((2, SAMPLE_RATE), np.float32))
        with pytest.raises(ValueError, match="padding"):
            rt.process_audio_to_features(AUDIO, padding=-1)
        assert rt.mel_backend_name == "npu-batch" and fallbacks(rt) == {}


def test_close_closes_everything_and_later_calls_fail():
    batch = Tier("npu-batch")
    rt = UnifiedNPURuntime(backend_factories=[batch.pair()])
    rt.close()
    rt.close()
    assert batch.opened[0].closed
    with pytest.raises(RuntimeError, match="closed"):
        rt.process_audio_to_features(AUDIO)


def test_default_kernel_dir_and_config():
    assert DEFAULT_KERNEL_DIR == Path(__file__).resolve().parents[2] / "kernels" / "build"
    seen = []
    UnifiedNPURuntime(device_id=3, n_mels=128, backend_factories=[("npu-batch", lambda c: seen.append(c) or must_not_open(c))]).close()
    assert seen == [FrontEndConfig(n_mels=128, frames_per_call=3000, kernel_dir=DEFAULT_KERNEL_DIR, device_id=3)]


@pytest.mark.skipif(Path("/dev/accel/accel0").exists(), reason="an NPU is present on this machine")
def test_default_tiers_without_an_npu_choose_the_cpu():
    with UnifiedNPURuntime() as rt:
        assert rt.mel_backend_name == "cpu"
        assert sum(rt.get_performance_metrics()["fallbacks"].values()) == 2


def test_summary_names_backend_and_fallbacks(capsys):
    with UnifiedNPURuntime(backend_factories=[Tier("npu-batch", open_error=FallbackReason.NO_XRT).pair()]) as rt:
        rt.process_audio_to_features(AUDIO)
        rt.print_performance_summary()
    out = capsys.readouterr().out
    assert "mel back-end: cpu" in out and "no_xrt=1" in out and "\ncpu " in out


def test_gelu_and_attention_are_served():
    """Against the formulas written out here, not against the functions the runtime calls."""
    import math

    x = np.linspace(-3, 3, 13, dtype=np.float32)
    expected_gelu = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)]
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 8)).astype(np.float32) for _ in range(3))
    scores = np.einsum("bqd,bkd->bqk", q.astype(np.float64), k.astype(np.float64)) / math.sqrt(8)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    expected_attention = np.einsum("bqk,bkd->bqd", weights, v.astype(np.float64))
    with UnifiedNPURuntime(enable_mel=False) as rt:
        np.testing.assert_allclose(rt.gelu(x), expected_gelu, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(rt.attention(q, k, v), expected_attention, rtol=1e-5,
                                   atol=1e-6)


def engine_like_batch() -> tuple[list[np.ndarray], list[int]]:
    """Three chunks as the engine passes them: different lengths, each padded to 30 s."""
    lengths = [N_SAMPLES, SAMPLE_RATE * 4 + 9, SAMPLE_RATE]
    chunks = [(np.random.default_rng(n).standard_normal(n) * 0.1).astype(np.float32)
              for n in lengths]
    return chunks, [N_SAMPLES - n for n in lengths]


class FailingOnSecondChunk(FakeNpuBackend):
    """Answers its first call, then fails the way ``mode`` says ('run_failed' or 'zeros')."""

    def log_mel(self, audio, padding=0):
        if self.calls == 0:
            self.calls += 1
            return log_mel_spectrogram(audio, self.n_mels, padding) + self.MARKER
        return super().log_mel(audio, padding)


def test_a_batch_on_an_npu_tier_is_one_runtime_call_of_each_chunks_features():
    chunks, paddings = engine_like_batch()
    batch = Tier("npu-batch")
    with UnifiedNPURuntime(backend_factories=[batch.pair()]) as rt:
        features, name = rt.log_mel_batch(chunks, paddings)
        assert name == "npu-batch" and features.shape == (3, 80, 3000)
        for chunk, padding, chunk_features in zip(chunks, paddings, features):
            np.testing.assert_array_equal(
                chunk_features, log_mel_spectrogram(chunk, 80, padding) + FakeNpuBackend.MARKER)
        assert batch.opened[0].calls == 3  # the back-end's default: one log_mel per chunk
        metrics = rt.get_performance_metrics()["backends"]["npu-batch"]
        assert metrics["calls"] == 1 and metrics["frames"] == 3 * 3000
        assert metrics["audio_seconds"] == pytest.approx(sum(c.size for c in chunks) / SAMPLE_RATE)
        assert fallbacks(rt) == {}


@pytest.mark.parametrize("mode, reason", [("run_failed", "run_failed"), ("crash", "run_failed"),
                                          ("zeros", "bad_output"), ("nan", "bad_output")])
@pytest.mark.parametrize("failing_chunk", [0, 1], ids=["first-chunk", "second-chunk"])
def test_a_batch_failing_on_a_tier_is_served_whole_by_the_next(mode, reason, failing_chunk):
    chunks, paddings = engine_like_batch()
    backend_class = FailingOnSecondChunk if failing_chunk else FakeNpuBackend
    failing = lambda config: backend_class("npu-batch", config, mode)
    frame = Tier("npu-frame")
    with UnifiedNPURuntime(backend_factories=[("npu-batch", failing), frame.pair()]) as rt:
        features, name = rt.log_mel_batch(chunks, paddings)
        assert name == "npu-frame" == rt.mel_backend_name
        for chunk, padding, chunk_features in zip(chunks, paddings, features):
            np.testing.assert_array_equal(
                chunk_features, log_mel_spectrogram(chunk, 80, padding) + FakeNpuBackend.MARKER)
        assert fallbacks(rt) == {reason: 1}
        assert frame.opened[0].calls == 3
        backends = rt.get_performance_metrics()["backends"]
        assert set(backends) == {"npu-frame"} and backends["npu-frame"]["calls"] == 1


def test_a_batch_on_the_cpu_equals_per_chunk_calls_and_counts_one_call():
    chunks, paddings = engine_like_batch()
    with UnifiedNPURuntime(enable_mel=False) as rt:
        features, name = rt.log_mel_batch(chunks, paddings)
        cpu = rt.get_performance_metrics()["backends"]["cpu"]
        assert name == "cpu" and cpu["calls"] == 1 and cpu["frames"] == 9000
        for chunk, padding, chunk_features in zip(chunks, paddings, features):
            assert np.array_equal(chunk_features, rt.log_mel(chunk, padding).features)
            assert np.array_equal(chunk_features, log_mel_spectrogram(chunk, 80, padding))


@pytest.mark.parametrize("tiers", [[], [Tier("npu-batch").pair()]], ids=["cpu", "npu-tier"])
def test_a_bad_chunk_is_a_clear_error_naming_it_not_a_fallback(tiers):
    chunks, paddings = engine_like_batch()
    chunks[1] = chunks[1].copy()
    chunks[1][100] = np.nan
    with UnifiedNPURuntime(backend_factories=tiers) as rt:
        served_by = rt.mel_backend_name
        with pytest.raises(ValueError, match="chunk 1 of 3: audio must be finite"):
            rt.log_mel_batch(chunks, paddings)
        with pytest.raises(ValueError, match="chunk 2 of 3: audio must be 1-D"):
            rt.log_mel_batch(chunks[:1] * 2 + [np.zeros((2, 10), np.float32)], paddings)
        with pytest.raises(ValueError, match="same number of frames"):
            rt.log_mel_batch(chunks[:2], [0, 0])
        assert rt.mel_backend_name == served_by and fallbacks(rt) == {}
