"""The shared speech clips (``../shared/speech``) for tests: found, or the test cannot run.

A test that needs them skips (with the reason) when they are absent, and fails instead under
``CI=true``, where they must be present.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from app.cli.speech import SHARED_SPEECH
from app.cli.speech import speech_files as shared_speech_files

SPEECH_DIR = SHARED_SPEECH


def missing(reason: str) -> None:
    """Fail under ``CI=true``, skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the shared speech must be present)")
    pytest.skip(reason)


@functools.cache
def _found() -> tuple[Path, ...]:
    return tuple(shared_speech_files(SPEECH_DIR))


def speech_files() -> list[Path]:
    """Every audio file under ``../shared/speech``, sorted."""
    if not _found():
        missing(f"no shared speech clips at {SPEECH_DIR}")
    return list(_found())


def clip(corpus: str) -> Path:
    """The first audio file of ``corpus`` (``jfk``, ``librispeech``, ``ljspeech``)."""
    return next(f for f in speech_files() if corpus in f.relative_to(SPEECH_DIR).parts)


def speech_file(relative: str) -> Path:
    """One named file, e.g. ``jfk/jfk.wav``."""
    path = SPEECH_DIR / relative
    if not path.is_file():
        missing(f"no shared speech file {path}")
    return path
