"""Where the kernels are: their sources and size headers, and the built artifacts.

The one place these paths are written; everything else (the tables generator, the host-build
loader, the NPU back-ends, the settings' default) reads them from here.
"""

from __future__ import annotations

import os
from pathlib import Path

KERNELS_DIR = (Path(__file__).parent / "kernel_sources").resolve()
"""The kernels' sources: one folder per op with its ``.cc``, size header and design generator.

In a checkout ``npu/kernel_sources`` is a link to the repository's ``kernels/``; an installed
wheel carries a copy of them there as package data (pyproject.toml), so both find them here."""

DEFAULT_KERNEL_DIR = KERNELS_DIR / "build"
"""Where ``make -C kernels`` writes the xclbins and instruction streams (``AMANUENSIS_KERNEL_DIR``
overrides it)."""



def _host_build_root() -> Path:
    if (Path(__file__).parent / "kernel_sources").is_symlink():
        return DEFAULT_KERNEL_DIR
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "amanuensis" / "kernels"


HOST_BUILD_ROOT = _host_build_root()
"""The ``BUILD`` folder of ``make -C kernels host``: ``kernels/build`` in a checkout (where
``kernel_sources`` is the link); in an installed package, whose folder may be read-only (the
image), ``$XDG_CACHE_HOME/amanuensis/kernels`` (``~/.cache`` when unset), so ``kernels verify``
and the host-backed fake NPU build there."""

HOST_BUILD_DIR = HOST_BUILD_ROOT / "host"
"""The kernels' scalar paths compiled for the host."""

MEL_CONFIG_HEADER = KERNELS_DIR / "mel" / "mel_config.h"
"""The mel kernel's sizes and formats, read by :mod:`npu.mel.tables`."""

GELU_CONFIG_HEADER = KERNELS_DIR / "gelu" / "gelu_config.h"
"""The GELU kernel's sizes, read by :mod:`npu.ops.tables`."""

ATTENTION_CONFIG_HEADER = KERNELS_DIR / "attention" / "attention_config.h"
"""The attention kernel's sizes, read by :mod:`npu.ops.tables`."""
