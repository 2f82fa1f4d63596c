"""Speech with reference transcripts: the shared test speech, or any folder of audio + ``.txt``.

The shared speech (``../shared/speech`` beside a source checkout, or ``AMANUENSIS_SPEECH_DIR``)
holds LibriSpeech utterances (``*.trans.txt``: ``ID TEXT`` lines), LJ Speech clips
(``transcripts.psv``: ``ID|text``) and the JFK excerpt (``jfk.txt``). It is test data, never
part of the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SHARED_SPEECH_DIR = Path(
    os.environ.get("AMANUENSIS_SPEECH_DIR")
    or Path(__file__).resolve().parents[2] / ".." / "shared" / "speech").resolve()
AUDIO_SUFFIXES = frozenset({".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".webm"})


@dataclass(frozen=True)
class Utterance:
    """One audio file and what is said in it."""

    audio: Path
    reference: str

    @property
    def name(self) -> str:
        return self.audio.stem


def shared_utterances(root: Path = SHARED_SPEECH_DIR) -> list[Utterance]:
    """Every utterance of the shared speech, each once (JFK as its original FLAC); empty when
    the folder is absent."""
    utterances: list[Utterance] = []
    for listing in sorted(root.glob("librispeech/*.trans.txt")):
        for line in listing.read_text().splitlines():
            name, _, text = line.partition(" ")
            utterances.append(Utterance(listing.parent / f"{name}.flac", text))
    psv = root / "ljspeech" / "transcripts.psv"
    if psv.is_file():
        for line in psv.read_text().splitlines():
            name, _, text = line.partition("|")
            utterances.append(Utterance(root / "ljspeech" / "wavs" / f"{name}.wav", text))
    jfk = root / "jfk" / "jfk.txt"
    if jfk.is_file():
        utterances.append(Utterance(root / "jfk" / "jfk.flac", jfk.read_text().strip()))
    return [utterance for utterance in utterances if utterance.audio.is_file()]


def folder_utterances(folder: Path) -> list[Utterance]:
    """Audio files under ``folder`` that have a ``.txt`` reference beside them (same stem)."""
    return [Utterance(path, path.with_suffix(".txt").read_text().strip())
            for path in sorted(folder.rglob("*"))
            if path.suffix.lower() in AUDIO_SUFFIXES and path.with_suffix(".txt").is_file()]


def speech_files(root: Path = SHARED_SPEECH_DIR) -> list[Path]:
    """Every audio file under the shared speech folder, sorted; empty when it is absent."""
    return sorted(path for path in root.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES)
