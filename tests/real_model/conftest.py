"""A service process on default settings (the bundled tiny.en, no language, mel ``auto``) and
the shared speech it transcribes."""

from __future__ import annotations

import pytest

from app.evaluation.corpus import Utterance
from tests.conftest import ServiceProcess
from tests.speech import speech_utterances


@pytest.fixture(scope="session")
def default_service(start_service) -> ServiceProcess:
    """The service as a fresh install runs it: no model, language or back-end configured."""
    return start_service({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


@pytest.fixture(scope="session")
def utterances() -> list[Utterance]:
    return speech_utterances()
