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
    return f"""\
module {{
  aie.device({npu.device}) {{
    func.func private @gelu_object({obj}, {obj})
    %shim = aie.tile(0, 0)
    %core_tile = aie.tile(0, 2)
    aie.objectfifo @values_in(%shim, {{%core_tile}}, {FIFO_DEPTH} : i32) : !aie.objectfifo<{obj}>
    aie.objectfifo @values_out(%core_tile, {{%shim}}, {FIFO_DEPTH} : i32) : !aie.objectfifo<{obj}>
    %core = aie.core(%core_tile) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %forever = arith.constant 9223372036854775807 : index
      %objects = arith.constant {objects} : index
      scf.for %call = %c0 to %forever step %c1 {{
        scf.for %object = %c0 to %objects step %c1 {{
          %in_view = aie.objectfifo.acquire @values_in(Consume, 1) : !aie.objectfifosubview<{obj}>
          %in = aie.objectfifo.subview.access %in_view[0] : !aie.objectfifosubview<{obj}> -> {obj}
          %out_view = aie.objectfifo.acquire @values_out(Produce, 1) : !aie.objectfifosubview<{obj}>
          %out = aie.objectfifo.subview.access %out_view[0] : !aie.objectfifosubview<{obj}> -> {obj}
          func.call @gelu_object(%in, %out) : ({obj}, {obj}) -> ()
          aie.objectfifo.release @values_in(Consume, 1)
          aie.objectfifo.release @values_out(Produce, 1)
        }}
      }}
      aie.end
    }} {{link_with = "gelu_kernel.o", stack_size = {config["CORE_STACK_BYTES"]} : i32}}
    aiex.runtime_sequence(%values: {call}, %results: {call}) {{
      aiex.npu.dma_memcpy_nd(%results[0, 0, 0, 0][1, 1, {objects}, {elements}][0, 0, {elements}, 1]) {{id = 0 : i64, metadata = @values_out, issue_token = true}} : {call}
      aiex.npu.dma_memcpy_nd(%values[0, 0, 0, 0][1, 1, {objects}, {elements}][0, 0, {elements}, 1]) {{id = 1 : i64, metadata = @values_in}} : {call}
      aiex.npu.dma_wait {{symbol = @values_out}}
    }}
  }}
}}
"""


def main(argv: list[str] | None = None) -> int:
    return op_design_main("gelu", __doc__.splitlines()[0], tables.gelu_config(), memory_budget,
                          design_mlir, argv)


if __name__ == "__main__":
    sys.exit(main())
