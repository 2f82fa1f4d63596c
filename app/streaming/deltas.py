"""Chunk texts to text deltas: what a streaming client appends, piece by piece."""

from __future__ import annotations


class TextDeltas:
    """Turns the texts of consecutive chunks into deltas whose concatenation is exactly the
    transcript's text, ``"".join(texts).strip()``: whitespace before the first word is dropped,
    whitespace after the last word so far is held back until more words follow."""

    def __init__(self) -> None:
        self._started = False
        self._held = ""

    def delta(self, text: str) -> str:
        """The delta for the next chunk's ``text`` (empty when it adds no word yet)."""
        if not self._started:
            text = text.lstrip()
            if not text:
                return ""
            self._started = True
        words = text.rstrip()
        if not words:
            self._held += text
            return ""
        delta = self._held + words
        self._held = text[len(words):]
        return delta
