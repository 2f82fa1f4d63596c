"""``amanuensis transcribe FILE...``: transcribe files in-process, as the service would."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = {"txt": "text", "srt": "srt", "vtt": "vtt", "json": "verbose_json"}


def register(commands, bench) -> None:
    parser = commands.add_parser("transcribe", help="transcribe audio files (settings from env)")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--format", choices=sorted(FORMATS), default="txt")
    parser.add_argument("--output", type=Path, default=None,
                        help="directory for FILE-stem.FORMAT outputs (default: stdout)")
    parser.add_argument("--language", default=None, help="spoken language (detected if absent)")
    parser.add_argument("--words", action="store_true", help="word timestamps (WhisperX's wav2vec2 aligner when "
                        "AMANUENSIS_ALIGN_MODEL is set, else Whisper's cross-attention)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from tqdm import tqdm

    from app.api.formatting import service_body, subtitles
    from app.errors import APIError
    from app.runtime import create_runtime
    from app.settings import Settings
    from app.transcription.audio import decode_audio
    from app.transcription.engine import Engine
    from app.transcription.result import model_n_mels

    settings = Settings()
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
    failures = 0
    runtime = create_runtime(settings, model_n_mels(settings))
    with runtime, Engine(settings, runtime) as engine:
        for path in args.files:
            try:
                started = time.perf_counter()
                with path.open("rb") as source:
                    audio = decode_audio(source)
                with tqdm(total=100, desc=path.name, unit="%", file=sys.stderr,
                          bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}") as bar:
                    transcription = engine.transcribe(
                        audio, language=args.language, word_timestamps=args.words,
                        progress=lambda percent: bar.update(percent - bar.n))
                    bar.update(100 - bar.n)
            except (APIError, OSError) as error:
                print(f"{path}: {getattr(error, 'message', error)}", file=sys.stderr)
                failures += 1
                continue
            if args.format == "txt":
                text = transcription.text + "\n"
            elif args.format == "json":
                text = json.dumps(service_body(
                    transcription, words=args.words, verbose=True,
                    processing_time=time.perf_counter() - started,
                    mel_backend=runtime.mel_backend_name), indent=2) + "\n"
            else:
                text = subtitles(transcription, args.format)
            if args.output:
                (args.output / f"{path.stem}.{args.format}").write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
    return 1 if failures else 0
