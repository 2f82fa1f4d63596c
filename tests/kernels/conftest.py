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
    yield install_fake_npu(monkeypatch, tmp_path)
    sys.modules.pop("pyxrt", None)


def install_fake_npu(monkeypatch: pytest.MonkeyPatch, root: Path) -> FakeNpu:
    """Make the strict fake pyxrt importable as ``pyxrt`` (fresh counters) and a fake device
    and artifacts under ``root``; undone with ``monkeypatch`` (the caller drops ``pyxrt``)."""
    monkeypatch.syspath_prepend(str(FAKES_DIR))
    monkeypatch.delitem(sys.modules, "pyxrt", raising=False)
    import pyxrt

    pyxrt.reset()
    env = pyxrt.make_fake_device(root)
    monkeypatch.setenv("AMANUENSIS_NPU_DEVICE_DIR", env["AMANUENSIS_NPU_DEVICE_DIR"])
    return FakeNpu(pyxrt, Path(env["ARTIFACTS_DIR"]), Path(env["AMANUENSIS_NPU_DEVICE_DIR"]))
