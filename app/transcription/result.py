"""What a transcription hands to the formatters, and what the service reads off the
configured model before loading it: light enough to import before WhisperX (which takes seconds
to import), so the HTTP server answers ``/health`` while the engine loads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from app.settings import Settings


@dataclass
class Transcription:
    """What the engine hands to the formatters."""

    language: str
    duration: float
    segments: list[dict]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    mel_backend: str | None = None
    """The mel back-end that served most of this request's chunks (``None``: no mel call)."""
    word_timestamps_method: str | None = None
    """How the words were timed: :data:`CROSS_ATTENTION` or :data:`WAV2VEC2` (``None``: no
    words asked for)."""

    @property
    def text(self) -> str:
        return "".join(segment["text"] for segment in self.segments).strip()


def model_dir(settings: Settings) -> Path:
    """The configured model's CTranslate2 directory: a model name is resolved (downloaded when
    needed) as the model load would do anyway."""
    from faster_whisper.utils import download_model

    source = settings.model_choice.source
    path = Path(source)
    if not path.is_dir():
        path = Path(download_model(source, cache_dir=str(settings.model_cache_dir)
                                   if settings.model_cache_dir else None))
    return path


def model_n_mels(settings: Settings) -> int:
    """Mel bands the configured Whisper model expects (80, or 128 for large-v3), read the way
    faster-whisper reads them: ``feature_size`` in the model's ``preprocessor_config.json``, so
    the runtime can be created for the right size before the model is loaded."""
    config = model_dir(settings) / "preprocessor_config.json"
    if not config.is_file():
        return 80
    return int(json.loads(config.read_text()).get("feature_size", 80))
