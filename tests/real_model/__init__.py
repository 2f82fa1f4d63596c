"""Real speech through the real default model (the bundled tiny.en)."""
