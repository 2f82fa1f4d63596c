"""Reads the kernels' size headers: one ``#define PREFIX_NAME value`` per line, integers or
comma-separated integer lists. The one parser of those headers (mel, GELU, attention)."""

from __future__ import annotations

import re
from pathlib import Path


class KernelConfigError(RuntimeError):
    """A kernel header is missing, malformed, or disagrees with the Python side."""


def read_defines(path: Path, prefix: str) -> dict[str, int | tuple[int, ...]]:
    """``{NAME: value}`` for every ``#define <prefix>_NAME value`` line of ``path``."""
    if not path.is_file():
        raise KernelConfigError(f"kernel config header not found: {path}")
    pattern = re.compile(rf"^#define\s+{prefix}_(\w+)\s+(.+?)\s*(?://.*)?$")
    values: dict[str, int | tuple[int, ...]] = {}
    for line in path.read_text().splitlines():
        match = pattern.match(line.strip())
        if not match:
            continue
        raw = match.group(2).strip("() ")
        try:
            numbers = tuple(int(part) for part in raw.split(","))
        except ValueError:
            raise KernelConfigError(f"{path}: {prefix}_{match.group(1)} is not an integer: {raw!r}")
        values[match.group(1)] = numbers if len(numbers) > 1 else numbers[0]
    return values
