"""``amanuensis bench load``: many clients at once against a live server, on this machine only.

Sends ``--requests`` transcription requests from ``--clients`` concurrent connections, after a few
warm-up bursts at the same concurrency, and reports latency percentiles, throughput, answers by status and
the server's resident memory (``process_resident_memory_bytes`` from its ``/metrics``) before and
after the load. Clients behave as real ones should: on a 429 a client waits the server's
``Retry-After`` and tries again, up to ``--retries`` times (``0`` sends every request once, for
the raw refusal rate). A final 429 is an answer (the server refusing what it cannot take), not
an error; a 5xx or a request that gets no answer at all is. The last line is one JSON object; the exit
status is 1 when any request got a 5xx or no answer.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import math
import os
import sys
import time
import wave
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from npu.audio_spec import SAMPLE_RATE

MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """One request's fate: an HTTP status, or the name of the transport error that replaced it."""

    status: int | None
    seconds: float
    failure: str | None = None
    retries: int = 0


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser(
        "load", help="drive a live server on this machine with concurrent clients"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--requests", type=int, default=400, help="requests in total")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument(
        "--audio", type=Path, help="file to send (default: 3 s of synthetic tone, WAV)"
    )
    parser.add_argument("--endpoint", default="/v1/audio/transcriptions")
    parser.add_argument(
        "--warmup", type=int, default=3, help="bursts of --clients requests sent first"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a request counts unanswered"
    )
    parser.add_argument(
        "--retries", type=int, default=3,
        help="times a client retries a 429 after waiting its Retry-After (0: never)",
    )
    parser.set_defaults(handler=run_load_bench)


def run_load_bench(args: argparse.Namespace) -> int:
    if args.clients < 1 or args.requests < 1 or args.warmup < 0 or args.retries < 0:
        print("--clients and --requests must be at least 1, --warmup and --retries at least 0",
              file=sys.stderr)
        return 2
    if not is_loopback_url(args.url):
        print(f"refusing to load {args.url}: only loopback servers may be driven", file=sys.stderr)
        return 2
    audio = args.audio.read_bytes() if args.audio else synthetic_wav(seconds=3.0)
    filename = args.audio.name if args.audio else "tone.wav"
    import asyncio

    report = asyncio.run(
        drive(
            base_url=args.url.rstrip("/"),
            endpoint=args.endpoint,
            audio=audio,
            filename=filename,
            clients=args.clients,
            requests=args.requests,
            warmup=args.warmup,
            timeout=args.timeout,
            retries=args.retries,
            api_key=os.environ.get("AMANUENSIS_API_KEY") or None,
        )
    )
    if report is None:
        return 1
    print_report(report)
    return 1 if report["errors_5xx"] or report["unanswered"] else 0


def is_loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def synthetic_wav(seconds: float) -> bytes:
    """A 16 kHz mono 16-bit WAV: a 440 Hz tone under a slow 3 Hz swell, so it is not silence."""
    n = int(seconds * SAMPLE_RATE)
    samples = bytearray()
    for i in range(n):
        t = i / SAMPLE_RATE
        value = 0.3 * math.sin(2 * math.pi * 440 * t) * (0.6 + 0.4 * math.sin(2 * math.pi * 3 * t))
        samples += int(value * 32767).to_bytes(2, "little", signed=True)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(bytes(samples))
    return buffer.getvalue()


async def drive(
    *,
    base_url: str,
    endpoint: str,
    audio: bytes,
    filename: str,
    clients: int,
    requests: int,
    warmup: int,
    timeout: float,
    api_key: str | None,
    retries: int = 0,
) -> dict | None:
    """Warm up, sample RSS, run the load, sample RSS again; None when warm-up fails."""
    import asyncio

    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=timeout, limits=limits, headers=headers
    ) as client:
        # Warm up at the same concurrency as the load, so the server's peak working set (two
        # transcriptions at once, a full queue) is reached before memory is first sampled.
        for _ in range(warmup):
            burst = await asyncio.gather(
                *(send(client, endpoint, audio, filename, retries) for _ in range(clients))
            )
            if not any(o.status == 200 for o in burst) or any(
                o.status is None or o.status >= 500 for o in burst
            ):
                print(f"warm-up failed: {sorted(map(str, burst))[:3]}", file=sys.stderr)
                return None
        rss_before = await resident_memory_bytes(client)
        remaining = iter(range(requests))
        outcomes: list[Outcome] = []

        async def worker() -> None:
            for _ in remaining:  # shared iterator: each index is taken by exactly one worker
                outcomes.append(await send(client, endpoint, audio, filename, retries))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
        rss_after = await resident_memory_bytes(client)
    return summarise(outcomes, wall, clients, rss_before, rss_after)


async def send(client, endpoint: str, audio: bytes, filename: str, retries: int = 0) -> Outcome:
    """One request as its client sees it: retried after ``Retry-After`` on a 429, up to
    ``retries`` times; the latency covers every attempt and wait."""
    import asyncio

    import httpx

    started = time.perf_counter()
    for attempt in range(retries + 1):
        try:
            response = await client.post(
                endpoint,
                files={"file": (filename, audio, "application/octet-stream")},
                data={"model": "whisper-1", "response_format": "json"},
            )
        except httpx.HTTPError as error:
            return Outcome(None, time.perf_counter() - started, type(error).__name__, attempt)
        if response.status_code != 429 or attempt == retries:
            break
        await asyncio.sleep(retry_after_seconds(response.headers.get("retry-after")))
    return Outcome(response.status_code, time.perf_counter() - started, retries=attempt)


def retry_after_seconds(header: str | None) -> float:
    """The wait a ``Retry-After`` header asks for (delay-seconds form), 1 s when absent or odd."""
    try:
        return max(0.0, float(header))
    except (TypeError, ValueError):
        return 1.0


async def resident_memory_bytes(client) -> float | None:
    """The server's RSS as its prometheus_client reports it, or None if it does not."""
    from prometheus_client.parser import text_string_to_metric_families

    response = await client.get("/metrics")
    if response.status_code != 200:
        return None
    for family in text_string_to_metric_families(response.text):
        if family.name == "process_resident_memory_bytes":
            return family.samples[0].value
    return None


def percentile_ms(sorted_seconds: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_seconds:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_seconds)))
    return round(sorted_seconds[rank - 1] * 1000, 1)


def summarise(
    outcomes: list[Outcome],
    wall: float,
    clients: int,
    rss_before: float | None,
    rss_after: float | None,
) -> dict:
    by_status = Counter(str(o.status) if o.status else o.failure for o in outcomes)
    answered = [o for o in outcomes if o.status is not None]
    latencies = sorted(o.seconds for o in answered)
    ok = sum(1 for o in answered if o.status == 200)
    growth = None
    if rss_before is not None and rss_after is not None:
        growth = round((rss_after - rss_before) / MEBIBYTE, 1)
    return {
        "clients": clients,
        "requests": len(outcomes),
        "answered": len(answered),
        "unanswered": len(outcomes) - len(answered),
        "ok": ok,
        "rejected_429": sum(1 for o in answered if o.status == 429),
        "retried_429": sum(o.retries for o in outcomes),
        "errors_4xx_other": sum(1 for o in answered if 400 <= o.status < 500 and o.status != 429),
        "errors_5xx": sum(1 for o in answered if o.status >= 500),
        "by_status": dict(sorted(by_status.items())),
        "p50_ms": percentile_ms(latencies, 0.50),
        "p95_ms": percentile_ms(latencies, 0.95),
        "p99_ms": percentile_ms(latencies, 0.99),
        "wall_seconds": round(wall, 3),
        "answered_per_second": round(len(answered) / wall, 2) if wall > 0 else None,
        "ok_per_second": round(ok / wall, 2) if wall > 0 else None,
        "rss_before_mb": None if rss_before is None else round(rss_before / MEBIBYTE, 1),
        "rss_after_mb": None if rss_after is None else round(rss_after / MEBIBYTE, 1),
        "rss_growth_mb": growth,
    }


def print_report(report: dict) -> None:
    print(f"{report['requests']} requests from {report['clients']} clients")
    print(f"answered {report['answered']}, unanswered {report['unanswered']}, "
          f"429s retried after Retry-After {report['retried_429']}")
    print("by status: " + ", ".join(f"{k}={v}" for k, v in report["by_status"].items()))
    print(
        f"latency p50 {report['p50_ms']} ms, p95 {report['p95_ms']} ms, p99 {report['p99_ms']} ms"
    )
    print(
        f"throughput {report['answered_per_second']} answers/s, "
        f"{report['ok_per_second']} transcriptions/s over {report['wall_seconds']} s"
    )
    print(
        f"server RSS {report['rss_before_mb']} MiB -> {report['rss_after_mb']} MiB "
        f"(growth {report['rss_growth_mb']} MiB)"
    )
    print(json.dumps(report, sort_keys=True))
