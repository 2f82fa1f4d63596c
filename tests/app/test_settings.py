"""Settings come from AMANUENSIS_* and every one is documented in the example env file."""

from __future__ import annotations

import re

from app.settings import Settings
from tests.conftest import REPO_ROOT


def test_every_setting_is_in_the_example_env_file():
    example = (REPO_ROOT / "config" / "amanuensis.env.example").read_text()
    documented = set(re.findall(r"^#? ?(AMANUENSIS_[A-Z_]+)=", example, re.MULTILINE))
    assert documented == {f"AMANUENSIS_{name.upper()}" for name in Settings.model_fields}


def test_every_setting_has_a_docstring():
    assert all(field.description for field in Settings.model_fields.values())


def test_reads_the_environment(monkeypatch):
    monkeypatch.setenv("AMANUENSIS_MODEL", "/models/x")
    monkeypatch.setenv("AMANUENSIS_PORT", "9001")
    monkeypatch.setenv("AMANUENSIS_MEL_BACKEND", "cpu")
    settings = Settings()
    assert (settings.model, settings.port, settings.mel_backend) == ("/models/x", 9001, "cpu")


def test_one_transcription_gets_every_core_by_default():
    import os

    cores = len(os.sched_getaffinity(0))
    assert Settings(max_concurrent=2).cpu_threads == cores
    assert Settings(max_concurrent=2, cpu_threads=1).cpu_threads == 1
