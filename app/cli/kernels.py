"""``amanuensis kernels verify``: prove the mel kernel's arithmetic on this machine.

Builds the host library of the kernel if needed, then on the given audio (default: every file in
``../shared/speech``) plus synthetic edge cases checks that the host-compiled kernel equals the
golden model bit for bit, and that the whole NPU path (host + kernel) matches WhisperX's float
features. Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SPEECH = REPO_ROOT / ".." / "shared" / "speech"
SPEECH_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def decode_16k_mono(path: Path) -> np.ndarray:
    """Decode any audio file with PyAV into float32 mono 16 kHz samples."""
    import av

    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
        chunks = []
        for frame in container.decode(audio=0):
            chunks.extend(resampled.to_ndarray().ravel() for resampled in resampler.resample(frame))
        chunks.extend(resampled.to_ndarray().ravel() for resampled in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def speech_files(root: Path = SHARED_SPEECH) -> list[Path]:
    """Every audio file under the shared speech folder, sorted; empty if it is absent."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in SPEECH_SUFFIXES)
