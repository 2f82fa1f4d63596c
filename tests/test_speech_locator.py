"""The speech locator: a test needing ``../shared/speech`` skips without it, and fails under CI."""

from __future__ import annotations

import pytest

from tests import speech

FINDERS = [speech.speech_files, speech.speech_utterances, lambda: speech.clip("jfk"),
           lambda: speech.speech_file("jfk/jfk.wav")]


@pytest.fixture
def no_speech(monkeypatch, tmp_path):
    monkeypatch.setattr(speech, "SPEECH_DIR", tmp_path / "absent")


@pytest.mark.parametrize("find", FINDERS)
def test_missing_speech_fails_under_ci(no_speech, monkeypatch, find):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have the shared speech"):
        find()


@pytest.mark.parametrize("find", FINDERS)
def test_missing_speech_skips_elsewhere(no_speech, monkeypatch, find):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent"):
        find()
