"""``amanuensis tiny-model DIR``: write the random-weights test models for offline use."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands, bench) -> None:
    parser = commands.add_parser(
        "tiny-model", help="write a tiny RANDOM-WEIGHTS Whisper + aligner for offline tests")
    parser.add_argument("directory", type=Path, help="where to write whisper/, aligner/, nltk_data/")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app.transcription.tiny_model import RANDOM_WEIGHTS_NOTICE, write_tiny_models

    models = write_tiny_models(args.directory, seed=args.seed)
    print(RANDOM_WEIGHTS_NOTICE)
    print("Use it with:")
    print(f"  AMANUENSIS_MODEL={models.whisper.resolve()}")
    print(f"  AMANUENSIS_ALIGN_MODEL={models.aligner.resolve()}")
    print(f"  NLTK_DATA={models.nltk_data.resolve()}")
    return 0
