"""``amanuensis bench stream``: concurrent realtime sessions against a live server on this
machine, with file mode (the same utterances uploaded once spoken) as the peer, interleaved.

Each round opens ``--sessions`` realtime sessions at once, each streaming every ``--audio``
file as one utterance (followed by a pause) at ``--pace`` times real time; then the same number
of HTTP clients upload the same utterances, one file per request, as a client that records first
and uploads after would. Per turn it measures, from the moment the utterance's last sample was
sent, the time to the turn's first delta and to its completed transcript (end of turn); per
upload, the time from sending it to the answer. Per-session and per-client lines, then one JSON
line: p50/p95 of each, and end of turn over file mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path

SAMPLE_RATE = 16_000


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser("stream", help="concurrent realtime sessions vs file mode")
    parser.add_argument("audio", type=Path, nargs="+", help="speech files, one utterance each")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions (N)")
    parser.add_argument("--pace", type=float, default=1.0, help="times faster than real time")
    parser.add_argument("--rate", type=int, choices=(16000, 24000), default=24000,
                        help="PCM16 sample rate sent")
    parser.add_argument("--pause", type=float, default=1.0, help="silence after each utterance")
    parser.add_argument("--rounds", type=int, default=1, help="realtime/file rounds, interleaved")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per session")
    parser.set_defaults(handler=run_stream_bench)


def run_stream_bench(args: argparse.Namespace) -> int:
    from app.cli.bench_load import is_loopback_url

    if args.sessions < 1 or args.rounds < 1 or args.pace <= 0:
        print("--sessions and --rounds must be at least 1, --pace positive", file=sys.stderr)
        return 2
    if not is_loopback_url(args.url):
        print(f"refusing to load {args.url}: only loopback servers may be driven", file=sys.stderr)
        return 2
    from app.transcription.audio import decode_audio

    utterances = []
    for path in args.audio:
        with path.open("rb") as source:
            utterances.append(decode_audio(source))
    report = asyncio.run(_bench(args, utterances))
    print(json.dumps(report, sort_keys=True))
    return 1 if report["failed_turns"] or report["missing_turns"] else 0


async def _bench(args: argparse.Namespace, utterances: list) -> dict:
    first_deltas: list[float] = []
    ends: list[float] = []
    uploads: list[float] = []
    failed = missing = 0
    for round_number in range(1, args.rounds + 1):
        records = await asyncio.gather(*(_session(args, utterances)
                                         for _ in range(args.sessions)))
        for index, record in enumerate(records, 1):
            turns = record.turns()
            failed += len(record.of_type("conversation.item.input_audio_transcription.failed"))
            missing += max(0, len(utterances) - len(turns))
            firsts = [t.first_delta_at - end for t, end in zip(turns, record.speech_ends)
                      if t.first_delta_at is not None]
            done = [t.completed_at - end for t, end in zip(turns, record.speech_ends)]
            first_deltas += firsts
            ends += done
            print(f"round {round_number} realtime session {index}: {len(turns)}/"
                  f"{len(utterances)} turns, first delta p50 {_p(firsts, 0.5):.3f} s, "
                  f"end of turn p50 {_p(done, 0.5):.3f} s")
        latencies = await asyncio.gather(*(_uploads(args.url, utterances)
                                           for _ in range(args.sessions)))
        for index, seconds in enumerate(latencies, 1):
            uploads += seconds
            print(f"round {round_number} file client {index}: {len(seconds)} uploads, "
                  f"p50 {_p(seconds, 0.5):.3f} s")
    return {
        "sessions": args.sessions, "pace": args.pace, "rate": args.rate, "rounds": args.rounds,
        "utterances": len(utterances), "turns": len(ends), "failed_turns": failed,
        "missing_turns": missing,
        "first_delta_p50_s": _p(first_deltas, 0.5), "first_delta_p95_s": _p(first_deltas, 0.95),
        "end_of_turn_p50_s": _p(ends, 0.5), "end_of_turn_p95_s": _p(ends, 0.95),
        "file_mode_p50_s": _p(uploads, 0.5), "file_mode_p95_s": _p(uploads, 0.95),
        "end_of_turn_over_file_mode_p50": _ratio(_p(ends, 0.5), _p(uploads, 0.5)),
    }


async def _session(args: argparse.Namespace, utterances: list):
    from app.streaming.client import stream_utterances

    url = "ws" + args.url.removeprefix("http") + "/v1/realtime"
    return await stream_utterances(url, utterances, rate=args.rate, pace=args.pace,
                                   pause_seconds=args.pause, timeout=args.timeout)


async def _uploads(base_url: str, utterances: list) -> list[float]:
    import httpx

    from app.transcription.audio import wav_bytes

    seconds = []
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        for audio in utterances:
            wav = wav_bytes(audio)
            started = time.monotonic()
            response = await client.post("/v1/audio/transcriptions",
                                         files={"file": ("utterance.wav", wav, "audio/wav")},
                                         data={"model": "whisper-1"})
            response.raise_for_status()
            seconds.append(time.monotonic() - started)
    return seconds


def _p(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")
