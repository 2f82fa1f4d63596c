"""The Dockerfile: lint-clean, and its CPU PyTorch pins satisfy WhisperX's requirements."""

import re
import subprocess
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

TORCH_PACKAGES = ("torch", "torchaudio", "torchvision")


def test_hadolint_passes(repo_root, tools):
    result = subprocess.run([tools.find("hadolint"), "Dockerfile"], cwd=repo_root,
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_torch_pins_satisfy_whisperx(repo_root):
    """The CPU wheels installed first must satisfy WhisperX's own pins, or the project
    install would replace them with the CUDA builds."""
    text = Path(repo_root / "Dockerfile").read_text()
    pins = dict(re.findall(r"\b(torch|torchaudio|torchvision)==([0-9][0-9.]*)\b", text))
    assert set(pins) == set(TORCH_PACKAGES), pins
    assert "--index-url" in text and "download.pytorch.org/whl/cpu" in text
    wanted = {r.name: r for r in map(Requirement, requires("whisperx") or [])
              if r.name in TORCH_PACKAGES and r.marker is None}
    assert set(wanted) == set(TORCH_PACKAGES), wanted
    for name, requirement in wanted.items():
        assert Version(pins[name] + "+cpu") in requirement.specifier, (name, requirement)
