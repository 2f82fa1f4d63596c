"""Design generator for the attention kernel: prints the MLIR (mlir-aie, pinned in
kernels/README.md) of one head over ``ATTN_MAX_KEYS`` queries and keys, for one NPU generation
(``--target npu1`` AIE2 or ``npu2`` AIE2P).

Tiling: Q in tiles of ``ATTN_QUERY_ROWS`` rows; for each tile the shim streams K^T and V in
blocks of ``ATTN_KEY_BLOCK`` keys (K^T read with a row stride, so each block arrives as
[HEAD_DIM][KEY_BLOCK]); the core keeps the tile's queries, float32 accumulators and softmax
state in its own memory (online softmax), and streams the output tile back. Four double-buffered
FIFOs (Q, K^T, V, out) plus the kernel's static state and stack must fit the tile's data memory,
its code the program memory: checked here (``npu.kernel_budget``), or the design is refused.
The host pads Q to whole tiles and K/V to whole blocks with zeros; the last block's valid key
count is a constant of the design. The runtime sequence moves the tiles in groups of at most
``TILES_PER_GROUP`` (one buffer-descriptor repeat each), waiting for each group's output.

    python kernels/attention/design.py --target npu2 --kernel-object kernels/build/host/attention.o
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from npu.kernel_budget import NpuTarget, TileBudget, op_design_main, tile_budget
from npu.ops import tables

BF16_BYTES = 2
FIFO_DEPTH = 2
TILES_PER_GROUP = 32


def fifo_bytes(config: dict) -> int:
    """Q, K^T, V and out FIFOs, double-buffered, on the core tile."""
    tile = config["QUERY_ROWS"] * config["HEAD_DIM"]
    block = config["KEY_BLOCK"] * config["HEAD_DIM"]
    return FIFO_DEPTH * BF16_BYTES * (2 * tile + 2 * block)


def memory_budget(npu: NpuTarget, kernel_object: Path, config: dict) -> TileBudget:
    return tile_budget(npu, fifo_bytes(config), kernel_object, config["CORE_STACK_BYTES"])


def _acquire(fifo: str, port: str, memref: str, name: str, indent: int = 10) -> str:
    view = f"!aie.objectfifosubview<{memref}>"
    return (f"%{name}_view = aie.objectfifo.acquire @{fifo}({port}, 1) : {view}\n"
            f"{' ' * indent}%{name} = aie.objectfifo.subview.access %{name}_view[0] : {view} "
            f"-> {memref}")


def design_mlir(npu: NpuTarget, config: dict) -> str:
    dim, block = config["HEAD_DIM"], config["KEY_BLOCK"]
    rows_padded, keys_padded = tables.attention_padded_sizes()
    tiles, blocks = rows_padded // config["QUERY_ROWS"], keys_padded // block
    last_keys = config["MAX_KEYS"] - (blocks - 1) * block
    tile_t = f"memref<{config['QUERY_ROWS'] * dim}xbf16>"
    block_t = f"memref<{block * dim}xbf16>"
    q_t, kt_t = f"memref<{rows_padded * dim}xbf16>", f"memref<{dim * keys_padded}xbf16>"
    tile_elems = config["QUERY_ROWS"] * dim
    sequence = []
    for first in range(0, tiles, TILES_PER_GROUP):
        count = min(TILES_PER_GROUP, tiles - first)
        offset = first * tile_elems
        sequence += [
            f"aiex.npu.dma_memcpy_nd(%out[0, 0, 0, {offset}][1, 1, {count}, {tile_elems}][0, 0, {tile_elems}, 1]) {{id = 0 : i64, metadata = @out_tiles, issue_token = true}} : {q_t}",
            f"aiex.npu.dma_memcpy_nd(%q[0, 0, 0, {offset}][1, 1, {count}, {tile_elems}][0, 0, {tile_elems}, 1]) {{id = 1 : i64, metadata = @q_tiles}} : {q_t}",
            f"aiex.npu.dma_memcpy_nd(%kt[0, 0, 0, 0][{count}, {blocks}, {dim}, {block}][0, {block}, {keys_padded}, 1]) {{id = 2 : i64, metadata = @kt_blocks}} : {kt_t}",
            f"aiex.npu.dma_memcpy_nd(%v[0, 0, 0, 0][1, {count}, {blocks}, {block * dim}][0, 0, {block * dim}, 1]) {{id = 3 : i64, metadata = @v_blocks}} : {kt_t}",
            "aiex.npu.dma_wait {symbol = @out_tiles}",
        ]
    steps = "\n      ".join(sequence)
    return f"""\
module {{
  aie.device({npu.device}) {{
    func.func private @attention_start({tile_t})
    func.func private @attention_block({block_t}, {block_t}, i32)
    func.func private @attention_finish({tile_t})
    %shim = aie.tile(0, 0)
    %core_tile = aie.tile(0, 2)
    aie.objectfifo @q_tiles(%shim, {{%core_tile}}, {FIFO_DEPTH} : i32) : !aie.objectfifo<{tile_t}>
    aie.objectfifo @kt_blocks(%shim, {{%core_tile}}, {FIFO_DEPTH} : i32) : !aie.objectfifo<{block_t}>
    aie.objectfifo @v_blocks(%shim, {{%core_tile}}, {FIFO_DEPTH} : i32) : !aie.objectfifo<{block_t}>
    aie.objectfifo @out_tiles(%core_tile, {{%shim}}, {FIFO_DEPTH} : i32) : !aie.objectfifo<{tile_t}>
    %core = aie.core(%core_tile) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %forever = arith.constant 9223372036854775807 : index
      %tiles = arith.constant {tiles} : index
      %full_blocks = arith.constant {blocks - 1} : index
      %block_keys = arith.constant {block} : i32
      %last_keys = arith.constant {last_keys} : i32
      scf.for %call = %c0 to %forever step %c1 {{
        scf.for %tile = %c0 to %tiles step %c1 {{
          {_acquire("q_tiles", "Consume", tile_t, "q")}
          func.call @attention_start(%q) : ({tile_t}) -> ()
          aie.objectfifo.release @q_tiles(Consume, 1)
          scf.for %block = %c0 to %full_blocks step %c1 {{
            {_acquire("kt_blocks", "Consume", block_t, "kt", 12)}
            {_acquire("v_blocks", "Consume", block_t, "v", 12)}
            func.call @attention_block(%kt, %v, %block_keys) : ({block_t}, {block_t}, i32) -> ()
            aie.objectfifo.release @kt_blocks(Consume, 1)
            aie.objectfifo.release @v_blocks(Consume, 1)
          }}
          {_acquire("kt_blocks", "Consume", block_t, "kt_last")}
          {_acquire("v_blocks", "Consume", block_t, "v_last")}
          func.call @attention_block(%kt_last, %v_last, %last_keys) : ({block_t}, {block_t}, i32) -> ()
          aie.objectfifo.release @kt_blocks(Consume, 1)
          aie.objectfifo.release @v_blocks(Consume, 1)
          {_acquire("out_tiles", "Produce", tile_t, "out_tile")}
          func.call @attention_finish(%out_tile) : ({tile_t}) -> ()
          aie.objectfifo.release @out_tiles(Produce, 1)
        }}
      }}
      aie.end
    }} {{link_with = "attention_kernel.o", stack_size = {config["CORE_STACK_BYTES"]} : i32}}
    aiex.runtime_sequence(%q: {q_t}, %kt: {kt_t}, %v: {kt_t}, %out: {q_t}) {{
      {steps}
    }}
  }}
}}
"""


def main(argv: list[str] | None = None) -> int:
    return op_design_main("attention", __doc__.splitlines()[0], tables.attention_config(), memory_budget,
                          design_mlir, argv)


if __name__ == "__main__":
    sys.exit(main())
