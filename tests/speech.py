"""The shared speech clips (``../shared/speech``) for tests, decoded with PyAV to 16 kHz mono.

Where the folder is absent a test that needs it skips with the reason - except in CI
(``CI=true``), which has the folder, so there it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from app.evaluation.corpus import SHARED_SPEECH_DIR, Utterance, shared_utterances
from app.evaluation.corpus import speech_files as corpus_speech_files

SPEECH_DIR = SHARED_SPEECH_DIR


def missing_speech(reason: str):
    """Skip (fail under ``CI=true``) because the shared speech is not here."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have the shared speech: {reason}")
    pytest.skip(reason)


def speech_files() -> list[Path]:
    """Every audio file under ``../shared/speech``."""
    files = corpus_speech_files()
    if not files:
        missing_speech(f"no shared speech clips at {SPEECH_DIR}")
    return files


def speech_utterances() -> list[Utterance]:
    """Every shared speech utterance with its reference transcript."""
    utterances = shared_utterances()
    if not utterances:
        missing_speech(f"no shared speech utterances at {SPEECH_DIR}")
    return utterances


def decode_16k_mono(path: Path) -> np.ndarray:
    """Decode, down-mix and resample to 16 kHz signed 16-bit, as ``whisperx.audio.load_audio``."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    return np.concatenate(chunks, axis=1).reshape(-1).astype(np.float32) / 32768.0
