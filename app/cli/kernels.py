"""``amanuensis kernels verify``: prove the kernels' arithmetic on this machine.

Builds the host libraries of the kernels if needed. Mel: on the given audio (default: every file
in ``../shared/speech``) plus synthetic edge cases, checks that the host-compiled kernel equals
the golden model bit for bit, and that the whole NPU path (host + kernel) matches WhisperX's
float features. GELU: every bf16 value, host build against golden model and against exact-erf
GELU. Attention: random and peaked heads of Whisper's size, host build against golden model and
against float64 attention. Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from app.evaluation.corpus import SHARED_SPEECH_DIR, speech_files
from npu.audio_spec import HOP_LENGTH, N_FRAMES, SAMPLE_RATE

ERROR_BOUNDS = {"mean_abs_err": 0.001, "p999_abs_err": 0.01, "max_abs_err": 0.05}


def synthetic_signals(frames: int, seed: int = 1234) -> dict[str, np.ndarray]:
    """Kernel inputs of ``frames`` frames each: the cases a fixed-point FFT gets wrong, every
    block at gain 0, and the same random samples with random block gains (in and beyond the
    range the kernel clamps to)."""
    from npu.mel import host, tables

    rng = np.random.default_rng(seed)
    blocks = tables.input_blocks(frames)
    size = blocks * HOP_LENGTH
    n = np.arange(size)
    impulses = np.zeros(size, np.int16)
    impulses[rng.integers(0, size, max(1, frames // 6))] = rng.choice([-32768, 32767, 1000, -1],
                                                                       max(1, frames // 6))
    sweep = 32767 * np.sin(2 * np.pi * (n * 40 / SAMPLE_RATE) * (1 + n / size))
    samples = {
        "random_full_scale": rng.integers(-32768, 32768, size).astype(np.int16),
        "random_quiet": rng.integers(-4, 5, size).astype(np.int16),
        "gaussian": np.clip(rng.standard_normal(size) * 3000, -32768, 32767).astype(np.int16),
        "silence": np.zeros(size, np.int16),
        "dc_max": np.full(size, 32767, np.int16),
        "dc_min": np.full(size, -32768, np.int16),
        "clipped_square": np.where((n // 37) % 2, 32767, -32768).astype(np.int16),
        "full_scale_sweep": sweep.astype(np.int16),
        "impulses": impulses,
        "lsb_toggle": np.where(n % 2, 1, -1).astype(np.int16),
    }
    signals = {name: host.kernel_input(x, np.zeros(blocks, np.int16)) for name, x in samples.items()}
    signals["random_block_gains"] = host.kernel_input(samples["random_full_scale"],
                                                      rng.integers(-12, 21, blocks))
    return signals


def _bit_exact_rows(kernel, n_mels: int, frames: int) -> list[dict]:
    from npu.mel import golden

    per_signal = max(1, frames // 10)
    rows = []
    for name, samples in synthetic_signals(per_signal).items():
        same = np.array_equal(kernel(samples, per_signal),
                              golden.kernel_call(samples, per_signal, n_mels))
        rows.append({"input": name, "frames": per_signal, "bit_exact": same})
    return rows


def _audio_row(path: Path, kernel, n_mels: int) -> tuple[dict, np.ndarray]:
    """Bit-exactness of every call's buffer, and the error of the whole path vs WhisperX."""
    import whisperx.audio

    from app.transcription.audio import decode_file
    from npu.mel import golden, host

    audio = decode_file(path)
    exact = True

    def checked_kernel(samples, count):
        nonlocal exact
        out = kernel(samples, count)
        exact &= bool(np.array_equal(out, golden.kernel_call(samples, count, n_mels)))
        return out

    padding = whisperx.audio.N_SAMPLES
    ours = host.log_mel(audio, n_mels, padding, N_FRAMES, checked_kernel)
    reference = whisperx.audio.log_mel_spectrogram(audio, n_mels, padding=padding).numpy()
    error = np.abs(ours - reference).ravel()
    row = {"input": path.name, "frames": ours.shape[1], "bit_exact": exact,
           "mean_abs_err": float(error.mean()), "max_abs_err": float(error.max())}
    return row, error


def verify(frames: int, audio_files: list[Path], n_mels: int = 80) -> tuple[list[dict], dict]:
    from npu.kernel_lib import host_kernel

    kernel = host_kernel(n_mels)
    rows = _bit_exact_rows(kernel, n_mels, frames)
    errors = []
    for path in audio_files:
        row, error = _audio_row(path, kernel, n_mels)
        rows.append(row)
        errors.append(error)
    error = np.concatenate(errors) if errors else np.zeros(0)
    summary = {
        "n_mels": n_mels,
        "frames": int(sum(row["frames"] for row in rows)),
        "audio_files": len(audio_files),
        "bit_exact": all(row["bit_exact"] for row in rows),
        "mean_abs_err": float(error.mean()) if error.size else None,
        "p999_abs_err": float(np.quantile(error, 0.999)) if error.size else None,
        "max_abs_err": float(error.max()) if error.size else None,
    }
    summary["within_bounds"] = bool(error.size) and all(
        summary[key] <= bound for key, bound in ERROR_BOUNDS.items())
    return rows, summary


def _gelu_rows() -> tuple[list[dict], dict]:
    import scipy.special

    from npu.kernel_lib import host_gelu
    from npu.ops import golden

    bits = np.arange(1 << 16, dtype=np.uint16)
    out = host_gelu()(bits)
    x = golden.from_bf16(bits)
    finite = np.isfinite(x)
    exact = 0.5 * x[finite].astype(np.float64) * (1 + scipy.special.erf(x[finite] / np.sqrt(2.0)))
    error = float(np.abs(golden.from_bf16(out)[finite] - exact).max())
    row = {"input": "gelu_every_bf16", "frames": bits.size,
           "bit_exact": bool(np.array_equal(out, golden.gelu(bits))), "max_abs_err": error}
    return [row], {"values": bits.size, "bit_exact": row["bit_exact"], "max_abs_err": error,
                   "bound": golden.GELU_MAX_ABS_ERR,
                   "within_bounds": error <= golden.GELU_MAX_ABS_ERR}


def _attention_rows(heads: int, seed: int = 5) -> tuple[list[dict], dict]:
    from npu.kernel_lib import host_attention
    from npu.ops import golden, tables

    config = tables.attention_config()
    shape = (config["MAX_KEYS"], config["HEAD_DIM"])
    rng = np.random.default_rng(seed)
    rows, worst = [], 0.0
    for head in range(heads):
        scale = 1.0 if head % 2 == 0 else 4.0  # even heads: spread softmax; odd: peaked
        q, k, v = (golden.to_bf16((rng.standard_normal(shape) * scale).astype(np.float32))
                   for _ in range(3))
        out = host_attention()(q, k, v)
        qf, kf, vf = (golden.from_bf16(a).astype(np.float64) for a in (q, k, v))
        scores = qf @ kf.T / np.sqrt(shape[1])
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        exact = weights / weights.sum(axis=1, keepdims=True) @ vf
        error = float(np.abs(golden.from_bf16(out) - exact).max() / np.abs(vf).max())
        worst = max(worst, error)
        rows.append({"input": f"attention_head{head}_x{scale:g}", "frames": shape[0],
                     "bit_exact": bool(np.array_equal(out, golden.attention(q, k, v))),
                     "max_err_over_max_v": error})
    bound = golden.ATTENTION_MAX_ERR_OVER_MAX_V
    return rows, {"heads": heads, "queries": shape[0], "keys": shape[0],
                  "bit_exact": all(row["bit_exact"] for row in rows),
                  "max_err_over_max_v": worst, "bound": bound, "within_bounds": worst <= bound}


def verify_ops(heads: int) -> tuple[list[dict], dict]:
    """Rows and the summary entries of the GELU and attention kernels."""
    gelu_rows, gelu = _gelu_rows()
    attention_rows, attention = _attention_rows(heads)
    return gelu_rows + attention_rows, {"gelu": gelu, "attention": attention}


def _print_table(rows: list[dict]) -> None:
    print(f"{'input':<24} {'frames':>7} {'bit_exact':>9} {'mean_abs_err':>13} {'max_abs_err':>12}")
    for row in rows:
        mean = f"{row['mean_abs_err']:.6f}" if "mean_abs_err" in row else "-"
        peak = row.get("max_abs_err", row.get("max_err_over_max_v"))
        peak = f"{peak:.6f}" if peak is not None else "-"
        print(f"{row['input']:<24} {row['frames']:>7} {str(row['bit_exact']).lower():>9} "
              f"{mean:>13} {peak:>12}")


def _verify_command(args: argparse.Namespace) -> int:
    files = [Path(p) for p in args.audio] if args.audio else speech_files()
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        print(f"audio file(s) not found: {', '.join(missing)}")
        return 2
    if not files:
        print(f"no audio given and {SHARED_SPEECH_DIR} is absent: accuracy not checked")
    rows, summary = verify(args.frames, files, args.n_mels)
    op_rows, ops = verify_ops(args.heads)
    _print_table(rows + op_rows)
    summary.update(ops)
    ops_ok = all(op["bit_exact"] and op["within_bounds"] for op in ops.values())
    print(json.dumps(summary))
    return 0 if summary["bit_exact"] and ops_ok and (summary["within_bounds"] or not files) else 1


def register(commands, bench) -> None:
    kernels = commands.add_parser("kernels", help="build and verify the NPU kernels")
    actions = kernels.add_subparsers(dest="kernels_command", required=True, metavar="ACTION")
    check = actions.add_parser("verify", help="host kernels == golden models; accuracy vs "
                               "WhisperX, exact GELU and float64 attention")
    check.add_argument("--frames", type=int, default=20_000,
                       help="synthetic frames compared bit for bit (default 20000)")
    check.add_argument("--audio", nargs="+", default=None, metavar="FILE",
                       help="audio files to check (default: every file in ../shared/speech)")
    check.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    check.add_argument("--heads", type=int, default=4,
                       help="attention heads (1500 x 1500 x 64) compared (default 4)")
    check.set_defaults(handler=_verify_command)
