"""Amanuensis: a self-hosted speech-to-text service on WhisperX with an NPU log-mel front-end."""
