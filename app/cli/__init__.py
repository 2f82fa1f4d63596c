"""The ``amanuensis`` command line.

Each command lives in its own module under ``app.cli`` and adds itself to the parser through a
``register(commands, bench)`` function: ``commands`` holds the top-level sub-commands, ``bench``
the ``amanuensis bench ...`` family. Modules are imported lazily per command so that ``amanuensis
doctor`` does not pay for importing WhisperX.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "bench_mel", "doctor", "kernels", "serve", "transcribe", "tiny", "bench_serve", "bench_load",
    "bench_e2e", "bench_decode", "bench_wer", "bench_encoder", "bench_stream", "worker", "jobs",
    "bench_jobs", "bench_startup",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amanuensis", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="measure against the named peers")
    bench = bench_parser.add_subparsers(dest="bench", required=True, metavar="WHAT")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"app.cli.{module_name}").register(commands, bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)

