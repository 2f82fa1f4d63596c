"""Word error rate as Whisper's authors measure it: both sides through Whisper's English text
normaliser (``whisper-normalizer``), then word-level edit distance (``jiwer``)."""

from __future__ import annotations

from collections.abc import Sequence

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

_normalise = EnglishTextNormalizer()


def normalise(text: str) -> str:
    """``text`` as Whisper's English normaliser writes it (case, punctuation, spellings,
    numbers)."""
    return _normalise(text)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: all edits over all reference words, after normalising both sides."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    normalised_refs = [normalise(ref) for ref in references]
    empty = [ref for ref, normalised in zip(references, normalised_refs) if not normalised]
    if empty or not references:
        raise ValueError(f"references with no words to measure against: {empty or references}")
    return jiwer.wer(normalised_refs, [normalise(hyp) for hyp in hypotheses])
