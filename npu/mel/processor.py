"""``NPUMelProcessorBatch``: the seed's entry point to the NPU log-mel kernel.

A thin face over :class:`~npu.runtime.UnifiedNPURuntime` with one NPU tier (this processor's
batch size) and, with ``fallback_to_cpu``, the CPU behind it: the fallback, its reasons and the
counters are the runtime's, the only ones in the process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np

from npu.audio_spec import N_FRAMES
from npu.backend import CPU, NPU_BATCH
from npu.config import DEFAULT_DEVICE_DIR, FrontEndConfig
from npu.kernel_files import DEFAULT_KERNEL_DIR
from npu.mel.npu import DEFAULT_TIMEOUT_MS, NpuMelBackend
from npu.runtime import UnifiedNPURuntime


class NPUMelProcessorBatch:
    """Log-mel features on the NPU, ``batch_size`` frames per kernel run; with
    ``fallback_to_cpu`` (the seed's default) the CPU serves when the NPU cannot."""

    def __init__(self, batch_size: int = N_FRAMES, xclbin_path: Path | None = None,
                 insts_path: Path | None = None, n_mels: int = 80, device_id: int = 0,
                 fallback_to_cpu: bool = True, kernel_dir: Path = DEFAULT_KERNEL_DIR,
                 device_dir: Path = DEFAULT_DEVICE_DIR,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.frames_per_call = int(batch_size)
        self.fallback_to_cpu = fallback_to_cpu
        config = FrontEndConfig.from_seed(
            enable_mel=True, fallback_to_cpu=fallback_to_cpu, n_mels=n_mels,
            kernel_dir=kernel_dir, device_dir=device_dir, device_id=device_id,
            frames_per_call=self.frames_per_call)

        def open_backend(config: FrontEndConfig) -> NpuMelBackend:
            return NpuMelBackend(config, self.frames_per_call, NPU_BATCH, xclbin_path,
                                 insts_path, timeout_ms)

        self.runtime = UnifiedNPURuntime.from_config(
            config, backend_factories=[(NPU_BATCH, open_backend)])

    @property
    def npu_available(self) -> bool:
        return self.runtime.mel_backend_name == NPU_BATCH

    def process(self, audio: np.ndarray) -> np.ndarray:
        """16 kHz float32 audio -> float32 [n_mels, n_frames]."""
        return self.runtime.process_audio_to_features(audio, 0)

    __call__ = process

    def get_performance_metrics(self) -> dict:
        """The seed's metric names, read from the runtime's counters."""
        metrics = self.runtime.get_performance_metrics()
        npu = metrics["backends"].get(NPU_BATCH, {})
        cpu = metrics["backends"].get(CPU, {})
        frames = npu.get("frames", 0)
        return {
            "backend": metrics["mel_backend"],
            "npu_available": self.npu_available,
            "frames_per_call": self.frames_per_call,
            "calls": npu.get("calls", 0),
            "frames": frames,
            "audio_seconds": npu.get("audio_seconds", 0.0),
            "npu_time_per_frame_ms": 1000 * npu["compute_seconds"] / frames if frames else 0.0,
            "x_realtime": npu.get("x_realtime", 0.0),
            "cpu_fallbacks": cpu.get("calls", 0),
            "fallback_reasons": {r: n for r, n in metrics["fallbacks"].items() if n},
        }

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
