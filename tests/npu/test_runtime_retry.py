"""The NPU retry policy: a tier left for a transient reason is tried again after a set time.

Time is a fake clock the test advances; the NPU tiers are the strict fakes of test_runtime.
"""

from __future__ import annotations

import numpy as np
import pytest

from npu import UnifiedNPURuntime
from npu.backend import FallbackReason, MelBackendError
from npu.config import FrontEndConfig
from npu.mel.cpu import log_mel_spectrogram
from tests.npu.test_runtime import AUDIO, FakeNpuBackend, fallbacks

RETRY = 60.0
NPU_FEATURES = log_mel_spectrogram(AUDIO) + FakeNpuBackend.MARKER
CPU_FEATURES = log_mel_spectrogram(AUDIO)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedTier:
    """Each open takes the next entry of ``script``: a back-end mode, or a reason to refuse."""

    def __init__(self, name: str, script: list[str | FallbackReason]) -> None:
        self.name, self.script = name, list(script)
        self.opened: list[FakeNpuBackend] = []

    def __call__(self, config: FrontEndConfig) -> FakeNpuBackend:
        assert self.script, f"{self.name} opened more often than scripted"
        step = self.script.pop(0)
        if isinstance(step, FallbackReason):
            raise MelBackendError(step, f"fake {self.name} refuses")
        backend = FakeNpuBackend(self.name, config, step)
        self.opened.append(backend)
        return backend


def make_runtime(tiers, clock, retry=RETRY):
    return UnifiedNPURuntime(
        backend_factories=[(t.name, t) for t in tiers], npu_retry_seconds=retry, clock=clock
    )


def test_a_run_failure_falls_back_then_the_npu_is_retried_after_the_set_time():
    clock = FakeClock()
    batch = ScriptedTier("npu-batch", ["run_failed", "ok"])
    frame = ScriptedTier("npu-frame", ["run_failed"])
    with make_runtime([batch, frame], clock) as rt:
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), CPU_FEATURES)
        assert rt.mel_backend_name == "cpu"
        assert fallbacks(rt) == {"run_failed": 2}

        clock.now += RETRY - 1
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), CPU_FEATURES)
        assert len(batch.opened) == 1  # not yet

        clock.now += 1
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), NPU_FEATURES)
        assert rt.mel_backend_name == "npu-batch"
        assert len(batch.opened) == 2 and batch.opened[1].calls == 1
        assert "NPU retried after 60.0 s" in rt.mel_backend_reason
        assert fallbacks(rt) == {"run_failed": 2}  # the retry that worked counts nothing


def test_a_retry_that_fails_again_is_counted_and_rescheduled():
    clock = FakeClock()
    batch = ScriptedTier("npu-batch", ["zeros", FallbackReason.LOAD_FAILED, "ok"])
    with make_runtime([batch], clock) as rt:
        rt.process_audio_to_features(AUDIO)
        assert fallbacks(rt) == {"bad_output": 1}
        clock.now += RETRY
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), CPU_FEATURES)
        assert fallbacks(rt) == {"bad_output": 1, "load_failed": 1}
        clock.now += RETRY
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), NPU_FEATURES)
        assert rt.mel_backend_name == "npu-batch"


def test_retrying_from_the_frame_tier_closes_it_before_reopening_the_batch_tier():
    clock = FakeClock()
    batch = ScriptedTier("npu-batch", ["run_failed", "ok"])
    frame = ScriptedTier("npu-frame", ["ok"])
    with make_runtime([batch, frame], clock) as rt:
        rt.process_audio_to_features(AUDIO)
        assert rt.mel_backend_name == "npu-frame"
        clock.now += RETRY
        rt.process_audio_to_features(AUDIO)
        assert rt.mel_backend_name == "npu-batch"
        assert frame.opened[0].closed
        assert not batch.opened[1].closed


@pytest.mark.parametrize(
    "reason",
    [FallbackReason.NO_DEVICE, FallbackReason.NO_XRT, FallbackReason.NO_KERNEL_ARTIFACTS],
)
def test_missing_hardware_or_artifacts_are_not_retried(reason):
    clock = FakeClock()
    batch = ScriptedTier("npu-batch", [reason])  # a second open would fail the test
    with make_runtime([batch], clock) as rt:
        clock.now += 100 * RETRY
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), CPU_FEATURES)
        assert fallbacks(rt) == {reason.value: 1}


def test_no_retry_when_the_policy_is_never():
    clock = FakeClock()
    batch = ScriptedTier("npu-batch", ["run_failed"])
    with make_runtime([batch], clock, retry=None) as rt:
        rt.process_audio_to_features(AUDIO)
        clock.now += 1e9
        rt.process_audio_to_features(AUDIO)
        assert len(batch.opened) == 1 and rt.mel_backend_name == "cpu"


def test_a_negative_retry_time_is_refused():
    with pytest.raises(ValueError, match="npu_retry_seconds"):
        UnifiedNPURuntime(enable_mel=False, npu_retry_seconds=-1)


def test_a_permanent_reason_is_counted_once_and_its_tier_never_reopened():
    """A tier without its kernel artifacts does not come back without a restart: the retries
    that a transient failure of the next tier schedules do not try it, nor count it again."""
    clock = FakeClock()
    batch = ScriptedTier("npu-batch", [FallbackReason.NO_KERNEL_ARTIFACTS])
    frame = ScriptedTier("npu-frame", ["run_failed", "run_failed", "ok"])
    with make_runtime([batch, frame], clock) as rt:
        for _ in range(3):
            rt.process_audio_to_features(AUDIO)
            clock.now += RETRY
        np.testing.assert_array_equal(rt.process_audio_to_features(AUDIO), NPU_FEATURES)
        assert rt.mel_backend_name == "npu-frame"
        assert fallbacks(rt) == {"no_kernel_artifacts": 1, "run_failed": 2}
        assert batch.script == [] and len(frame.opened) == 3
