"""Real NPU output against the golden models, bit for bit, and the runtime encoder on the real
NPU (needs the device, XRT's pyxrt and built xclbins; each test prints why it skips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.cli.kernels import synthetic_signals
from npu.config import FrontEndConfig
from npu.mel import golden
from npu.mel.npu import artifact_paths, open_npu_batch
from npu.ops import golden as ops_golden
from npu.ops import tables
from npu.ops.npu import artifact_paths as op_artifact_paths
from npu.ops.npu import open_npu_attention, open_npu_gelu

HARDWARE = FrontEndConfig()  # /dev/accel/accel0 and the kernels built in the checkout


def _skip_reason(artifacts: tuple[Path, ...]) -> str | None:
    if not HARDWARE.device_node().exists():
        return f"{HARDWARE.device_node()} is absent (no NPU)"
    missing = [p for p in artifacts if not p.is_file()]
    if missing:
        return f"kernel artifacts not built: {missing[0]} (make -C kernels)"
    try:
        import pyxrt  # noqa: F401
    except ImportError:
        return "pyxrt is not importable (XRT not installed)"
    return None


def _need(*artifacts: Path) -> None:
    reason = _skip_reason(artifacts)
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def _need_ops() -> None:
    _need(*op_artifact_paths(HARDWARE.kernel_dir, tables.gelu_stem()),
          *op_artifact_paths(HARDWARE.kernel_dir, tables.attention_stem()))


@pytest.mark.npu
def test_npu_equals_golden_bit_for_bit():
    _need(*artifact_paths(HARDWARE.kernel_dir, 80, 3000))
    backend = open_npu_batch(HARDWARE)
    try:
        for name, samples in synthetic_signals(3000).items():
            np.testing.assert_array_equal(backend._execute(samples),
                                          golden.kernel_call(samples, 3000, 80), err_msg=name)
    finally:
        backend.close()


@pytest.mark.npu
def test_gelu_on_the_npu_equals_golden_on_every_finite_bf16_value():
    _need(*op_artifact_paths(HARDWARE.kernel_dir, tables.gelu_stem()))
    bits = np.arange(1 << 16, dtype=np.uint16)
    bits = bits[np.isfinite(ops_golden.from_bf16(bits))].reshape(-1, 2)
    backend = open_npu_gelu(HARDWARE)
    try:
        out = backend.gelu(ops_golden.from_bf16(bits))
    finally:
        backend.close()
    assert out.shape == bits.shape and out.dtype == np.float32
    np.testing.assert_array_equal(ops_golden.to_bf16(out), ops_golden.gelu(bits))


@pytest.mark.npu
def test_attention_on_the_npu_equals_golden_per_head():
    """Two heads of Whisper's encoder shape; the second with large, shuffled scores (most
    weights underflow, the running maximum moves between key blocks)."""
    _need(*op_artifact_paths(HARDWARE.kernel_dir, tables.attention_stem()))
    config = tables.attention_config()
    rng = np.random.default_rng(5)
    shape = (2, config["MAX_KEYS"], config["HEAD_DIM"])
    q, k, v = (ops_golden.round_bf16(rng.standard_normal(shape).astype(np.float32))
               for _ in range(3))
    q[1] *= 4
    k[1] = 4 * k[1][np.argsort(rng.random(shape[1]))]
    backend = open_npu_attention(HARDWARE)
    try:
        out = backend.attention(q, k, v)
    finally:
        backend.close()
    for head in range(shape[0]):
        bits = [ops_golden.to_bf16(a[head]) for a in (q, k, v)]
        np.testing.assert_array_equal(ops_golden.to_bf16(out[head]), ops_golden.attention(*bits),
                                      err_msg=f"head {head}")


@pytest.mark.npu
@pytest.mark.slow
def test_runtime_encoder_on_the_npu_matches_ctranslate2_encode():
    """The tiny.en encoder with every GELU and attention on the real NPU, within the bounds the
    fake NPU meets (tests/kernels/test_encoder.py), and the same transcript as CTranslate2's
    own encoder (as words)."""
    _need_ops()
    import ctranslate2

    from app.evaluation.wer import normalise
    from npu import UnifiedNPURuntime
    from npu.ops.encoder import WhisperEncoder
    from tests.kernels.test_encoder import (
        NPU_MAX_ABS_ERR,
        NPU_REL_L2_ERR,
        ct2_encode,
        features_of,
        model_dir,
        transcript,
    )
    from tests.speech import speech_file

    model = ctranslate2.models.Whisper(model_dir(), device="cpu", intra_threads=2)
    encoder = WhisperEncoder.from_model_dir(model_dir())
    with UnifiedNPURuntime(enable_mel=False) as cpu, UnifiedNPURuntime.from_config(
            HARDWARE) as npu:
        features = features_of(speech_file("jfk/jfk.wav"), cpu)
        ours, theirs = encoder.encode(features, npu), ct2_encode(model, features)
        ops = npu.get_performance_metrics()["ops"]
    assert ops["gelu"]["backend"] == "npu" and ops["attention"]["backend"] == "npu", ops
    assert np.abs(ours - theirs).max() <= NPU_MAX_ABS_ERR
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) <= NPU_REL_L2_ERR
    assert normalise(transcript(model, ours)) == normalise(transcript(model, features))
