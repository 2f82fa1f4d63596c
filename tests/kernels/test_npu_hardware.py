"""Real NPU output against the golden model, bit for bit (needs the device and built xclbins)."""

from __future__ import annotations

import numpy as np
import pytest

from app.cli.kernels import synthetic_signals
from npu.config import FrontEndConfig
from npu.mel import golden
from npu.mel.npu import artifact_paths, open_npu_batch

HARDWARE = FrontEndConfig()  # /dev/accel/accel0 and the kernels built in the checkout


def _skip_reason() -> str | None:
    if not HARDWARE.device_node().exists():
        return f"{HARDWARE.device_node()} is absent (no NPU)"
    missing = [p for p in artifact_paths(HARDWARE.kernel_dir, 80, 3000) if not p.is_file()]
    if missing:
        return f"kernel artifacts not built: {missing[0]} (make -C kernels)"
    try:
        import pyxrt  # noqa: F401
    except ImportError:
        return "pyxrt is not importable (XRT not installed)"
    return None


@pytest.mark.npu
def test_npu_equals_golden_bit_for_bit():
    reason = _skip_reason()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    backend = open_npu_batch(HARDWARE)
    try:
        for name, samples in synthetic_signals(3000).items():
            np.testing.assert_array_equal(backend._execute(samples),
                                          golden.kernel_call(samples, 3000, 80), err_msg=name)
    finally:
        backend.close()
