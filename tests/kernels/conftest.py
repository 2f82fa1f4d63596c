"""Fixtures for the mel kernel tests: the shared speech, and a fake NPU (device node, fake
artifacts, the strict fake pyxrt importable as ``pyxrt``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app.transcription.audio import decode_file
from tests.speech import speech_files

FAKES_DIR = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture(scope="session")
def speech() -> dict[str, np.ndarray]:
    """Every shared speech file decoded to 16 kHz mono float32."""
    return {path.name: decode_file(path) for path in speech_files()}


@dataclass
class FakeNpu:
    pyxrt: object
    kernel_dir: Path
    device_dir: Path


@pytest.fixture
def fake_npu(tmp_path, monkeypatch) -> FakeNpu:
    """A fake NPU: the strict fake pyxrt as ``pyxrt``, /dev/accel/accel0 and artifacts in tmp."""
    monkeypatch.syspath_prepend(str(FAKES_DIR))
    monkeypatch.delitem(sys.modules, "pyxrt", raising=False)
    import pyxrt

    pyxrt.reset()
    env = pyxrt.make_fake_device(tmp_path)
    monkeypatch.setenv("AMANUENSIS_NPU_DEVICE_DIR", env["AMANUENSIS_NPU_DEVICE_DIR"])
    yield FakeNpu(pyxrt, Path(env["ARTIFACTS_DIR"]), Path(env["AMANUENSIS_NPU_DEVICE_DIR"]))
    sys.modules.pop("pyxrt", None)
