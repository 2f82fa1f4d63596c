"""Local processes the benchmarks start (a service, a Redis): a free loopback port for one, and
the wait for a service to answer."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import IO

POLL_SECONDS = 0.05


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ok(url: str, process: subprocess.Popen, launched: float, timeout: float,
                  log: IO[bytes] | None = None) -> float:
    """Seconds from ``launched`` (a ``time.perf_counter()``) to the first 200 from ``url``;
    exits (with the tail of ``log``, the process's output, when given) if ``process`` dies or
    ``timeout`` seconds pass first."""
    import httpx

    while time.perf_counter() - launched < timeout:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=POLL_SECONDS * 20).status_code == 200:
                return time.perf_counter() - launched
        except httpx.TransportError:
            pass
        time.sleep(POLL_SECONDS)
    tail = ""
    if log is not None:
        log.seek(0)
        tail = "; its log ends:\n" + log.read()[-3000:].decode(errors="replace")
    raise SystemExit(f"{url} did not answer 200 within {timeout:.0f} s "
                     f"(exit code {process.poll()}){tail}")
