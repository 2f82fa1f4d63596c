"""Transcripts as they are decoded: SSE on the HTTP endpoint, realtime sessions over WebSocket."""
