"""NPUMelProcessorBatch and the runtime factories, driven through the strict fake pyxrt."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from npu import NPUMelProcessorBatch, UnifiedNPURuntime
from npu.audio_spec import SAMPLE_RATE
from npu.backend import FallbackReason, MelBackendError
from npu.config import FrontEndConfig
from npu.mel import golden, host
from npu.mel.cpu import log_mel_spectrogram
from npu.mel.npu import open_npu_batch, open_npu_frame


def golden_path(audio, n_mels, padding, frames_per_call):
    """The NPU path computed with the golden model standing for the device."""
    return host.log_mel(audio, n_mels, padding, frames_per_call,
                            lambda samples, count: golden.kernel_call(samples, count, n_mels))


def noisy_speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def config(fake_npu, n_mels=80, frames=3000):
    return FrontEndConfig(n_mels=n_mels, frames_per_call=frames, kernel_dir=fake_npu.kernel_dir,
                          device_dir=fake_npu.device_dir)


@pytest.mark.parametrize("factory, name, frames", [(open_npu_batch, "npu-batch", 3000),
                                                    (open_npu_frame, "npu-frame", 30)])
@pytest.mark.parametrize("n_mels", [80, 128])
def test_factory_output_equals_golden_path(fake_npu, factory, name, frames, n_mels):
    audio = noisy_speechlike(4.0)
    with factory(config(fake_npu, n_mels)) as backend:
        assert (backend.name, backend.n_mels, backend.frames_per_call) == (name, n_mels, frames)
        features = backend.log_mel(audio, padding=SAMPLE_RATE)
    expected = golden_path(audio, n_mels, SAMPLE_RATE, frames)
    assert features.dtype == np.float32 and features.shape == (n_mels, 500)
    np.testing.assert_array_equal(features, expected)


def test_whole_chunk_per_call_and_buffers_reused(fake_npu):
    audio = noisy_speechlike(65.0)
    runtime = UnifiedNPURuntime.from_config(config(fake_npu),
                                            backend_factories=[("npu-batch", open_npu_batch)])
    with runtime:
        for _ in range(3):
            runtime.process_audio_to_features(audio)
        metrics = runtime.get_performance_metrics()["backends"]["npu-batch"]
    stats = fake_npu.pyxrt.STATS
    # the open probe, then 6500 frames = 3 kernel runs of a whole 30 s chunk per call
    assert stats["runs"] == 1 + 3 * 3 == stats["waits"]
    assert (stats["devices"], stats["contexts"], stats["bos"]) == (1, 1, 3)
    assert metrics["calls"] == 3 and metrics["frames"] == 3 * 6500


def test_one_device_per_process_contexts_shared(fake_npu):
    batch = open_npu_batch(config(fake_npu))
    frame = open_npu_frame(config(fake_npu))
    again = open_npu_batch(config(fake_npu))
    stats = fake_npu.pyxrt.STATS
    assert stats["devices"] == 1 and stats["contexts"] == 2
    for backend in (batch, frame, again):
        backend.close()
        backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        batch.log_mel(noisy_speechlike(1.0))


def test_seed_api(fake_npu):
    audio = noisy_speechlike(2.0)
    processor = NPUMelProcessorBatch(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir)
    try:
        np.testing.assert_array_equal(processor(audio), processor.process(audio))
        np.testing.assert_array_equal(processor.process(audio), golden_path(audio, 80, 0, 3000))
        metrics = processor.get_performance_metrics()
        assert metrics["npu_available"] and metrics["calls"] == 3 and metrics["cpu_fallbacks"] == 0
    finally:
        processor.close()


def open_error(fake_npu, factory=open_npu_batch) -> MelBackendError:
    with pytest.raises(MelBackendError) as caught:
        factory(config(fake_npu))
    return caught.value


def test_no_device_node_is_checked_first(fake_npu, monkeypatch):
    (fake_npu.device_dir / "accel0").unlink()
    monkeypatch.setitem(sys.modules, "pyxrt", None)
    assert open_error(fake_npu).reason is FallbackReason.NO_DEVICE


def test_no_xrt(fake_npu, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxrt", None)
    assert open_error(fake_npu).reason is FallbackReason.NO_XRT


@pytest.mark.parametrize("suffix", [".xclbin", ".insts.bin"])
def test_missing_artifact(fake_npu, suffix):
    (fake_npu.kernel_dir / f"mel_n80_f3000{suffix}").unlink()
    assert open_error(fake_npu).reason is FallbackReason.NO_KERNEL_ARTIFACTS
    assert fake_npu.pyxrt.STATS["devices"] == 0


@pytest.mark.parametrize("fault", ["device_open", "xclbin_load"])
def test_load_failures(fake_npu, fault):
    fake_npu.pyxrt.FAULTS.add(fault)
    error = open_error(fake_npu, open_npu_frame)
    assert error.reason is FallbackReason.LOAD_FAILED and "fake" in error.detail


@pytest.mark.parametrize("fault, reason", [("timeout", FallbackReason.RUN_FAILED),
                                           ("error_state", FallbackReason.RUN_FAILED),
                                           ("zeros", FallbackReason.BAD_OUTPUT)])
def test_run_failures(fake_npu, fault, reason):
    backend = open_npu_batch(config(fake_npu))
    fake_npu.pyxrt.FAULTS.add(fault)
    with pytest.raises(MelBackendError) as caught:
        backend.log_mel(noisy_speechlike(1.0))
    assert caught.value.reason is reason
    fake_npu.pyxrt.FAULTS.clear()
    np.testing.assert_array_equal(backend.log_mel(noisy_speechlike(1.0)),
                                  golden_path(noisy_speechlike(1.0), 80, 0, 3000))
    backend.close()


def test_seed_fallback_to_cpu_counts_reason(fake_npu):
    audio = noisy_speechlike(2.0)
    processor = NPUMelProcessorBatch(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir)
    fake_npu.pyxrt.FAULTS.add("zeros")
    features = processor.process(audio)
    np.testing.assert_allclose(features, log_mel_spectrogram(audio, 80, 0), atol=1e-6)
    assert processor.get_performance_metrics()["fallback_reasons"] == {"bad_output": 1}
    processor.close()


def test_bad_audio_is_a_clear_error(fake_npu):
    with open_npu_batch(config(fake_npu)) as backend:
        with pytest.raises(ValueError, match="1-D"):
            backend.log_mel(np.zeros((2, SAMPLE_RATE), np.float32))
        with pytest.raises(ValueError, match="floating"):
            backend.log_mel(np.zeros(SAMPLE_RATE, np.int16))


@pytest.mark.parametrize(("index", "value"), [(100, np.nan), (-1, -np.inf), (5000, np.inf)])
def test_non_finite_audio_is_a_clear_error_not_garbage(fake_npu, index, value):
    audio = noisy_speechlike(1.0)
    audio[index] = value
    with open_npu_batch(config(fake_npu)) as backend, pytest.raises(ValueError, match="finite"):
        backend.log_mel(audio)
