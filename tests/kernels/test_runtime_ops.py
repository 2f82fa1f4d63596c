"""``UnifiedNPURuntime.gelu`` / ``.attention`` through the one tier mechanism, with the real NPU
factories over the strict fake device (which runs the host builds of the kernels): the healthy
path equals the golden models bit for bit; every injected failure ends on the CPU with exactly
the right reason counted, the caller still getting the right answer; the counts reach /metrics."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.service import create_app
from app.settings import Settings
from npu import UnifiedNPURuntime
from npu.config import FrontEndConfig
from npu.ops import cpu, golden
from tests.app.service_helpers import metric_samples_from_text
from tests.app.test_service_seam import ServedByEngine

RNG = np.random.default_rng(11)
X = (RNG.standard_normal((3, 1500, 384)) * 2).astype(np.float32)
HEADS = tuple(RNG.standard_normal((2, 1500, 64)).astype(np.float32) for _ in range(3))


def gelu_on_npu(x):
    return golden.from_bf16(golden.gelu(golden.to_bf16(x)))


def attention_on_npu(q, k, v):
    bits = [golden.to_bf16(a) for a in (q, k, v)]
    return np.stack([golden.from_bf16(golden.attention(bits[0][h], bits[1][h], bits[2][h]))
                     for h in range(q.shape[0])])


@pytest.fixture
def runtime_on(fake_npu):
    opened = []

    def open_runtime(**fields):
        config = FrontEndConfig(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir,
                                **fields)
        runtime = UnifiedNPURuntime.from_config(config)
        opened.append(runtime)
        return runtime

    yield open_runtime
    for runtime in opened:
        runtime.close()


def op_metrics(runtime, op):
    return runtime.get_performance_metrics()["ops"][op]


def counted(runtime, op):
    return {reason: n for reason, n in op_metrics(runtime, op)["fallbacks"].items() if n}


@pytest.mark.slow
def test_healthy_device_runs_gelu_and_attention_exactly_as_the_golden_models(fake_npu, runtime_on):
    runtime = runtime_on()
    runs_before = fake_npu.pyxrt.STATS["runs"]  # the mel front-end's probe
    np.testing.assert_array_equal(runtime.gelu(X), gelu_on_npu(X))
    np.testing.assert_array_equal(runtime.attention(*HEADS), attention_on_npu(*HEADS))
    for op, calls in (("gelu", 1), ("attention", 1)):
        metrics = op_metrics(runtime, op)
        assert metrics["backend"] == "npu" and counted(runtime, op) == {}
        assert metrics["backends"]["npu"]["calls"] == calls
    # GELU: the probe + ceil(1,728,000 / 393,216) = 5 runs; attention: the probe + 2 heads
    assert fake_npu.pyxrt.STATS["runs"] - runs_before == 1 + 5 + 1 + 2


def test_shapes_the_design_does_not_take_and_masks_go_to_the_cpu_uncounted(fake_npu, runtime_on):
    runtime = runtime_on()
    q = RNG.standard_normal((2, 10, 64)).astype(np.float32)
    np.testing.assert_array_equal(runtime.attention(q, q, q), cpu.attention(q, q, q))
    mask = np.tril(np.ones((1500, 1500), bool))
    np.testing.assert_array_equal(runtime.attention(*HEADS, mask=mask),
                                  cpu.attention(*HEADS, mask))
    metrics = op_metrics(runtime, "attention")
    assert counted(runtime, "attention") == {} and metrics["backends"]["cpu"]["calls"] == 2
    assert op_metrics(runtime, "attention")["reason"] == "not used yet"  # never resolved


@pytest.mark.parametrize("fault, reason", [("device_open", "load_failed"),
                                           ("xclbin_load", "load_failed"),
                                           ("timeout", "run_failed"),
                                           ("error_state", "run_failed"),
                                           ("zeros", "bad_output"),
                                           ("wrong", "bad_output")])
def test_failure_at_open_falls_to_the_cpu_with_its_reason(fake_npu, runtime_on, fault, reason):
    fake_npu.pyxrt.FAULTS.add(fault)
    runtime = runtime_on()
    np.testing.assert_array_equal(runtime.gelu(X), cpu.gelu(X))
    assert counted(runtime, "gelu") == {reason: 1}
    assert op_metrics(runtime, "gelu")["backend"] == "cpu"
    assert reason in op_metrics(runtime, "gelu")["reason"]


@pytest.mark.parametrize("fault, reason", [("timeout", "run_failed"), ("zeros", "bad_output")])
def test_failure_mid_run_serves_the_call_on_the_cpu(fake_npu, runtime_on, fault, reason):
    runtime = runtime_on()
    runtime.attention(*HEADS)
    fake_npu.pyxrt.FAULTS.add(fault)
    np.testing.assert_array_equal(runtime.attention(*HEADS), cpu.attention(*HEADS))
    assert counted(runtime, "attention") == {reason: 1}
    assert op_metrics(runtime, "attention")["backend"] == "cpu"


def test_plausible_wrong_output_after_start_is_caught_by_the_repeated_probe(fake_npu, runtime_on):
    runtime = runtime_on(probe_every_calls=2)
    runtime.gelu(X[0])
    runtime.gelu(X[0])
    fake_npu.pyxrt.FAULTS.add("wrong")
    np.testing.assert_array_equal(runtime.gelu(X[0]), cpu.gelu(X[0]))
    assert counted(runtime, "gelu") == {"bad_output": 1}


@pytest.mark.parametrize("remove, reason", [("artifacts", "no_kernel_artifacts"),
                                            ("device", "no_device"), ("pyxrt", "no_xrt")])
def test_missing_pieces_are_counted_once_and_never_retried(fake_npu, runtime_on, monkeypatch,
                                                            remove, reason):
    if remove == "artifacts":
        for path in fake_npu.kernel_dir.glob("gelu.*"):
            path.unlink()
    elif remove == "device":
        (fake_npu.device_dir / "accel0").unlink()
    else:
        monkeypatch.setitem(sys.modules, "pyxrt", None)
    clock = [0.0]
    config = FrontEndConfig(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir,
                            npu_retry_seconds=1.0, mode="auto")
    runtime = UnifiedNPURuntime.from_config(config, clock=lambda: clock[0])
    try:
        for _ in range(3):
            np.testing.assert_array_equal(runtime.gelu(X[0]), cpu.gelu(X[0]))
            clock[0] += 10.0
        assert counted(runtime, "gelu")[reason] == 1
        assert op_metrics(runtime, "gelu")["backends"]["cpu"]["calls"] == 3
    finally:
        runtime.close()


def test_a_transient_failure_is_retried_after_the_set_time(fake_npu):
    clock = [0.0]
    config = FrontEndConfig(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir,
                            npu_retry_seconds=5.0)
    runtime = UnifiedNPURuntime.from_config(config, clock=lambda: clock[0])
    try:
        fake_npu.pyxrt.FAULTS.add("timeout")
        runtime.gelu(X[0])
        assert op_metrics(runtime, "gelu")["backend"] == "cpu"
        fake_npu.pyxrt.FAULTS.clear()
        clock[0] = 6.0
        np.testing.assert_array_equal(runtime.gelu(X[0]), gelu_on_npu(X[0]))
        assert op_metrics(runtime, "gelu")["backend"] == "npu"
        assert counted(runtime, "gelu") == {"run_failed": 1}
    finally:
        runtime.close()


def test_disabled_ops_and_cpu_mode_never_touch_the_npu(fake_npu):
    cpu_config = FrontEndConfig(mode="cpu", kernel_dir=fake_npu.kernel_dir,
                                device_dir=fake_npu.device_dir)
    with UnifiedNPURuntime.from_config(cpu_config) as runtime:
        runtime.attention(*HEADS)
        assert op_metrics(runtime, "attention")["backend"] == "cpu"
        assert counted(runtime, "attention") == {}
    assert fake_npu.pyxrt.STATS["devices"] == 0
    config = FrontEndConfig(kernel_dir=fake_npu.kernel_dir, device_dir=fake_npu.device_dir)
    with UnifiedNPURuntime.from_config(config, enable_gelu=False) as runtime:
        contexts = fake_npu.pyxrt.STATS["contexts"]  # the mel front-end's
        np.testing.assert_array_equal(runtime.gelu(X[0]), cpu.gelu(X[0]))
        assert "enable_gelu=False" in op_metrics(runtime, "gelu")["reason"]
        assert fake_npu.pyxrt.STATS["contexts"] == contexts and counted(runtime, "gelu") == {}


def test_op_fallbacks_backends_and_calls_are_exported_on_metrics_and_status(fake_npu):
    fake_npu.pyxrt.FAULTS.add("zeros")
    config = FrontEndConfig(mode="auto", kernel_dir=fake_npu.kernel_dir,
                            device_dir=fake_npu.device_dir, frames_per_call=30,
                            use_batch_tier=False)
    runtime = UnifiedNPURuntime.from_config(config)
    fake_npu.pyxrt.FAULTS.clear()
    runtime.gelu(X[0])
    runtime.gelu(X[0])
    fake_npu.pyxrt.FAULTS.add("timeout")
    runtime.attention(*HEADS)
    app = create_app(Settings(warmup=False, encoder_backend="runtime"), runtime=runtime,
                     engine=ServedByEngine("cpu"))
    with TestClient(app) as client:
        samples = metric_samples_from_text(client.get("/metrics").text)
        status = client.get("/status").json()
    runtime.close()

    def sample(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert sample("amanuensis_op_backend_info", op="gelu", backend="npu") == 1
    assert sample("amanuensis_op_calls_total", op="gelu", backend="npu") == 2
    assert sample("amanuensis_op_fallbacks_total", op="gelu", reason="bad_output") == 0
    assert sample("amanuensis_op_fallbacks_total", op="attention", reason="run_failed") == 1
    assert sample("amanuensis_op_backend_info", op="attention", backend="cpu") == 1
    assert sample("amanuensis_op_calls_total", op="attention", backend="cpu") == 1
    assert sample("amanuensis_mel_fallbacks_total", reason="bad_output") == 1
    assert sample("amanuensis_encoder_backend_info", backend="runtime") == 1
    assert sample("amanuensis_encoder_backend_info", backend="ctranslate2") == 0
    # /status says the same: the encoder, where each op runs and why, its counters.
    assert status["encoder_backend"] == "runtime"
    gelu, attention = status["ops"]["gelu"], status["ops"]["attention"]
    assert gelu["backend"] == "npu" and gelu["backends"]["npu"]["calls"] == 2
    assert not any(gelu["fallbacks"].values())
    assert attention["backend"] == "cpu" and attention["fallbacks"]["run_failed"] == 1
    assert "npu unavailable (run_failed" in attention["reason"]
    assert attention["backends"]["cpu"]["calls"] == 1


def test_ops_not_called_yet_show_as_none_on_metrics_and_status():
    """With the default (CTranslate2) encoder nothing calls GELU or attention: the dashboard's
    op panel and /status say so rather than showing no back-end at all."""
    runtime = UnifiedNPURuntime(enable_mel=False)
    app = create_app(Settings(warmup=False, mel_backend="cpu"), runtime=runtime,
                     engine=ServedByEngine("cpu"))
    with TestClient(app) as client:
        samples = metric_samples_from_text(client.get("/metrics").text)
        status = client.get("/status").json()
    runtime.close()
    for op in ("gelu", "attention"):
        assert samples[("amanuensis_op_backend_info", (("backend", "none"), ("op", op)))] == 1
        assert samples[("amanuensis_op_backend_info", (("backend", "cpu"), ("op", op)))] == 0
        assert status["ops"][op]["backend"] == "none"
        assert status["ops"][op]["reason"] == "not used yet"
    assert status["encoder_backend"] == "ctranslate2"
    assert samples[("amanuensis_encoder_backend_info", (("backend", "ctranslate2"),))] == 1
