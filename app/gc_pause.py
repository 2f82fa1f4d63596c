"""Python's cyclic garbage collector paused for the start-up, for ``amanuensis serve`` and the
service's model loading alike (light to import: ``serve`` pauses it before importing anything).

Start-up creates some half a million long-lived objects (WhisperX, torch, transformers, pyannote,
FastAPI); with the collector on, its automatic passes rescan them over and over (measured: 1.3 s
of the 7.5 s WhisperX import, 1,337 passes; 0.35 s of the 1.9 s the app takes to import). The
loader makes one full pass at the end instead and then :func:`resume` turns the collector back
on. A collector someone else turned off stays off.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_paused = False


def pause() -> None:
    """Turn the collector off until :func:`resume`, unless it is off already."""
    global _paused
    with _lock:
        if gc.isenabled():
            gc.disable()
            _paused = True


def resume() -> None:
    """Turn the collector back on if :func:`pause` turned it off (whoever called it)."""
    global _paused
    with _lock:
        if _paused:
            gc.enable()
            _paused = False
