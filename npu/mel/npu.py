"""Whisper log-mel on the Ryzen AI NPU through XRT's ``pyxrt``.

:class:`NPUMelProcessorBatch` keeps the seed's API (``process``, ``__call__``,
``get_performance_metrics``, ``close``, ``fallback_to_cpu``) and implements the runtime's
``MelBackend``. Per process it opens the device once and each xclbin's context once (shared by
every processor using it); each processor allocates its buffers once and moves a whole call
(3000 frames = 30 s for ``npu-batch``, 30 frames for ``npu-frame``) per kernel run, with a
timeout on every wait. Opening ends with one known-answer run checked against the golden model,
so a kernel that hangs or answers wrongly is refused at start-up. A run that does not complete,
or output that is all zero or (at the probe) wrong, raises :class:`MelBackendError`
(``run_failed`` / ``bad_output``) unless ``fallback_to_cpu``.

The host's share (padding, gain, int16 quantisation, global max clamp) is ``npu.mel.host``; the
kernel's arithmetic is ``npu.mel.golden``; tests drive this module through a strict fake pyxrt.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

from npu import audio_spec
from npu.backend import NPU_BATCH, NPU_FRAME, FallbackReason, MelBackendConfig, MelBackendError
from npu.kernel_files import DEFAULT_KERNEL_DIR
from npu.mel import host, tables

logger = logging.getLogger(__name__)

KERNEL_NAME = "MLIR_AIE"
OPCODE = 3
DEVICE_DIR_ENV = "AMANUENSIS_NPU_DEVICE_DIR"
DEFAULT_TIMEOUT_MS = 10_000
PROBE_FRAMES = 10
PROBE_SEED = 20_240_917


def import_pyxrt():
    """The one place pyxrt is imported (tests put a fake module named ``pyxrt`` on the path)."""
    return importlib.import_module("pyxrt")


def device_dir() -> Path:
    """``/dev/accel``, or the folder named by AMANUENSIS_NPU_DEVICE_DIR (a fake device)."""
    return Path(os.environ.get(DEVICE_DIR_ENV, "/dev/accel"))


def device_node(device_id: int) -> Path:
    """``<device_dir>/accel<id>``: the node the amdxdna driver creates for NPU ``id``."""
    return device_dir() / f"accel{device_id}"


def artifact_paths(artifacts_dir: Path, n_mels: int, frames_per_call: int) -> tuple[Path, Path]:
    """The xclbin and instruction stream ``make -C kernels`` builds for one configuration."""
    stem = tables.artifact_stem(n_mels, frames_per_call)
    return Path(artifacts_dir) / f"{stem}.xclbin", Path(artifacts_dir) / f"{stem}.insts.bin"


@dataclass
class _Context:
    """One xclbin registered on the process's device: context, kernel, instructions on device."""

    context: object
    kernel: object
    bo_instr: object
    n_instr: int
    users: int = 0


class _XrtProcessState:
    """The process-wide XRT objects: one device per id, one context per xclbin."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.devices: dict[int, object] = {}
        self.contexts: dict[tuple[int, str], _Context] = {}

    def acquire(self, xrt, device_id: int, xclbin_path: Path, insts_path: Path):
        key = (device_id, str(xclbin_path))
        with self.lock:
            if device_id not in self.devices:
                self.devices[device_id] = xrt.device(device_id)
            device = self.devices[device_id]
            if key not in self.contexts:
                try:
                    self.contexts[key] = _open_context(xrt, device, xclbin_path, insts_path)
                except Exception:
                    self._drop_unused_device(device_id)
                    raise
            entry = self.contexts[key]
            entry.users += 1
            return device, entry

    def release(self, device_id: int, xclbin_path: Path) -> None:
        key = (device_id, str(xclbin_path))
        with self.lock:
            entry = self.contexts.get(key)
            if entry is None:
                return
            entry.users -= 1
            if entry.users <= 0:
                del self.contexts[key]
            self._drop_unused_device(device_id)

    def _drop_unused_device(self, device_id: int) -> None:
        if not any(k[0] == device_id for k in self.contexts):
            self.devices.pop(device_id, None)


_XRT = _XrtProcessState()


def _open_context(xrt, device, xclbin_path: Path, insts_path: Path) -> _Context:
    xclbin = xrt.xclbin(str(xclbin_path))
    device.register_xclbin(xclbin)
    context = xrt.hw_context(device, xclbin.get_uuid())
    kernel = xrt.kernel(context, KERNEL_NAME)
    insts = np.fromfile(insts_path, dtype=np.uint32)
    if insts.size == 0:
        raise ValueError(f"empty instruction stream {insts_path}")
    bo_instr = xrt.bo(device, insts.nbytes, xrt.bo.cacheable, kernel.group_id(1))
    bo_instr.write(insts, 0)
    bo_instr.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
    return _Context(context, kernel, bo_instr, int(insts.size))


@dataclass
class _Metrics:
    calls: int = 0
    frames: int = 0
    audio_seconds: float = 0.0
    kernel_seconds: float = 0.0
    host_seconds: float = 0.0
    cpu_fallbacks: int = 0
    fallback_reasons: dict[str, int] = field(default_factory=dict)


class NPUMelProcessorBatch:
    """Log-mel features on the NPU, ``frames_per_call`` frames per kernel run.

    ``fallback_to_cpu=True`` (the seed's behaviour) computes on the CPU when the NPU cannot open
    or a run fails; the runtime's factories pass ``False`` so that it sees and counts each reason.
    """

    def __init__(self, batch_size: int = audio_spec.N_FRAMES, xclbin_path: Path | None = None,
                 insts_path: Path | None = None, n_mels: int = 80, device_id: int = 0,
                 fallback_to_cpu: bool = True, artifacts_dir: Path = DEFAULT_KERNEL_DIR,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, name: str = NPU_BATCH) -> None:
        if n_mels not in audio_spec.SUPPORTED_N_MELS:
            raise ValueError(f"n_mels must be one of {audio_spec.SUPPORTED_N_MELS}")
        self.name, self.n_mels, self.frames_per_call = name, n_mels, int(batch_size)
        self.device_id, self.timeout_ms = device_id, timeout_ms
        self.fallback_to_cpu = fallback_to_cpu
        default_xclbin, default_insts = artifact_paths(artifacts_dir, n_mels, self.frames_per_call)
        self.xclbin_path = Path(xclbin_path or default_xclbin)
        self.insts_path = Path(insts_path or default_insts)
        self._metrics = _Metrics()
        self._lock = threading.Lock()
        self._closed = False
        self._context: _Context | None = None
        self.open_error: MelBackendError | None = None
        try:
            self._open()
        except MelBackendError as error:
            if not fallback_to_cpu:
                raise
            self.open_error = error
            logger.warning("NPU mel unavailable, using the CPU: %s", error)

    @property
    def npu_available(self) -> bool:
        return self._context is not None

    def _open(self) -> None:
        node = device_node(self.device_id)
        if not node.exists():
            raise MelBackendError(FallbackReason.NO_DEVICE, f"{node} does not exist")
        try:
            xrt = import_pyxrt()
        except ImportError as error:
            raise MelBackendError(FallbackReason.NO_XRT, f"cannot import pyxrt: {error}") from error
        for path in (self.xclbin_path, self.insts_path):
            if not path.is_file():
                raise MelBackendError(FallbackReason.NO_KERNEL_ARTIFACTS,
                                      f"{path} not found (build with `make -C kernels`)")
        try:
            device, context = _XRT.acquire(xrt, self.device_id, self.xclbin_path, self.insts_path)
        except Exception as error:  # XRT raises RuntimeError subclasses with C++ messages
            raise MelBackendError(FallbackReason.LOAD_FAILED,
                                  f"XRT open of {self.xclbin_path.name}: {error}") from error
        self._xrt, self._context = xrt, context
        self._buffers = host.CallBuffers.for_frames(self.frames_per_call)
        self._out_bytes = self.frames_per_call * self.n_mels * 2
        try:
            self._bo_in = xrt.bo(device, self._buffers.samples.nbytes, xrt.bo.host_only,
                                 context.kernel.group_id(3))
            self._bo_out = xrt.bo(device, self._out_bytes, xrt.bo.host_only,
                                  context.kernel.group_id(4))
        except Exception as error:
            self._release()
            raise MelBackendError(FallbackReason.LOAD_FAILED, f"buffer allocation: {error}") from error
        try:
            self._probe()
        except MelBackendError:
            self._release()
            raise

    def _run(self, samples: np.ndarray, n_frames: int) -> np.ndarray:
        """One counted kernel run: int16 padded signal -> int16 [frames_per_call, n_mels]."""
        out = self._execute(samples)
        self._metrics.calls += 1
        self._metrics.frames += n_frames
        return out

    def _execute(self, samples: np.ndarray) -> np.ndarray:
        """Write ``samples`` to the input BO, run the kernel once (waiting at most
        ``timeout_ms``) and return its output; raises ``run_failed`` or ``bad_output``."""
        if samples.dtype != np.int16 or samples.nbytes != self._buffers.samples.nbytes:
            raise TypeError(f"kernel input must be {self._buffers.samples.size} int16 samples, "
                            f"got {samples.size} {samples.dtype}")
        xrt, context = self._xrt, self._context
        self._bo_in.write(samples, 0)
        self._bo_in.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
        started = time.perf_counter()
        try:
            run = context.kernel(OPCODE, context.bo_instr, context.n_instr,
                                 self._bo_in, self._bo_out)
            state = run.wait(self.timeout_ms)
        except Exception as error:
            raise MelBackendError(FallbackReason.RUN_FAILED, f"kernel run: {error}") from error
        finally:
            self._metrics.kernel_seconds += time.perf_counter() - started
        if state != xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            raise MelBackendError(FallbackReason.RUN_FAILED, f"kernel run ended in state {state}")
        self._bo_out.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE)
        out = np.asarray(self._bo_out.read(self._out_bytes, 0)).view(np.int16)
        if not out.any():
            raise MelBackendError(FallbackReason.BAD_OUTPUT, "kernel returned all zeros")
        return out.reshape(self.frames_per_call, self.n_mels)

    def _probe(self) -> None:
        """One known-answer run at open: pseudo-random full-scale input; the first and last
        PROBE_FRAMES frames must equal the golden model bit for bit. A kernel that times out,
        errs or answers wrongly (the seed's all zeros) is refused before any request sees it."""
        from npu.mel import golden

        samples = np.random.default_rng(PROBE_SEED).integers(
            -32768, 32768, self._buffers.samples.size, dtype=np.int16)
        out = self._execute(samples)
        count = min(PROBE_FRAMES, self.frames_per_call)
        for first in sorted({0, self.frames_per_call - count}):
            expected = golden.kernel_call(samples[first * audio_spec.HOP_LENGTH:], count,
                                              self.n_mels)
            if not np.array_equal(out[first:first + count], expected):
                raise MelBackendError(FallbackReason.BAD_OUTPUT,
                                      f"known-answer probe: frames {first}..{first + count - 1} "
                                      "differ from the golden model")

    def log_mel(self, audio: np.ndarray, padding: int = 0) -> np.ndarray:
        """``MelBackend.log_mel``: float32 [n_mels, n_frames], Whisper's contract."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} back-end is closed")
            if self._context is None:
                return self._cpu(audio, padding, self.open_error)
            started = time.perf_counter()
            kernel_before = self._metrics.kernel_seconds
            try:
                features = host.log_mel(audio, self.n_mels, padding, self.frames_per_call,
                                            self._run, self._buffers)
            except MelBackendError as error:
                if not self.fallback_to_cpu:
                    raise
                return self._cpu(audio, padding, error)
            elapsed = time.perf_counter() - started
            self._metrics.host_seconds += elapsed - (self._metrics.kernel_seconds - kernel_before)
            self._metrics.audio_seconds += (
                features.shape[1] * audio_spec.HOP_LENGTH / audio_spec.SAMPLE_RATE)
            return features

    def _cpu(self, audio: np.ndarray, padding: int, reason: MelBackendError | None) -> np.ndarray:
        from npu.mel.cpu import log_mel_spectrogram

        key = reason.reason.value if reason else "unknown"
        self._metrics.cpu_fallbacks += 1
        self._metrics.fallback_reasons[key] = self._metrics.fallback_reasons.get(key, 0) + 1
        return log_mel_spectrogram(audio, self.n_mels, padding)

    def process(self, audio: np.ndarray) -> np.ndarray:
        """The seed's API: 16 kHz float32 audio -> float32 [n_mels, n_frames]."""
        return self.log_mel(audio, 0)

    __call__ = process

    def get_performance_metrics(self) -> dict:
        m = self._metrics
        busy = m.kernel_seconds + m.host_seconds
        return {
            "backend": self.name,
            "npu_available": self.npu_available,
            "frames_per_call": self.frames_per_call,
            "calls": m.calls,
            "frames": m.frames,
            "audio_seconds": m.audio_seconds,
            "kernel_seconds": m.kernel_seconds,
            "host_seconds": m.host_seconds,
            "npu_time_per_frame_ms": 1000 * m.kernel_seconds / m.frames if m.frames else 0.0,
            "x_realtime": m.audio_seconds / busy if busy else 0.0,
            "calls_per_hour_of_audio": 3600 * audio_spec.SAMPLE_RATE
            / (audio_spec.HOP_LENGTH * self.frames_per_call),
            "cpu_fallbacks": m.cpu_fallbacks,
            "fallback_reasons": dict(m.fallback_reasons),
        }

    def _release(self) -> None:
        if self._context is not None:
            self._bo_in = self._bo_out = None
            self._context = None
            _XRT.release(self.device_id, self.xclbin_path)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_npu_batch(config: MelBackendConfig) -> NPUMelProcessorBatch:
    """Runtime factory ``npu-batch``: ``config.frames_per_call`` frames (3000 = 30 s) per run."""
    return NPUMelProcessorBatch(batch_size=config.frames_per_call, n_mels=config.n_mels,
                                device_id=config.device_id, artifacts_dir=config.artifacts_dir,
                                fallback_to_cpu=False, name=NPU_BATCH)


def open_npu_frame(config: MelBackendConfig) -> NPUMelProcessorBatch:
    """Runtime factory ``npu-frame``: the seed's small batch, 30 frames per run."""
    frames = tables.read_config()["FRAMES_PER_CALL_FRAME"]
    return NPUMelProcessorBatch(batch_size=frames, n_mels=config.n_mels,
                                device_id=config.device_id, artifacts_dir=config.artifacts_dir,
                                fallback_to_cpu=False, name=NPU_FRAME)
