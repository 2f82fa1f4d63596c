"""Audio decoding and the WhisperX engine: everything between an uploaded file and a transcript."""
