"""Design generator for the mel kernel: prints the MLIR (mlir-aie, pinned in kernels/README.md)
for one NPU generation (``--target npu1``, AIE2, the default, or ``npu2``, AIE2P: the same
design on the device mlir-aie names ``npu2_1col``; both have 64 KB of tile data memory).

One shim tile streams the int16 input (the padded signal in blocks of HOP samples, each after its
gain exponent) to one compute tile through a double-buffered ObjectFIFO whose objects are
overlapping windows (MEL_FRAMES_PER_OBJECT + 2 blocks, read by the shim DMA with a stride of
FRAMES blocks), and streams the int32 log-mel frames back. The whole call (``frames_per_call`` frames) is one runtime sequence.

Before printing, it checks the core's budget against the host build of the same source, as the
GELU and attention generators do (``npu.kernel_budget.tile_budget``): the stack usage reported by
``-fstack-usage`` must fit the explicit ``stack_size``, FIFO buffers + static data (``nm`` sizes
of the object) + stack the target's tile data memory, and the code its program memory, else it
refuses.

    python kernels/mel/design.py --config mel_n80_f3000 --host-object kernels/build/host/mel_n80.o
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from npu.kernel_budget import TARGETS, DesignError, NpuTarget, TileBudget, target, tile_budget
from npu.kernel_mlir import StreamingCore, streaming_design
from npu.mel import tables

FIFO_DEPTH = 2
"""Double-buffered input and output FIFOs (also in :func:`fifo_bytes`)."""


def parse_config_name(name: str) -> tuple[int, int]:
    try:
        return tables.parse_artifact_stem(name)
    except tables.MelConfigError as error:
        raise DesignError(str(error)) from error


def fifo_bytes(n_mels: int, config: dict) -> int:
    """The double-buffered input (int16 blocks) and output (int32 log-mel) FIFOs on the core."""
    return FIFO_DEPTH * (2 * tables.object_samples(config) + 4 * config["FRAMES_PER_OBJECT"] * n_mels)


def memory_budget(n_mels: int, host_object: Path, config: dict,
                  npu: NpuTarget = TARGETS["npu1"]) -> TileBudget:
    return tile_budget(npu, fifo_bytes(n_mels, config), host_object, config["CORE_STACK_BYTES"])


def design_mlir(n_mels: int, frames_per_call: int, config: dict,
                npu: NpuTarget = TARGETS["npu1"]) -> str:
    frames = config["FRAMES_PER_OBJECT"]
    if frames_per_call % frames:
        raise DesignError(f"frames per call {frames_per_call} is not a multiple of {frames}")
    objects = frames_per_call // frames
    in_object, words = tables.object_samples(config), tables.block_words(config)
    out_object = frames * n_mels
    signal = (frames_per_call + 2) * words
    in_type, out_type = f"memref<{in_object}xi16>", f"memref<{out_object}xi32>"
    core = StreamingCore(npu.device, "mel_object", "samples", "mels", in_type, out_type,
                         FIFO_DEPTH, objects, "mel_kernel.o", config["CORE_STACK_BYTES"])
    return streaming_design(core, f"""\
    aiex.runtime_sequence(%signal: memref<{signal}xi16>, %features: memref<{frames_per_call * n_mels}xi32>) {{
      aiex.npu.dma_memcpy_nd(%features[0, 0, 0, 0][1, 1, {objects}, {out_object}][0, 0, {out_object}, 1]) {{id = 0 : i64, metadata = @mels, issue_token = true}} : memref<{frames_per_call * n_mels}xi32>
      aiex.npu.dma_memcpy_nd(%signal[0, 0, 0, 0][1, 1, {objects}, {in_object}][0, 0, {frames * words}, 1]) {{id = 1 : i64, metadata = @samples}} : memref<{signal}xi16>
      aiex.npu.dma_wait {{symbol = @mels}}
    }}
""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="mel_n<M>_f<F>")
    parser.add_argument("--host-object", type=Path, required=True,
                        help="host build of the kernel for the same n_mels (with its .su file)")
    parser.add_argument("--target", default="npu1", help="npu1 (AIE2, default) or npu2 (AIE2P)")
    parser.add_argument("--budget", action="store_true", help="print the budget as JSON only")
    args = parser.parse_args(argv)
    config = tables.read_config()
    try:
        npu = target(args.target)
        n_mels, frames_per_call = parse_config_name(args.config)
        budget = memory_budget(n_mels, args.host_object, config, npu)
        text = design_mlir(n_mels, frames_per_call, config, npu)
    except DesignError as error:
        print(f"design.py: {error}", file=sys.stderr)
        return 1
    summary = budget.as_dict()
    if args.budget:
        print(json.dumps(summary))
    else:
        print(f"// {args.config} on {npu.name}: tile memory {json.dumps(summary)}", file=sys.stderr)
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
