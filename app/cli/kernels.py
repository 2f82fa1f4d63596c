"""``amanuensis kernels verify``: prove the mel kernel's arithmetic on this machine.

Builds the host library of the kernel if needed, then on the given audio (default: every file in
``../shared/speech``) plus synthetic edge cases checks that the host-compiled kernel equals the
golden model bit for bit, and that the whole NPU path (host + kernel) matches WhisperX's float
features. Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SPEECH = REPO_ROOT / ".." / "shared" / "speech"
SPEECH_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def decode_16k_mono(path: Path) -> np.ndarray:
    """Decode any audio file with PyAV into float32 mono 16 kHz samples."""
    import av

    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
        chunks = []
        for frame in container.decode(audio=0):
            chunks.extend(resampled.to_ndarray().ravel() for resampled in resampler.resample(frame))
        chunks.extend(resampled.to_ndarray().ravel() for resampled in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def speech_files(root: Path = SHARED_SPEECH) -> list[Path]:
    """Every audio file under the shared speech folder, sorted; empty if it is absent."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in SPEECH_SUFFIXES)


ERROR_BOUNDS = {"mean_abs_err": 0.001, "p999_abs_err": 0.01, "max_abs_err": 0.05}


def synthetic_signals(frames: int, seed: int = 1234) -> dict[str, np.ndarray]:
    """int16 padded signals of ``frames`` frames each: the cases a fixed-point FFT gets wrong."""
    from npu.mel import host

    rng = np.random.default_rng(seed)
    size = host.call_samples(frames)
    n = np.arange(size)
    impulses = np.zeros(size, np.int16)
    impulses[rng.integers(0, size, max(1, frames // 6))] = rng.choice([-32768, 32767, 1000, -1],
                                                                       max(1, frames // 6))
    sweep = 32767 * np.sin(2 * np.pi * (n * 40 / 16_000) * (1 + n / size))
    return {
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

    from npu.mel import golden, host

    audio = decode_16k_mono(path)
    exact = True

    def checked_kernel(samples, count):
        nonlocal exact
        out = kernel(samples, count)
        exact &= bool(np.array_equal(out, golden.kernel_call(samples, count, n_mels)))
        return out

    padding = whisperx.audio.N_SAMPLES
    ours = host.log_mel(audio, n_mels, padding, 3000, checked_kernel)
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


def _print_table(rows: list[dict]) -> None:
    print(f"{'input':<24} {'frames':>7} {'bit_exact':>9} {'mean_abs_err':>13} {'max_abs_err':>12}")
    for row in rows:
        mean = f"{row['mean_abs_err']:.6f}" if "mean_abs_err" in row else "-"
        peak = f"{row['max_abs_err']:.6f}" if "max_abs_err" in row else "-"
        print(f"{row['input']:<24} {row['frames']:>7} {str(row['bit_exact']).lower():>9} "
              f"{mean:>13} {peak:>12}")


def _verify_command(args: argparse.Namespace) -> int:
    files = [Path(p) for p in args.audio] if args.audio else speech_files()
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        print(f"audio file(s) not found: {', '.join(missing)}")
        return 2
    if not files:
        print(f"no audio given and {SHARED_SPEECH} is absent: accuracy not checked")
    rows, summary = verify(args.frames, files, args.n_mels)
    _print_table(rows)
    print(json.dumps(summary))
    return 0 if summary["bit_exact"] and (summary["within_bounds"] or not files) else 1


def register(commands, bench) -> None:
    kernels = commands.add_parser("kernels", help="build and verify the NPU kernels")
    actions = kernels.add_subparsers(dest="kernels_command", required=True, metavar="ACTION")
    check = actions.add_parser("verify", help="host kernel == golden model; accuracy vs WhisperX")
    check.add_argument("--frames", type=int, default=20_000,
                       help="synthetic frames compared bit for bit (default 20000)")
    check.add_argument("--audio", nargs="+", default=None, metavar="FILE",
                       help="audio files to check (default: every file in ../shared/speech)")
    check.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    check.set_defaults(handler=_verify_command)
