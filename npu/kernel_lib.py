"""The kernels compiled for the host (``kernels/build/host/lib*.so``), through ctypes: the mel
kernel per n_mels, GELU and attention.

The same C++ sources the NPU runs, built by ``make -C kernels host`` (run once per process: make
rebuilds only what changed, so the libraries always reflect the current sources).
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading
from functools import cache

import numpy as np

from npu.kernel_files import HOST_BUILD_DIR, HOST_BUILD_ROOT, KERNELS_DIR
from npu.mel import host

_build_lock = threading.Lock()
_built = False


class KernelBuildError(RuntimeError):
    """``make -C kernels host`` failed; the message carries its output."""


def build_host_library() -> None:
    """Run ``make -C kernels host`` once per process with this interpreter for the generator,
    into :data:`~npu.kernel_files.HOST_BUILD_ROOT`; needs ``make`` and a C++20 compiler."""
    global _built
    with _build_lock:
        if _built:
            return
        command = ["make", "-s", "-C", str(KERNELS_DIR), "host", f"PYTHON={sys.executable}",
                   f"BUILD={HOST_BUILD_ROOT}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError as error:
            raise KernelBuildError("building the host kernels needs make and g++ (C++20): "
                                   f"{error}") from error
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
        """The kernel input (blocks of gain + samples) -> int32 [n_frames, n_mels], exactly as one
        kernel call."""
        samples = np.ascontiguousarray(samples)
        if samples.dtype != np.int16 or samples.size < host.call_samples(n_frames):
            raise ValueError(f"need {host.call_samples(n_frames)} int16 values, got "
                             f"{samples.size} {samples.dtype}")
        if out is None:
            out = np.empty((n_frames, self.n_mels), dtype=np.int32)
        if out.dtype != np.int32 or not out.flags.c_contiguous or out.size < n_frames * self.n_mels:
            raise ValueError("out must be a C-contiguous int32 array of n_frames * n_mels")
        self._lib.mel_frames(samples.ctypes.data, out.ctypes.data, n_frames)
        return out


@cache
def host_kernel(n_mels: int) -> HostKernel:
    return HostKernel(n_mels)


def _bits(array: np.ndarray, what: str) -> np.ndarray:
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint16:
        raise ValueError(f"{what} must be bf16 bit patterns (uint16), got {array.dtype}")
    return array


class HostGelu:
    """Calls ``gelu_bf16(in, out, n)`` of the host-built GELU kernel."""

    def __init__(self) -> None:
        build_host_library()
        self._lib = ctypes.CDLL(str(HOST_BUILD_DIR / "libgelu.so"))
        self._lib.gelu_bf16.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
        self._lib.gelu_bf16.restype = None

    def __call__(self, bits: np.ndarray) -> np.ndarray:
        """bf16 bits (any shape) -> GELU as bf16 bits of the same shape."""
        bits = _bits(bits, "GELU input")
        out = np.empty_like(bits)
        self._lib.gelu_bf16(bits.ctypes.data, out.ctypes.data, bits.size)
        return out


class HostAttention:
    """Calls ``attention_head(q, k^T, v, out, n_q, n_k)`` of the host-built attention kernel."""

    def __init__(self) -> None:
        from npu.ops import tables

        build_host_library()
        self._lib = ctypes.CDLL(str(HOST_BUILD_DIR / "libattention.so"))
        self._lib.attention_head.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int32] * 2
        self._lib.attention_head.restype = ctypes.c_int32
        self._lib.attention_kernel_head_dim.restype = ctypes.c_int32
        config = tables.attention_config()
        self.head_dim, self.max_keys = config["HEAD_DIM"], config["MAX_KEYS"]
        if self._lib.attention_kernel_head_dim() != self.head_dim:
            raise KernelBuildError("libattention.so was built for another head dimension")

    def __call__(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """bf16 bits ``q [n_q, D]``, ``k, v [n_k, D]`` -> bf16 bits ``[n_q, D]``."""
        q, v = _bits(q, "q"), _bits(v, "v")
        kt = np.ascontiguousarray(_bits(k, "k").T)
        n_q, n_k = q.shape[0], v.shape[0]
        shapes_ok = (q.ndim == 2 and q.shape[1] == self.head_dim and kt.shape == (self.head_dim, n_k)
                     and v.shape == (n_k, self.head_dim) and n_q >= 1 and 1 <= n_k <= self.max_keys)
        if not shapes_ok:
            raise ValueError(f"attention kernel takes q [n, {self.head_dim}], k and v "
                             f"[1..{self.max_keys}, {self.head_dim}]; got {q.shape} {k.shape} {v.shape}")
        out = np.empty_like(q)
        status = self._lib.attention_head(q.ctypes.data, kt.ctypes.data, v.ctypes.data,
                                          out.ctypes.data, n_q, n_k)
        if status:
            raise ValueError(f"attention kernel refused {n_q} queries x {n_k} keys")
        return out


@cache
def host_gelu() -> HostGelu:
    return HostGelu()


@cache
def host_attention() -> HostAttention:
    return HostAttention()
