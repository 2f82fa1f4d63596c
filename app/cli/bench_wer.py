"""``amanuensis bench wer [DIR]``: word error rate and speed of the service's engine against bare
faster-whisper, on the same files in the same run.

Both run the model the service is configured with (``AMANUENSIS_*``), on the same decoded audio,
file by file and alternating which goes first; faster-whisper gets the engine's own decoding
options (beam size, temperatures, thresholds, prompt conditioning) and the same CPU threads.
Speech comes from the shared speech folder by default, or from ``DIR``: audio files with a
``.txt`` reference beside each. One row per file, then a JSON line: each side's corpus WER and
x-realtime, ``wer_delta_points`` (engine - faster-whisper) and ``speed_ratio`` (engine x-realtime
over faster-whisper's).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import time
from pathlib import Path


def register(commands, bench) -> None:
    parser = bench.add_parser("wer", help="WER and x-realtime: the engine vs bare faster-whisper")
    parser.add_argument("folder", nargs="?", type=Path, default=None, help=(
        "audio files with a .txt reference each (default: the shared speech)"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.set_defaults(handler=run)


def faster_whisper_options(options, language: str | None) -> dict:
    """The engine's decoding options as keyword arguments of faster-whisper's ``transcribe``
    (options WhisperX leaves unset keep faster-whisper's defaults)."""
    from faster_whisper import WhisperModel

    accepted = inspect.signature(WhisperModel.transcribe).parameters
    chosen = {name: value for name, value in dataclasses.asdict(options).items()
              if name in accepted and value is not None}
    return {**chosen, "language": language, "vad_filter": False}


def run(args: argparse.Namespace) -> int:
    from faster_whisper import WhisperModel

    from app.evaluation.corpus import folder_utterances, shared_utterances
    from app.evaluation.wer import word_error_rate
    from app.runtime import create_runtime
    from app.settings import Settings
    from app.transcription.audio import decode_audio, duration_seconds
    from app.transcription.engine import Engine
    from app.transcription.result import model_n_mels

    utterances = folder_utterances(args.folder) if args.folder else shared_utterances()
    utterances = utterances[:args.limit] if args.limit else utterances
    if not utterances:
        raise SystemExit(f"no audio with references in {args.folder or 'the shared speech'}")
    settings = Settings()
    runtime = create_runtime(settings, model_n_mels(settings))
    engine = Engine(settings, runtime)
    engine.warm_up()
    bare = WhisperModel(settings.model_choice.source, device="cpu",
                        compute_type=settings.compute_type, cpu_threads=settings.cpu_threads)
    language = "en" if engine.english_only else settings.language
    options = faster_whisper_options(engine.pipeline.options, language)

    def transcribe_bare(audio) -> str:
        segments, _ = bare.transcribe(audio, **options)
        return "".join(segment.text for segment in segments).strip()

    sides = {"engine": lambda audio: engine.transcribe(audio).text,
             "faster_whisper": transcribe_bare}

    texts: dict[str, list[str]] = {"engine": [], "faster_whisper": []}
    seconds = {"engine": 0.0, "faster_whisper": 0.0}
    audio_seconds = 0.0
    for index, utterance in enumerate(utterances):
        with utterance.audio.open("rb") as source:
            audio = decode_audio(source)
        audio_seconds += duration_seconds(audio)
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for side in order:
            started = time.perf_counter()
            texts[side].append(sides[side](audio))
            seconds[side] += time.perf_counter() - started
        row = {side: round(word_error_rate([utterance.reference], [texts[side][-1]]), 4)
               for side in sides}
        print(f"{utterance.name}: {duration_seconds(audio):.1f} s, WER engine {row['engine']}, "
              f"faster-whisper {row['faster_whisper']}")
    mel_backend = runtime.mel_backend_name
    runtime.close()
    references = [utterance.reference for utterance in utterances]
    wer = {side: word_error_rate(references, texts[side]) for side in texts}
    x_realtime = {side: audio_seconds / seconds[side] for side in seconds}
    print(json.dumps({
        "files": len(utterances),
        "audio_seconds": round(audio_seconds, 2),
        "model": settings.model_choice.id,
        "mel_backend": mel_backend,
        "beam_size": options.get("beam_size"),
        "cpu_threads": settings.cpu_threads,
        "engine_wer": round(wer["engine"], 4),
        "faster_whisper_wer": round(wer["faster_whisper"], 4),
        "wer_delta_points": round(100 * (wer["engine"] - wer["faster_whisper"]), 2),
        "engine_x_realtime": round(x_realtime["engine"], 2),
        "faster_whisper_x_realtime": round(x_realtime["faster_whisper"], 2),
        "speed_ratio": round(x_realtime["engine"] / x_realtime["faster_whisper"], 3),
    }))
    return 0
