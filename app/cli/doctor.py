"""``amanuensis doctor``: the service's own front-end configuration (its ``AMANUENSIS_*``
settings), what the runtime finds with it, what it chose and why, and a self-check."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from npu.backend import CPU, NPU_BATCH, NPU_FRAME

SELF_CHECK_TOLERANCE = {CPU: 1e-6, NPU_BATCH: 0.05, NPU_FRAME: 0.05}
"""Max abs difference from the CPU reference (normalised log-mel units). The NPU tiers compute in
fixed point: the design note measures ~0.016 worst case for int16 in/out, so 0.05 leaves room."""


def register(commands, bench) -> None:
    parser = commands.add_parser("doctor", help="check NPU device, XRT, kernels and the mel back-end")
    parser.add_argument("--kernel-dir", type=Path, default=None,
                        help="kernel artifacts directory (default: AMANUENSIS_KERNEL_DIR)")
    parser.add_argument("--n-mels", type=int, default=None, choices=(80, 128),
                        help="mel bands (default: what the configured model expects)")
    parser.set_defaults(handler=run)


def pyxrt_status() -> str:
    try:
        importlib.import_module("pyxrt")
    except Exception as exc:  # ImportError, or a broken XRT install raising anything else
        return f"no ({type(exc).__name__}: {exc})"
    return "yes"


def configured_n_mels(settings) -> int:
    """The configured model's mel bands; 80 (and why) when the model cannot be resolved here."""
    from app.transcription.result import model_n_mels

    try:
        return model_n_mels(settings)
    except Exception as error:  # noqa: BLE001 - doctor reports, it does not fail on this
        print(f"model {settings.model!r} not resolvable here ({error}); checking 80 mel bands")
        return 80


def self_check_audio():
    """Two seconds of a chirp over quiet noise: exercises every mel band, deterministic."""
    import numpy as np

    from npu.audio_spec import SAMPLE_RATE

    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + 1900 * t**2))
    noise = np.random.default_rng(0).standard_normal(t.size) * 0.01
    return (chirp + noise).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from app.settings import Settings
    from npu import UnifiedNPURuntime
    from npu.mel.cpu import log_mel_spectrogram

    settings = Settings()
    if args.kernel_dir is not None:
        settings = settings.model_copy(update={"kernel_dir": args.kernel_dir})
    config = settings.front_end_config(args.n_mels or configured_n_mels(settings))
    kernel_dir, device_dir = config.kernel_dir, config.device_dir
    devices = sorted(str(p) for p in device_dir.glob("*"))
    artifacts = sorted(str(p.relative_to(kernel_dir)) for p in kernel_dir.rglob("*") if p.is_file()) if kernel_dir.is_dir() else []
    pyxrt = pyxrt_status()
    print(f"configuration: AMANUENSIS_MEL_BACKEND={config.mode} n_mels={config.n_mels} "
          f"device {config.device_node()} kernels {kernel_dir}")
    print(f"NPU devices ({device_dir}/*): {', '.join(devices) or 'none'}")
    print(f"pyxrt importable: {pyxrt}")
    print(f"kernel artifacts in {kernel_dir}: {', '.join(artifacts) or 'none'}")

    with UnifiedNPURuntime.from_config(config) as runtime:
        backend = runtime.mel_backend_name
        print(f"mel back-end: {backend}")
        print(f"why: {runtime.mel_backend_reason}")
        audio = self_check_audio()
        error = float(np.abs(runtime.process_audio_to_features(audio) - log_mel_spectrogram(audio, config.n_mels)).max())
        backend_after = runtime.mel_backend_name
        fallbacks = {r: n for r, n in runtime.get_performance_metrics()["fallbacks"].items() if n}
    tolerance = SELF_CHECK_TOLERANCE.get(backend_after, 0.0)
    ok = backend_after == backend and error <= tolerance
    verdict = "ok" if ok else "FAILED"
    print(f"self-check vs CPU reference: max abs err {error:.2e} (tolerance {tolerance:g}): {verdict}")
    if backend_after != backend:
        print(f"self-check: {backend} failed during the check and the runtime moved to {backend_after}")
    print(json.dumps({
        "mode": str(config.mode),
        "n_mels": config.n_mels,
        "device_dir": str(device_dir),
        "accel_devices": devices,
        "pyxrt": pyxrt == "yes",
        "kernel_dir": str(kernel_dir),
        "kernel_artifacts": artifacts,
        "mel_backend": backend,
        "mel_backend_reason": runtime.mel_backend_reason,
        "fallbacks": fallbacks,
        "self_check": {"backend": backend, "max_abs_err": error, "tolerance": tolerance, "ok": ok},
    }))
    return 0 if ok else 1
