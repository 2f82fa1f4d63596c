"""MLIR text the kernel design generators share (mlir-aie, pinned in kernels/README.md).

The mel and GELU designs are the same shape: one shim tile streams a call's objects to one
compute tile through a double-buffered ObjectFIFO, the core calls the kernel once per object
with an input and an output buffer, and streams the results back the same way. Only the types,
names, sizes and the runtime sequence's DMA pattern differ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamingCore:
    """One kernel call per object: ``function(in, out)`` over ``objects`` objects per call."""

    device: str
    function: str
    in_fifo: str
    out_fifo: str
    in_type: str
    out_type: str
    fifo_depth: int
    objects: int
    kernel_object: str
    stack_bytes: int


def streaming_design(core: StreamingCore, runtime_sequence: str) -> str:
    """The whole module: ``core`` on tile (0, 2) fed from the shim tile (0, 0), and
    ``runtime_sequence`` (the ``aiex.runtime_sequence`` block, indented by four) after it."""
    c = core
    return f"""\
module {{
  aie.device({c.device}) {{
    func.func private @{c.function}({c.in_type}, {c.out_type})
    %shim = aie.tile(0, 0)
    %core_tile = aie.tile(0, 2)
    aie.objectfifo @{c.in_fifo}(%shim, {{%core_tile}}, {c.fifo_depth} : i32) : !aie.objectfifo<{c.in_type}>
    aie.objectfifo @{c.out_fifo}(%core_tile, {{%shim}}, {c.fifo_depth} : i32) : !aie.objectfifo<{c.out_type}>
    %core = aie.core(%core_tile) {{
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %forever = arith.constant 9223372036854775807 : index
      %objects = arith.constant {c.objects} : index
      scf.for %call = %c0 to %forever step %c1 {{
        scf.for %object = %c0 to %objects step %c1 {{
          %in_view = aie.objectfifo.acquire @{c.in_fifo}(Consume, 1) : !aie.objectfifosubview<{c.in_type}>
          %in = aie.objectfifo.subview.access %in_view[0] : !aie.objectfifosubview<{c.in_type}> -> {c.in_type}
          %out_view = aie.objectfifo.acquire @{c.out_fifo}(Produce, 1) : !aie.objectfifosubview<{c.out_type}>
          %out = aie.objectfifo.subview.access %out_view[0] : !aie.objectfifosubview<{c.out_type}> -> {c.out_type}
          func.call @{c.function}(%in, %out) : ({c.in_type}, {c.out_type}) -> ()
          aie.objectfifo.release @{c.in_fifo}(Consume, 1)
          aie.objectfifo.release @{c.out_fifo}(Produce, 1)
        }}
      }}
      aie.end
    }} {{link_with = "{c.kernel_object}", stack_size = {c.stack_bytes} : i32}}
{runtime_sequence}  }}
}}
"""
