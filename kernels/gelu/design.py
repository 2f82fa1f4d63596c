"""Design generator for the GELU kernel: prints the MLIR (mlir-aie, pinned in kernels/README.md)
for one NPU generation (``--target npu1`` AIE2 or ``npu2`` AIE2P).

One shim tile streams a call's bf16 values (``GELU_OBJECTS_PER_CALL`` objects of
``GELU_OBJECT_ELEMENTS``) to one compute tile through a double-buffered ObjectFIFO; the core
calls ``gelu_object`` per object and streams the results back the same way. Before printing it
checks the tile budget (``npu.kernel_budget``: FIFO buffers + static data + stack within data
memory, code within program memory) and refuses a design that does not fit.

    python kernels/gelu/design.py --target npu1 --kernel-object kernels/build/host/gelu.o
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from npu.kernel_budget import NpuTarget, TileBudget, op_design_main, tile_budget
from npu.kernel_mlir import StreamingCore, streaming_design
from npu.ops import tables

BF16_BYTES = 2
FIFO_DEPTH = 2


def fifo_bytes(config: dict) -> int:
    """The two double-buffered FIFOs (in, out) on the core tile."""
    return 2 * FIFO_DEPTH * config["OBJECT_ELEMENTS"] * BF16_BYTES


def memory_budget(npu: NpuTarget, kernel_object: Path, config: dict) -> TileBudget:
    return tile_budget(npu, fifo_bytes(config), kernel_object, config["CORE_STACK_BYTES"])


def design_mlir(npu: NpuTarget, config: dict) -> str:
    elements, objects = config["OBJECT_ELEMENTS"], config["OBJECTS_PER_CALL"]
    total = elements * objects
    obj, call = f"memref<{elements}xbf16>", f"memref<{total}xbf16>"
    core = StreamingCore(npu.device, "gelu_object", "values_in", "values_out", obj, obj,
                         FIFO_DEPTH, objects, "gelu_kernel.o", config["CORE_STACK_BYTES"])
    return streaming_design(core, f"""\
    aiex.runtime_sequence(%values: {call}, %results: {call}) {{
      aiex.npu.dma_memcpy_nd(%results[0, 0, 0, 0][1, 1, {objects}, {elements}][0, 0, {elements}, 1]) {{id = 0 : i64, metadata = @values_out, issue_token = true}} : {call}
      aiex.npu.dma_memcpy_nd(%values[0, 0, 0, 0][1, 1, {objects}, {elements}][0, 0, {elements}, 1]) {{id = 1 : i64, metadata = @values_in}} : {call}
      aiex.npu.dma_wait {{symbol = @values_out}}
    }}
""")


def main(argv: list[str] | None = None) -> int:
    return op_design_main("gelu", __doc__.splitlines()[0], tables.gelu_config(), memory_budget,
                          design_mlir, argv)


if __name__ == "__main__":
    sys.exit(main())
