"""Voice-activity detection for the engine: which detector cuts the audio into chunks.

``silero_onnx`` is Silero VAD v6 as the ONNX file faster-whisper ships inside its package, run
by onnxruntime: no download, no torch, and ~0.2 s for 120 s of speech on one core where
WhisperX's pyannote model takes seconds (a torch LSTM over the whole file). It sits behind
WhisperX's :class:`~whisperx.vads.Vad` interface, so WhisperX's chunk merging and batching stay
as they are. Its options are faster-whisper's ``BatchedInferencePipeline`` defaults (speech
segments of at most one chunk, 160 ms of silence ends one), so the segments it hands WhisperX
already fit a chunk: merging only packs neighbours, it never has to cut.

``pyannote`` (bundled with WhisperX) and ``silero`` (WhisperX's own, from torch hub: it needs
the network on first use) are built by ``whisperx.load_model``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model
from whisperx.diarize import Segment
from whisperx.vads import Vad

from app.settings import VadMethod
from npu.audio_spec import SAMPLE_RATE

CHUNK_SECONDS = 30
"""WhisperX's chunk length (``transcribe(chunk_size=30)``), the longest segment to hand it."""
MIN_SILENCE_MS = 160
"""Silence that ends a speech segment: faster-whisper's batched pipeline's value."""


class SileroOnnx(Vad):
    """Silero VAD (faster-whisper's bundled ONNX model) as a WhisperX VAD.

    Stateless between calls (the recurrent state lives in each call), and onnxruntime sessions
    may run from several threads at once, so concurrent transcriptions need no lock.
    """

    def __init__(self, vad_onset: float = 0.5, chunk_size: float = CHUNK_SECONDS) -> None:
        super().__init__(vad_onset)
        self.options = VadOptions(threshold=vad_onset, max_speech_duration_s=chunk_size,
                                  min_silence_duration_ms=MIN_SILENCE_MS)
        get_vad_model()  # load the network now, not on the first request

    def __call__(self, audio: dict[str, Any], **kwargs: Any) -> list[Segment]:
        if audio["sample_rate"] != SAMPLE_RATE:
            raise ValueError(f"the VAD takes {SAMPLE_RATE} Hz audio, not {audio['sample_rate']}")
        stamps = get_speech_timestamps(audio["waveform"], self.options, sampling_rate=SAMPLE_RATE)
        return [Segment(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE, "UNKNOWN")
                for s in stamps]

    @staticmethod
    def preprocess_audio(audio: np.ndarray) -> np.ndarray:
        """The samples as they are: no tensor, no copy."""
        return audio

    @staticmethod
    def merge_chunks(segments: list[Segment], chunk_size: float, onset: float = 0.5,
                     offset: float | None = None) -> list[dict]:
        """WhisperX's merge; no speech at all gives no chunks."""
        return Vad.merge_chunks(segments, chunk_size, onset, offset) if segments else []


def bundled_vad(method: VadMethod) -> Vad | None:
    """The detector this module builds for ``method``; ``None`` for the ones WhisperX builds."""
    return SileroOnnx() if method == "silero_onnx" else None
