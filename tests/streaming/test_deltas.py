"""Deltas from chunk texts: joined, they are exactly the transcript's text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.streaming.deltas import TextDeltas

chunk_texts = st.lists(st.text(alphabet=" \tab.,\n", max_size=8), max_size=8)


@given(chunk_texts)
def test_joined_deltas_are_the_stripped_joined_texts(texts):
    joiner = TextDeltas()
    deltas = [joiner.delta(text) for text in texts]
    assert "".join(deltas) == "".join(texts).strip()


def test_whisper_style_chunks():
    joiner = TextDeltas()
    assert [joiner.delta(t) for t in [" And so,", "  ", " my fellow Americans. "]] == \
        ["And so,", "", "   my fellow Americans."]
