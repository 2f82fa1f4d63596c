"""``amanuensis doctor``: the service's own front-end configuration (its ``AMANUENSIS_*``
settings), what the runtime finds with it, what it chose and why, and a self-check - of the mel
front-end, and of the GELU and attention ops the runtime encoder
(``AMANUENSIS_ENCODER_BACKEND=runtime``) calls."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from npu.backend import CPU, NPU, NPU_BATCH, NPU_FRAME
from npu.ops.golden import ATTENTION_MAX_ERR_OVER_MAX_V, GELU_MAX_ABS_ERR

SELF_CHECK_TOLERANCE = {CPU: 1e-6, NPU_BATCH: 0.05, NPU_FRAME: 0.05}
"""Max abs difference from the CPU reference (normalised log-mel units). The NPU tiers compute in
fixed point: the design note measures ~0.016 worst case for int16 in/out, so 0.05 leaves room."""
OP_SELF_CHECK_TOLERANCE = {
    "gelu": {CPU: 2e-6, NPU: GELU_MAX_ABS_ERR},
    "attention": {CPU: 1e-5, NPU: ATTENTION_MAX_ERR_OVER_MAX_V},
}
"""Max abs difference from exact GELU (float64 attention, over max |v|) on bf16 inputs: the CPU
computes in float32, the NPU kernels in bf16 within their stated bounds (npu/ops/golden.py)."""


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


def op_self_checks(runtime) -> dict[str, dict]:
    """GELU and attention through the runtime (on the NPU where it has them) against the exact
    CPU functions, on bf16 inputs of the NPU kernels' shapes: per op the back-end that served
    the check, why, its fallbacks, the error and whether it is within tolerance."""
    import numpy as np

    from npu.ops import cpu, golden, tables

    rng = np.random.default_rng(0)
    x = golden.round_bf16(np.linspace(-6, 6, 1500 * 384, dtype=np.float32).reshape(1500, 384))
    config = tables.attention_config()
    q, k, v = (golden.round_bf16(rng.standard_normal((1, config["MAX_KEYS"], config["HEAD_DIM"]))
                                 .astype(np.float32)) for _ in range(3))
    errors = {
        "gelu": float(np.abs(runtime.gelu(x) - cpu.gelu(x.astype(np.float64))).max()),
        "attention": float(np.abs(runtime.attention(q, k, v) - cpu.attention(
            *(a.astype(np.float64) for a in (q, k, v)))).max() / np.abs(v).max()),
    }
    report = {}
    for op, metrics in runtime.get_performance_metrics()["ops"].items():
        tolerance = OP_SELF_CHECK_TOLERANCE[op].get(metrics["backend"], 0.0)
        report[op] = {
            "backend": metrics["backend"], "reason": metrics["reason"],
            "fallbacks": {r: n for r, n in metrics["fallbacks"].items() if n},
            "self_check": {"max_abs_err": errors[op], "tolerance": tolerance,
                           "ok": errors[op] <= tolerance},
        }
    return report


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
        ops = op_self_checks(runtime)
    tolerance = SELF_CHECK_TOLERANCE.get(backend_after, 0.0)
    mel_ok = backend_after == backend and error <= tolerance
    print(f"self-check vs CPU reference: max abs err {error:.2e} (tolerance {tolerance:g}): "
          f"{'ok' if mel_ok else 'FAILED'}")
    if backend_after != backend:
        print(f"self-check: {backend} failed during the check and the runtime moved to {backend_after}")
    print(f"encoder back-end: {settings.encoder_backend} (AMANUENSIS_ENCODER_BACKEND; the ops "
          f"below run only in the runtime encoder)")
    for op, op_report in ops.items():
        check = op_report["self_check"]
        counts = ", ".join(f"{r}={n}" for r, n in op_report["fallbacks"].items()) or "none"
        print(f"{op}: {op_report['backend']} ({op_report['reason']}); fallbacks {counts}; "
              f"self-check err {check['max_abs_err']:.2e} (tolerance {check['tolerance']:g}): "
              f"{'ok' if check['ok'] else 'FAILED'}")
    ok = mel_ok and all(op_report["self_check"]["ok"] for op_report in ops.values())
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
        "self_check": {"backend": backend, "max_abs_err": error, "tolerance": tolerance,
                       "ok": mel_ok},
        "encoder_backend": settings.encoder_backend,
        "ops": ops,
    }))
    return 0 if ok else 1
