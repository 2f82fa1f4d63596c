"""Whisper's log-mel front-end: the CPU back-end, the NPU back-end (pyxrt), the NPU path's host
side, the kernel's golden model and its tables."""
