"""``amanuensis bench e2e``: the service's engine end to end against the pipelines it competes
with, on the same audio in one process.

The audio is whole LJ Speech clips from the shared speech folder, end to end, until
``--seconds`` is reached, so the clips' transcripts are the reference. Contestants, all on the
same CTranslate2 model (``--model``; the service's when unset), English, batch 8, beam 5:

- ``engine``: the service's :class:`~app.transcription.engine.Engine` with the current
  ``AMANUENSIS_*`` settings (its VAD, threads and mel back-end);
- ``whisperx``: stock ``whisperx.load_model(...).transcribe`` (pyannote VAD);
- ``faster-whisper``: ``WhisperModel.transcribe``, sequential (30 s windows, no VAD);
- ``faster-whisper batched``: ``BatchedInferencePipeline.transcribe`` (Silero VAD).

Peers get ``cpu_threads`` = the machine's cores. Each repeat runs every contestant once, in
turn, after a pause (OpenMP threads spin after their work); the first round warms up. Per-row
lines give the best and median time, x-realtime and WER (Whisper's English normaliser, then
jiwer over the whole text); the final JSON line has each x-realtime and WER and the ratios
``engine / peer`` of the best times' x-realtime.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

from npu.audio_spec import SAMPLE_RATE

BATCH_SIZE = 8
BEAM_SIZE = 5
SETTLE_SECONDS = 1.0


def register(commands, bench) -> None:
    parser = bench.add_parser("e2e", help="engine vs WhisperX and faster-whisper: speed and WER")
    parser.add_argument("--seconds", type=float, default=120.0, help="audio length (default 120)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contestant")
    parser.add_argument("--model", default=None,
                        help="CTranslate2 model directory (default: the service's setting)")
    parser.set_defaults(handler=run)


def ljspeech_clips(seconds: float):
    """Whole LJ Speech clips end to end until ``seconds``: (16 kHz mono float32 audio, their
    transcripts in order)."""
    import numpy as np

    from app.evaluation.corpus import shared_utterances
    from app.transcription.audio import decode_audio

    parts, references, total = [], [], 0
    for utterance in shared_utterances():
        if utterance.audio.parent.parent.name != "ljspeech":
            continue
        with utterance.audio.open("rb") as source:
            parts.append(decode_audio(source))
        references.append(utterance.reference)
        total += parts[-1].size
        if total >= seconds * SAMPLE_RATE:
            break
    if not parts:
        raise SystemExit("no LJ Speech clips in the shared speech")
    return np.concatenate(parts), references


def contestants(model: str, threads: int) -> list[tuple[str, Callable]]:
    """(name, audio -> transcript text) for the engine and each peer, all loaded."""
    import whisperx
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from app.runtime import create_runtime
    from app.settings import Settings
    from app.transcription.engine import Engine

    settings = Settings(**{**({"model": model} if model else {}), "language": "en",
                           "batch_size": BATCH_SIZE})
    engine = Engine(settings, create_runtime(settings))
    source = settings.model_choice.source
    stock = whisperx.load_model(source, device="cpu", compute_type=settings.compute_type,
                                vad_method="pyannote", threads=threads, language="en")
    sequential = WhisperModel(source, device="cpu", compute_type=settings.compute_type,
                              cpu_threads=threads)
    batched = BatchedInferencePipeline(sequential)

    def faster_whisper_text(pipeline, **options):
        def transcribe(audio):
            segments, _ = pipeline.transcribe(audio, language="en", beam_size=BEAM_SIZE,
                                              **options)
            return "".join(segment.text for segment in segments)
        return transcribe

    return [
        ("engine", lambda audio: engine.transcribe(audio).text),
        ("whisperx", lambda audio: "".join(
            s["text"] for s in stock.transcribe(audio, batch_size=BATCH_SIZE)["segments"])),
        ("faster-whisper", faster_whisper_text(sequential)),
        ("faster-whisper batched", faster_whisper_text(batched, batch_size=BATCH_SIZE)),
    ]


def run(args: argparse.Namespace) -> int:
    from app.evaluation.wer import word_error_rate

    audio, references = ljspeech_clips(args.seconds)
    seconds = audio.size / SAMPLE_RATE
    threads = len(os.sched_getaffinity(0))
    entries = contestants(args.model, threads)
    times: dict[str, list[float]] = {name: [] for name, _ in entries}
    wer: dict[str, float] = {}
    for repeat in range(args.repeats + 1):  # round 0 warms up
        for name, transcribe in entries:
            time.sleep(SETTLE_SECONDS)
            started = time.perf_counter()
            text = transcribe(audio)
            elapsed = time.perf_counter() - started
            if repeat:
                times[name].append(elapsed)
                wer[name] = word_error_rate([" ".join(references)], [text])
                print(f"round {repeat} {name:<24} {elapsed:8.3f} s {seconds / elapsed:7.1f}x "
                      f"WER {wer[name]:.4f}", flush=True)
    x_rt = {name: seconds / min(t) for name, t in times.items()}
    for name, runs in times.items():
        print(f"{name:<24} best {min(runs):8.3f} s median {statistics.median(runs):8.3f} s "
              f"{x_rt[name]:7.1f}x WER {wer[name]:.4f}")
    key = {name: name.replace("-", "_").replace(" ", "_") for name in times}
    print(json.dumps({
        "audio_seconds": round(seconds, 3),
        "repeats": args.repeats,
        "batch_size": BATCH_SIZE,
        "beam_size": BEAM_SIZE,
        "peer_threads": threads,
        **{f"{key[name]}_x_realtime": round(x_rt[name], 2) for name in times},
        **{f"{key[name]}_wer": round(wer[name], 4) for name in times},
        **{f"engine_vs_{key[name]}": round(x_rt["engine"] / x_rt[name], 3)
           for name in times if name != "engine"},
    }))
    return 0
