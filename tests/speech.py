"""The shared speech clips (``../shared/speech``), decoded with PyAV to 16 kHz mono float32."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

SPEECH_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "speech").resolve()
AUDIO_SUFFIXES = {".flac", ".wav", ".mp3", ".ogg"}


def speech_files() -> list[Path]:
    """Every audio file under ``../shared/speech``; skips the test (with the reason) if absent."""
    if not SPEECH_DIR.is_dir():
        pytest.skip(f"shared speech clips not found at {SPEECH_DIR}")
    files = sorted(p for p in SPEECH_DIR.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        pytest.skip(f"no audio files under {SPEECH_DIR}")
    return files


def decode_16k_mono(path: Path) -> np.ndarray:
    """Decode, down-mix and resample to 16 kHz signed 16-bit, as ``whisperx.audio.load_audio``."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    return np.concatenate(chunks, axis=1).reshape(-1).astype(np.float32) / 32768.0
