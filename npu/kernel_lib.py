"""The mel kernel compiled for the host (``kernels/build/host/libmel_n<M>.so``), through ctypes.

The same C++ source the NPU runs, built by ``make -C kernels host`` (run once per process: make
rebuilds only what changed, so the library always reflects the current source).
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading
from functools import cache

import numpy as np

from npu.kernel_files import HOST_BUILD_DIR, KERNELS_DIR
from npu.mel import host

_build_lock = threading.Lock()
_built = False


class KernelBuildError(RuntimeError):
    """``make -C kernels host`` failed; the message carries its output."""


def build_host_library() -> None:
    """Run ``make -C kernels host`` once per process with this interpreter for the generator."""
    global _built
    with _build_lock:
        if _built:
            return
        result = subprocess.run(
            ["make", "-s", "-C", str(KERNELS_DIR), "host", f"PYTHON={sys.executable}"],
            capture_output=True, text=True, check=False)
        if result.returncode:
            raise KernelBuildError(f"make -C kernels host failed:\n{result.stdout}{result.stderr}")
        _built = True


class HostKernel:
    """Calls ``mel_frames(samples, out, n_frames)`` of the host-built kernel for one n_mels."""

    def __init__(self, n_mels: int) -> None:
        build_host_library()
        path = HOST_BUILD_DIR / f"libmel_n{n_mels}.so"
        self._lib = ctypes.CDLL(str(path))
        self._lib.mel_frames.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
        self._lib.mel_frames.restype = None
        self._lib.mel_kernel_n_mels.restype = ctypes.c_int32
        if self._lib.mel_kernel_n_mels() != n_mels:
            raise KernelBuildError(f"{path} was built for {self._lib.mel_kernel_n_mels()} mels")
        self.n_mels = n_mels

    def __call__(self, samples: np.ndarray, n_frames: int,
                 out: np.ndarray | None = None) -> np.ndarray:
        """int16 padded signal -> int16 [n_frames, n_mels], exactly as one kernel call."""
        samples = np.ascontiguousarray(samples)
        if samples.dtype != np.int16 or samples.size < host.call_samples(n_frames):
            raise ValueError(f"need {host.call_samples(n_frames)} int16 samples, got "
                             f"{samples.size} {samples.dtype}")
        if out is None:
            out = np.empty((n_frames, self.n_mels), dtype=np.int16)
        if out.dtype != np.int16 or not out.flags.c_contiguous or out.size < n_frames * self.n_mels:
            raise ValueError("out must be a C-contiguous int16 array of n_frames * n_mels")
        self._lib.mel_frames(samples.ctypes.data, out.ctypes.data, n_frames)
        return out


@cache
def host_kernel(n_mels: int) -> HostKernel:
    return HostKernel(n_mels)
