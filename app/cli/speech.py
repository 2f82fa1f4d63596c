"""The shared speech clips the CLI's checks and benchmarks use by default: ``../shared/speech``
beside the project root (LibriSpeech, LJ Speech and JFK recordings with their transcripts)."""

from __future__ import annotations

from pathlib import Path

SHARED_SPEECH = (Path(__file__).resolve().parents[2] / ".." / "shared" / "speech").resolve()
SPEECH_SUFFIXES = (".flac", ".wav", ".mp3", ".ogg")


def speech_files(root: Path = SHARED_SPEECH) -> list[Path]:
    """Every audio file under ``root``, sorted; empty if the folder is absent."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in SPEECH_SUFFIXES)
