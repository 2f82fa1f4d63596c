"""Speech probability over a live stream: Silero VAD (the ONNX model faster-whisper ships), one
probability per 32 ms frame, with the network's state carried from one call to the next so a
stream fed in pieces scores exactly as the same audio fed at once."""

from __future__ import annotations

import numpy as np
from faster_whisper.vad import get_vad_model

FRAME_SAMPLES = 512
"""Samples per scored frame at 16 kHz (32 ms), the model's window."""
_CONTEXT_SAMPLES = 64


class StreamingVad:
    """Scores 16 kHz mono audio as it arrives. The ONNX session is shared (its runs are
    thread-safe and stateless); each stream keeps its own state here."""

    def __init__(self) -> None:
        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Speech probabilities of the complete frames ``audio`` finishes (the rest waits)."""
        audio = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        frames = audio.shape[0] // FRAME_SAMPLES
        self._pending = audio[frames * FRAME_SAMPLES:]
        if frames == 0:
            return np.zeros(0, dtype=np.float32)
        batch = audio[:frames * FRAME_SAMPLES].reshape(frames, FRAME_SAMPLES)
        contexts = np.concatenate([self._context[np.newaxis],
                                   batch[:-1, -_CONTEXT_SAMPLES:]])
        self._context = batch[-1, -_CONTEXT_SAMPLES:].copy()
        inputs = np.concatenate([contexts, batch], axis=1)
        output, self._h, self._c = self._session.run(
            None, {"input": inputs, "h": self._h, "c": self._c})
        return np.asarray(output, dtype=np.float32).reshape(-1)
