"""UnifiedNPURuntime with the real NPU factories (``open_npu_batch`` / ``open_npu_frame``) over
the strict fake device: the healthy path, and every injected failure - at open and mid-run -
ending in the right tier with exactly the right reason counted, the caller still getting
correct features."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import whisperx.audio

from npu import UnifiedNPURuntime
from npu.audio_spec import N_SAMPLES, SAMPLE_RATE
from npu.backend import FallbackReason, MelBackendError
from npu.config import FrontEndConfig
from npu.mel import golden, host
from npu.mel.cpu import log_mel_spectrogram

AUDIO = (0.3 * np.sin(2 * np.pi * 220 * np.arange(40_000) / SAMPLE_RATE)
         * (1 + np.sin(2 * np.pi * 3 * np.arange(40_000) / SAMPLE_RATE))
         + 0.01 * np.random.default_rng(3).standard_normal(40_000)).astype(np.float32)
PADDING = N_SAMPLES - AUDIO.size  # as WhisperX pads each VAD chunk to 30 s


def golden_features(audio, frames_per_call, padding=PADDING, n_mels=80):
    """The NPU path with the golden model standing for the device."""
    return host.log_mel(audio, n_mels, padding, frames_per_call,
                            lambda samples, count: golden.kernel_call(samples, count, n_mels))


def cpu_features(audio, padding=PADDING, n_mels=80):
    return log_mel_spectrogram(audio, n_mels, padding)


def counted(runtime) -> dict[str, int]:
    return {reason: n for reason, n in runtime.get_performance_metrics()["fallbacks"].items() if n}


@pytest.fixture
def runtime_on(fake_npu):
    """Opens UnifiedNPURuntime (default, real NPU factories) on the fake device's artifacts."""
    opened = []

    def open_runtime(**kwargs):
        runtime = UnifiedNPURuntime(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir, **kwargs)
        opened.append(runtime)
        return runtime

    yield open_runtime
    for runtime in opened:
        runtime.close()


def test_healthy_device_runs_npu_batch_exactly_as_the_golden_model(fake_npu, runtime_on):
    runtime = runtime_on()
    assert runtime.mel_backend_name == "npu-batch"
    assert counted(runtime) == {}
    features = runtime.process_audio_to_features(AUDIO, PADDING)
    np.testing.assert_array_equal(features, golden_features(AUDIO, 3000))
    reference = whisperx.audio.log_mel_spectrogram(AUDIO, 80, padding=PADDING).numpy()
    error = np.abs(features - reference)
    assert error.mean() <= 0.001 and np.quantile(error, 0.999) <= 0.01 and error.max() <= 0.05
    metrics = runtime.get_performance_metrics()
    assert metrics["backends"]["npu-batch"]["calls"] == 1
    assert metrics["backends"]["npu-batch"]["frames"] == 3000
    assert fake_npu.pyxrt.STATS["runs"] == 1 + 1  # the open probe, then one 30 s call


def test_healthy_npu_frame_when_batch_processor_is_off(fake_npu, runtime_on):
    runtime = runtime_on(use_batch_processor=False)
    assert runtime.mel_backend_name == "npu-frame"
    np.testing.assert_array_equal(runtime.process_audio_to_features(AUDIO, PADDING),
                                  golden_features(AUDIO, 30))
    assert fake_npu.pyxrt.STATS["runs"] == 1 + 100  # probe, then 3000 frames / 30


def remove_device_node(fake_npu, monkeypatch):
    (fake_npu.device_dir / "accel0").unlink()


def hide_pyxrt(fake_npu, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxrt", None)


def remove_all_artifacts(fake_npu, monkeypatch):
    for path in fake_npu.kernel_dir.glob("mel_n80_*"):
        path.unlink()


def fault(name):
    def inject(fake_npu, monkeypatch):
        fake_npu.pyxrt.FAULTS.add(name)
    inject.__name__ = name
    return inject


OPEN_FAILURES = [
    (remove_device_node, "no_device"),
    (hide_pyxrt, "no_xrt"),
    (remove_all_artifacts, "no_kernel_artifacts"),
    (fault("device_open"), "load_failed"),
    (fault("xclbin_load"), "load_failed"),
    (fault("timeout"), "run_failed"),
    (fault("error_state"), "run_failed"),
    (fault("zeros"), "bad_output"),
    (fault("wrong"), "bad_output"),
]


@pytest.mark.parametrize("inject, reason", OPEN_FAILURES,
                         ids=[f"{i.__name__}-{r}" for i, r in OPEN_FAILURES])
def test_failure_at_open_falls_to_cpu_counting_both_tiers(fake_npu, monkeypatch, runtime_on,
                                                          inject, reason):
    inject(fake_npu, monkeypatch)
    runtime = runtime_on()
    assert runtime.mel_backend_name == "cpu"
    assert counted(runtime) == {reason: 2}  # npu-batch, then npu-frame
    assert f"npu-batch unavailable ({reason}" in runtime.mel_backend_reason
    assert f"npu-frame unavailable ({reason}" in runtime.mel_backend_reason
    np.testing.assert_array_equal(runtime.process_audio_to_features(AUDIO, PADDING),
                                  cpu_features(AUDIO))
    assert counted(runtime) == {reason: 2}


def test_missing_batch_artifacts_leave_the_frame_tier(fake_npu, runtime_on):
    for path in fake_npu.kernel_dir.glob("mel_n80_f3000.*"):
        path.unlink()
    runtime = runtime_on()
    assert runtime.mel_backend_name == "npu-frame"
    assert counted(runtime) == {"no_kernel_artifacts": 1}
    np.testing.assert_array_equal(runtime.process_audio_to_features(AUDIO, PADDING),
                                  golden_features(AUDIO, 30))


@pytest.mark.parametrize("name, reason", [("timeout", "run_failed"), ("error_state", "run_failed"),
                                          ("zeros", "bad_output")])
def test_failure_mid_run_falls_tier_by_tier_to_cpu(fake_npu, runtime_on, name, reason):
    runtime = runtime_on()
    first = runtime.process_audio_to_features(AUDIO, PADDING)
    fake_npu.pyxrt.FAULTS.add(name)
    second = runtime.process_audio_to_features(AUDIO, PADDING)
    np.testing.assert_array_equal(first, golden_features(AUDIO, 3000))
    # npu-batch fails the call, npu-frame's open probe fails the same way: the CPU answers.
    assert runtime.mel_backend_name == "cpu"
    assert counted(runtime) == {reason: 2}
    np.testing.assert_array_equal(second, cpu_features(AUDIO))
    fake_npu.pyxrt.FAULTS.clear()
    runtime.process_audio_to_features(AUDIO, PADDING)
    assert runtime.mel_backend_name == "cpu" and counted(runtime) == {reason: 2}


def probing_runtime(fake_npu, clock=time.monotonic, **probe) -> UnifiedNPURuntime:
    config = FrontEndConfig(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir,
                            **probe)
    return UnifiedNPURuntime.from_config(config, clock=clock)


def test_plausible_wrong_output_after_start_is_caught_by_the_repeated_probe(fake_npu):
    """A kernel that starts answering plausibly wrong (one Q16 unit off) after open passes the
    output checks; the probe, repeated every N calls, catches it before the next call."""
    with probing_runtime(fake_npu, probe_every_calls=2, probe_interval_seconds=None) as runtime:
        for _ in range(2):
            np.testing.assert_array_equal(runtime.process_audio_to_features(AUDIO, PADDING),
                                          golden_features(AUDIO, 3000))
        fake_npu.pyxrt.FAULTS.add("wrong")
        features = runtime.process_audio_to_features(AUDIO, PADDING)
        # npu-batch fails its probe; npu-frame (the same wrong kernel) fails its open probe
        assert counted(runtime) == {"bad_output": 2}
        assert runtime.mel_backend_name == "cpu"
        assert "known-answer probe" in runtime.mel_backend_reason
        np.testing.assert_array_equal(features, cpu_features(AUDIO))


def test_probe_also_repeats_after_its_interval(fake_npu):
    now = [0.0]
    with probing_runtime(fake_npu, clock=lambda: now[0], probe_every_calls=None,
                         probe_interval_seconds=60.0) as runtime:
        fake_npu.pyxrt.FAULTS.add("wrong")
        runtime.process_audio_to_features(AUDIO, PADDING)
        assert runtime.mel_backend_name == "npu-batch" and counted(runtime) == {}
        now[0] = 61.0
        runtime.process_audio_to_features(AUDIO, PADDING)
        assert runtime.mel_backend_name == "cpu" and counted(runtime) == {"bad_output": 2}


def test_a_healthy_device_passes_its_repeated_probes(fake_npu):
    with probing_runtime(fake_npu, probe_every_calls=1, probe_interval_seconds=None) as runtime:
        for _ in range(3):
            runtime.process_audio_to_features(AUDIO, PADDING)
        assert runtime.mel_backend_name == "npu-batch" and counted(runtime) == {}
    assert fake_npu.pyxrt.STATS["runs"] == 1 + 3 + 2  # open probe, 3 calls, 2 repeated probes


def test_batch_tier_failing_mid_run_hands_over_to_the_frame_tier(fake_npu, monkeypatch,
                                                                 runtime_on):
    runtime = runtime_on()
    real_call = fake_npu.pyxrt.kernel.__call__

    def batch_kernel_times_out(self, *args):
        if self.frames == 3000:
            return fake_npu.pyxrt.run(fake_npu.pyxrt.ert_cmd_state.ERT_CMD_STATE_TIMEOUT)
        return real_call(self, *args)

    monkeypatch.setattr(fake_npu.pyxrt.kernel, "__call__", batch_kernel_times_out)
    features = runtime.process_audio_to_features(AUDIO, PADDING)
    assert runtime.mel_backend_name == "npu-frame"
    assert counted(runtime) == {"run_failed": 1}
    assert "npu-batch failed (run_failed" in runtime.mel_backend_reason
    np.testing.assert_array_equal(features, golden_features(AUDIO, 30))
    metrics = runtime.get_performance_metrics()["backends"]
    assert "npu-batch" not in metrics and metrics["npu-frame"]["calls"] == 1


@pytest.mark.parametrize("inject, reason", OPEN_FAILURES[:3] + OPEN_FAILURES[5:6],
                         ids=["no_device", "no_xrt", "no_kernel_artifacts", "run_failed"])
def test_without_cpu_fallback_open_failure_raises_naming_the_reason(fake_npu, monkeypatch,
                                                                    inject, reason):
    inject(fake_npu, monkeypatch)
    with pytest.raises(MelBackendError) as caught:
        UnifiedNPURuntime(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir, fallback_to_cpu=False)
    assert caught.value.reason is FallbackReason(reason)
    assert reason in str(caught.value) and "fallback_to_cpu=False" in str(caught.value)


def test_without_cpu_fallback_mid_run_failure_raises_naming_the_reason(fake_npu):
    with UnifiedNPURuntime(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir, fallback_to_cpu=False) as runtime:
        assert runtime.mel_backend_name == "npu-batch"
        fake_npu.pyxrt.FAULTS.add("zeros")
        with pytest.raises(MelBackendError) as caught:
            runtime.process_audio_to_features(AUDIO, PADDING)
        assert caught.value.reason is FallbackReason.BAD_OUTPUT
        assert "bad_output" in str(caught.value)


def chunks_as_the_engine_passes_them() -> tuple[list[np.ndarray], list[int]]:
    chunks = [AUDIO, AUDIO[:16_000] * np.float32(0.5), np.tile(AUDIO, 12)]
    return chunks, [N_SAMPLES - chunk.size for chunk in chunks]


def test_a_batch_runs_one_kernel_call_per_chunk_as_the_golden_model(fake_npu, runtime_on):
    chunks, paddings = chunks_as_the_engine_passes_them()
    runtime = runtime_on()
    features, name = runtime.log_mel_batch(chunks, paddings)
    assert name == "npu-batch" and features.shape == (3, 80, 3000)
    for chunk, padding, chunk_features in zip(chunks, paddings, features):
        np.testing.assert_array_equal(chunk_features, golden_features(chunk, 3000, padding))
    metrics = runtime.get_performance_metrics()["backends"]["npu-batch"]
    assert metrics["calls"] == 1 and metrics["frames"] == 3 * 3000
    assert fake_npu.pyxrt.STATS["runs"] == 1 + 3  # the open probe, then one run per chunk


@pytest.mark.parametrize("name, reason", [("timeout", "run_failed"), ("zeros", "bad_output")])
def test_a_batch_failing_mid_run_is_answered_whole_by_the_cpu(fake_npu, runtime_on, name, reason):
    chunks, paddings = chunks_as_the_engine_passes_them()
    runtime = runtime_on()
    fake_npu.pyxrt.FAULTS.add(name)
    features, served_by = runtime.log_mel_batch(chunks, paddings)
    assert served_by == "cpu" == runtime.mel_backend_name
    assert counted(runtime) == {reason: 2}  # npu-batch's call, npu-frame's open probe
    for chunk, padding, chunk_features in zip(chunks, paddings, features):
        np.testing.assert_array_equal(chunk_features, cpu_features(chunk, padding))
