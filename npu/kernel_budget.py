"""What the design generators check before they print MLIR: the NPU generations they target and
each compute tile's data-memory and program-memory budget, in plain Python (no mlir-aie needed).

Data memory: the ObjectFIFO buffers the design places on the core tile, the kernel's static data
(``nm -S`` of its object: data, bss, read-only) and the core's explicit ``stack_size`` (which
must hold the kernel's stack use from ``-fstack-usage``). Program memory: the ``.text`` bytes of
the kernel's object, read from its ELF section headers. The AIE object (Peano) gives the real
numbers; where only the host build exists it stands in for them (same source, x86-64 code), and
the budget says which object it measured.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

_STATIC_SYMBOL_TYPES = set("bBdDrR")


class DesignError(RuntimeError):
    """The design does not fit the tile or the configuration is invalid."""


@dataclass(frozen=True)
class NpuTarget:
    """One NPU generation as mlir-aie names it."""

    name: str
    device: str
    """``aie.device(...)`` of a one-column design."""
    arch: str
    peano_target: str
    tile_data_bytes: int
    tile_program_bytes: int


TARGETS = {
    "npu1": NpuTarget("npu1", "npu1_1col", "AIE2", "aie2-none-unknown-elf", 65_536, 16_384),
    "npu2": NpuTarget("npu2", "npu2_1col", "AIE2P", "aie2p-none-unknown-elf", 65_536, 16_384),
}
"""Phoenix / Hawk Point (AIE2, XDNA) and Strix / Krackan (AIE2P, XDNA2): 64 KB of data memory
and 16 KB of program memory per compute tile on both."""


def target(name: str) -> NpuTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise DesignError(f"unknown NPU target {name!r}; expected one of {sorted(TARGETS)}")


@dataclass(frozen=True)
class TileBudget:
    """Compute-tile memory of one design on one target, in bytes."""

    target: str
    fifo_buffers: int
    static_data: int
    stack: int
    stack_used: int
    data_limit: int
    program: int
    program_limit: int
    measured_object: str

    @property
    def data_total(self) -> int:
        return self.fifo_buffers + self.static_data + self.stack

    def as_dict(self) -> dict:
        return {**asdict(self), "data_total": self.data_total}


def static_data_bytes(kernel_object: Path) -> int:
    """Sum of the object's data, bss and read-only symbol sizes (``nm -S``)."""
    listing = subprocess.run(["nm", "-S", "--defined-only", str(kernel_object)],
                             capture_output=True, text=True, check=True).stdout
    total = 0
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in _STATIC_SYMBOL_TYPES:
            total += int(parts[1], 16)
    return total


def stack_bytes_used(stack_usage_file: Path) -> int:
    """Upper bound of the kernel's stack: every function of the ``-fstack-usage`` report summed
    (as if all were on one call chain); refuses dynamic stack use."""
    total = 0
    for line in stack_usage_file.read_text().splitlines():
        _, size, kind = line.rsplit("\t", 2)
        if kind.strip() != "static":
            raise DesignError(f"kernel uses a {kind.strip()} stack: {line}")
        total += int(size)
    return total


def text_bytes(kernel_object: Path) -> int:
    """Bytes of every executable (``SHF_EXECINSTR``) section of an ELF object, 32 or 64 bit."""
    data = kernel_object.read_bytes()
    if data[:4] != b"\x7fELF":
        raise DesignError(f"{kernel_object} is not an ELF object")
    is_64, endian = data[4] == 2, "<" if data[5] == 1 else ">"
    if is_64:
        offset, entry_size, count = struct.unpack_from(f"{endian}Q10xHH", data, 0x28)
        layout, flags_at, size_at = f"{endian}IIQQQQ", 2, 5
    else:
        offset, entry_size, count = struct.unpack_from(f"{endian}I10xHH", data, 0x20)
        layout, flags_at, size_at = f"{endian}IIIIII", 2, 5
    total = 0
    for index in range(count):
        fields = struct.unpack_from(layout, data, offset + index * entry_size)
        if fields[flags_at] & 0x4:  # SHF_EXECINSTR
            total += fields[size_at]
    return total


def tile_budget(npu: NpuTarget, fifo_buffers: int, kernel_object: Path, stack: int) -> TileBudget:
    """The budget of a design whose core runs ``kernel_object``; raises :class:`DesignError`
    when the stack use exceeds ``stack``, data memory exceeds the tile's, or code exceeds its
    program memory. ``kernel_object`` has its ``-fstack-usage`` report beside it (``.su``)."""
    budget = TileBudget(
        target=npu.name, fifo_buffers=fifo_buffers, static_data=static_data_bytes(kernel_object),
        stack=stack, stack_used=stack_bytes_used(kernel_object.with_suffix(".su")),
        data_limit=npu.tile_data_bytes, program=text_bytes(kernel_object),
        program_limit=npu.tile_program_bytes, measured_object=kernel_object.name)
    if budget.stack_used > budget.stack:
        raise DesignError(f"kernel stack use {budget.stack_used} B exceeds the core's "
                          f"stack_size {budget.stack} B")
    if budget.data_total > budget.data_limit:
        raise DesignError(f"design needs {budget.data_total} B of tile data memory, over the "
                          f"{budget.data_limit} B of {npu.name}: {budget.as_dict()}")
    if budget.program > budget.program_limit:
        raise DesignError(f"kernel code is {budget.program} B, over the {budget.program_limit} B "
                          f"program memory of {npu.name}")
    return budget


def op_design_main(op: str, description: str, config: dict,
                   memory_budget: Callable[[NpuTarget, Path, dict], TileBudget],
                   design_mlir: Callable[[NpuTarget, dict], str],
                   argv: list[str] | None = None) -> int:
    """The command line of an encoder op's design generator (``kernels/<op>/design.py``):
    check the budget for ``--target`` with the measured ``--kernel-object``, then print the MLIR
    (or, with ``--budget``, the budget as JSON); 1 with the reason when the design is refused."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--target", required=True, help="npu1 (AIE2) or npu2 (AIE2P)")
    parser.add_argument("--kernel-object", type=Path, required=True,
                        help="the kernel's object (AIE build, or the host build standing in), "
                             "with its .su stack report beside it")
    parser.add_argument("--budget", action="store_true", help="print the budget as JSON only")
    args = parser.parse_args(argv)
    try:
        npu = target(args.target)
        budget = memory_budget(npu, args.kernel_object, config)
        text = design_mlir(npu, config)
    except DesignError as error:
        print(f"{op} design.py: {error}", file=sys.stderr)
        return 1
    if args.budget:
        print(json.dumps(budget.as_dict()))
    else:
        print(f"// {op} on {npu.name}: tile memory {json.dumps(budget.as_dict())}", file=sys.stderr)
        print(text, end="")
    return 0
