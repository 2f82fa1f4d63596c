"""Whisper log-mel on the Ryzen AI NPU through XRT's ``pyxrt``: the ``npu-batch`` and
``npu-frame`` back-ends of the runtime.

:class:`NpuMelBackend` implements the runtime's ``MelBackend``. Per process it opens the device
once and each xclbin's context once (shared by every back-end using it); each back-end allocates
its buffers once and moves a whole call (3000 frames = 30 s for ``npu-batch``, 30 frames for
``npu-frame``) per kernel run, with a timeout on every wait. Opening ends with one known-answer
run checked against the golden model, so a kernel that hangs or answers wrongly is refused at
start-up; the runtime repeats that probe while serving (:meth:`NpuMelBackend.self_check`). A run
that does not complete, or output that is all zero or (at a probe) wrong, raises
:class:`MelBackendError` (``run_failed`` / ``bad_output``): falling back is the runtime's job.

The host's share (padding, block gains, int16 quantisation, global max clamp) is ``npu.mel.host``; the
kernel's arithmetic is ``npu.mel.golden``; tests drive this module through a strict fake pyxrt.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from npu.backend import NPU_BATCH, NPU_FRAME, FallbackReason, MelBackend, MelBackendError
from npu.config import FrontEndConfig
from npu.mel import host, tables
from npu.xrt import (
    DEFAULT_TIMEOUT_MS,
    XrtBackend,
    XrtContext,
    host_buffers,
    open_kernel,
    run_kernel,
)

logger = logging.getLogger(__name__)

PROBE_FRAMES = 10
PROBE_SEED = 20_240_917


def artifact_paths(artifacts_dir: Path, n_mels: int, frames_per_call: int) -> tuple[Path, Path]:
    """The xclbin and instruction stream ``make -C kernels`` builds for one configuration."""
    stem = tables.artifact_stem(n_mels, frames_per_call)
    return Path(artifacts_dir) / f"{stem}.xclbin", Path(artifacts_dir) / f"{stem}.insts.bin"


class NpuMelBackend(XrtBackend, MelBackend):
    """Log-mel features on the NPU, ``frames_per_call`` frames per kernel run; a batch is
    :class:`~npu.backend.MelBackend`'s default, one :meth:`log_mel` per chunk."""

    def __init__(self, config: FrontEndConfig, frames_per_call: int, name: str,
                 xclbin_path: Path | None = None, insts_path: Path | None = None,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.name, self.n_mels, self.frames_per_call = name, config.n_mels, int(frames_per_call)
        self.device_id, self.device_node, self.timeout_ms = (
            config.device_id, config.device_node(), timeout_ms)
        default_xclbin, default_insts = artifact_paths(config.kernel_dir, self.n_mels,
                                                       self.frames_per_call)
        self.xclbin_path = Path(xclbin_path or default_xclbin)
        self.insts_path = Path(insts_path or default_insts)
        self._lock = threading.Lock()
        self._closed = False
        self._context: XrtContext | None = None
        self._open()

    def _open(self) -> None:
        xrt, device, context = open_kernel(self.device_node, self.device_id, self.xclbin_path,
                                           self.insts_path)
        self._xrt, self._context = xrt, context
        self._buffers = host.CallBuffers.for_frames(self.frames_per_call)
        self._out_bytes = self.frames_per_call * self.n_mels * np.dtype(np.int32).itemsize
        try:
            bos = host_buffers(xrt, device, context,
                               {3: self._buffers.samples.nbytes, 4: self._out_bytes})
        except Exception as error:
            self._release()
            raise MelBackendError(FallbackReason.LOAD_FAILED, f"buffer allocation: {error}") from error
        self._bo_in, self._bo_out = bos[3], bos[4]
        try:
            self._probe()
        except MelBackendError:
            self._release()
            raise

    def _execute(self, samples: np.ndarray, frames_used: int | None = None) -> np.ndarray:
        """Write ``samples`` to the input BO, run the kernel once (waiting at most
        ``timeout_ms``) and return its output; raises ``run_failed`` or ``bad_output``. The
        kernel always computes ``frames_per_call`` frames; ``frames_used`` (how many of them the
        host keeps, as :func:`npu.mel.host.log_mel` passes it) does not change the run."""
        if samples.dtype != np.int16 or samples.nbytes != self._buffers.samples.nbytes:
            raise TypeError(f"kernel input must be {self._buffers.samples.size} int16 samples, "
                            f"got {samples.size} {samples.dtype}")
        xrt = self._xrt
        self._bo_in.write(samples, 0)
        self._bo_in.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
        run_kernel(xrt, self._context, [self._bo_in, self._bo_out], self.timeout_ms)
        self._bo_out.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE)
        out = np.asarray(self._bo_out.read(self._out_bytes, 0)).view(np.int32)
        if not out.any():
            raise MelBackendError(FallbackReason.BAD_OUTPUT, "kernel returned all zeros")
        return out.reshape(self.frames_per_call, self.n_mels)

    def self_check(self) -> None:
        """The known-answer probe, repeated while serving (the runtime calls it every N calls
        or T seconds); raises ``bad_output`` or ``run_failed``."""
        with self._lock:
            if self._closed or self._context is None:
                raise RuntimeError(f"{self.name} back-end is closed")
            self._probe()

    def _probe(self) -> None:
        """One known-answer run: pseudo-random full-scale input (block gains too, which the
        kernel clamps to its range); the first and last PROBE_FRAMES
        frames must equal the golden model bit for bit. A kernel that times out, errs or answers
        wrongly (the seed's all zeros) is refused before any request sees it."""
        from npu.mel import golden

        samples = np.random.default_rng(PROBE_SEED).integers(
            -32768, 32768, self._buffers.samples.size, dtype=np.int16)
        out = self._execute(samples)
        count = min(PROBE_FRAMES, self.frames_per_call)
        for first in sorted({0, self.frames_per_call - count}):
            start = first * tables.block_words(tables.read_config())
            expected = golden.kernel_call(samples[start:], count, self.n_mels)
            if not np.array_equal(out[first:first + count], expected):
                raise MelBackendError(FallbackReason.BAD_OUTPUT,
                                      f"known-answer probe: frames {first}..{first + count - 1} "
                                      "differ from the golden model")

    def log_mel(self, audio: np.ndarray, padding: int = 0) -> np.ndarray:
        """``MelBackend.log_mel``: float32 [n_mels, n_frames], Whisper's contract."""
        with self._lock:
            if self._closed or self._context is None:
                raise RuntimeError(f"{self.name} back-end is closed")
            return host.log_mel(audio, self.n_mels, padding, self.frames_per_call,
                                self._execute, self._buffers)

    def _drop_buffers(self) -> None:
        self._bo_in = self._bo_out = None


def open_npu_batch(config: FrontEndConfig) -> NpuMelBackend:
    """Runtime factory ``npu-batch``: ``config.frames_per_call`` frames (3000 = 30 s) per run."""
    return NpuMelBackend(config, config.frames_per_call, NPU_BATCH)


def open_npu_frame(config: FrontEndConfig) -> NpuMelBackend:
    """Runtime factory ``npu-frame``: the seed's small batch, 30 frames per run."""
    return NpuMelBackend(config, tables.read_config()["FRAMES_PER_CALL_FRAME"], NPU_FRAME)
