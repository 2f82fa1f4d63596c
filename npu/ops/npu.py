"""GELU and attention on the Ryzen AI NPU through XRT's ``pyxrt``: the ``npu`` tiers of the
runtime's GELU and attention ops.

Each back-end opens its xclbin once per process (``npu.xrt``), allocates its buffers once and
moves whole calls: GELU ``GELU_OBJECTS_PER_CALL * GELU_OBJECT_ELEMENTS`` bf16 values per run
(the host pads the last run), attention one head (``ATTN_MAX_KEYS`` queries and keys, Q, K^T, V
in, the output back) per run. Opening ends with a known-answer run checked bit for bit against
the golden model (:mod:`npu.ops.golden`), and the runtime repeats it while serving
(``self_check``): a kernel that hangs or answers wrongly is refused with ``run_failed`` /
``bad_output``; falling back is the runtime's job. Inputs are rounded to bf16 (the kernels'
format) and outputs returned as float32.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from npu.backend import NPU, BackendError, FallbackReason
from npu.config import FrontEndConfig
from npu.ops import golden, tables
from npu.xrt import DEFAULT_TIMEOUT_MS, XrtBackend, host_buffers, open_kernel, run_kernel

PROBE_SEED = 20_251_203


def artifact_paths(kernel_dir: Path, stem: str) -> tuple[Path, Path]:
    """The xclbin and instruction stream ``make -C kernels`` builds for one op design."""
    return Path(kernel_dir) / f"{stem}.xclbin", Path(kernel_dir) / f"{stem}.insts.bin"


class _NpuOpBackend(XrtBackend):
    """What the GELU and attention back-ends share: open, buffers, one run, probe, close."""

    name = NPU
    stem = ""
    inputs: ClassVar[dict[int, int]] = {}
    """Input argument index -> buffer bytes."""
    output: ClassVar[tuple[int, int]] = (0, 0)
    """Output argument index and buffer bytes."""

    def __init__(self, config: FrontEndConfig, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.device_id, self.timeout_ms = config.device_id, timeout_ms
        self.xclbin_path, self.insts_path = artifact_paths(config.kernel_dir, self.stem)
        self._lock = threading.Lock()
        self._closed = False
        self._xrt, device, self._context = open_kernel(config.device_node(), self.device_id,
                                                       self.xclbin_path, self.insts_path)
        try:
            self._bos = host_buffers(self._xrt, device, self._context,
                                     {**self.inputs, self.output[0]: self.output[1]})
        except Exception as error:
            self._release()
            raise BackendError(FallbackReason.LOAD_FAILED, f"buffer allocation: {error}") from error
        try:
            self._probe()
        except BackendError:
            self._release()
            raise

    def _run(self, arrays: dict[int, np.ndarray]) -> np.ndarray:
        """Write each input argument's array, run once, return the output as uint16."""
        xrt = self._xrt
        for argument, array in arrays.items():
            self._bos[argument].write(array, 0)
            self._bos[argument].sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE)
        run_kernel(xrt, self._context, [self._bos[a] for a in sorted(self._bos)], self.timeout_ms)
        argument, size = self.output
        self._bos[argument].sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE)
        return np.asarray(self._bos[argument].read(size, 0)).view(np.uint16)

    def _probe(self) -> None:
        raise NotImplementedError

    def self_check(self) -> None:
        """The known-answer probe, repeated while serving; raises ``bad_output`` / ``run_failed``."""
        with self._lock:
            self._check_open()
            self._probe()

    def _check_open(self) -> None:
        if self._closed or self._context is None:
            raise RuntimeError(f"{self.stem} back-end is closed")

    def _drop_buffers(self) -> None:
        self._bos = {}


def _gelu_call_elements() -> int:
    config = tables.gelu_config()
    return config["OBJECTS_PER_CALL"] * config["OBJECT_ELEMENTS"]


@cache
def _gelu_probe() -> tuple[np.ndarray, np.ndarray]:
    """Every bf16 bit pattern, repeated to fill one call, and the golden answer."""
    bits = np.resize(np.arange(1 << 16, dtype=np.uint16), _gelu_call_elements())
    return bits, golden.gelu(bits)


class NpuGeluBackend(_NpuOpBackend):
    """GELU on the NPU: bf16 values through the kernel, a call's worth per run."""

    stem = tables.gelu_stem()
    inputs: ClassVar[dict[int, int]] = {3: 2 * _gelu_call_elements()}
    output = (4, 2 * _gelu_call_elements())

    def _probe(self) -> None:
        bits, expected = _gelu_probe()
        if not np.array_equal(self._run({3: bits}), expected):
            raise BackendError(FallbackReason.BAD_OUTPUT,
                               "GELU known-answer probe differs from the golden model")

    def gelu(self, x: np.ndarray) -> np.ndarray:
        """Float32 GELU of ``x`` (any shape), computed on the NPU in bf16."""
        x = np.asarray(x)
        bits = golden.to_bf16(x.astype(np.float32, copy=False)).ravel()
        per_call = _gelu_call_elements()
        out = np.empty_like(bits)
        buffer = np.zeros(per_call, np.uint16)
        with self._lock:
            self._check_open()
            for start in range(0, bits.size, per_call):
                chunk = bits[start:start + per_call]
                buffer[:chunk.size] = chunk
                buffer[chunk.size:] = 0
                result = self._run({3: buffer})
                if not result[:chunk.size].any() and (golden.from_bf16(chunk) > 0).any():
                    raise BackendError(FallbackReason.BAD_OUTPUT,
                                       "GELU kernel returned zeros for positive input")
                out[start:start + chunk.size] = result[:chunk.size]
        return golden.from_bf16(out).reshape(x.shape)


@cache
def _attention_probe() -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    config = tables.attention_config()
    rng = np.random.default_rng(PROBE_SEED)
    shape = (config["MAX_KEYS"], config["HEAD_DIM"])
    q, k, v = (golden.to_bf16(rng.standard_normal(shape).astype(np.float32)) for _ in range(3))
    return (q, k, v), golden.attention(q, k, v)


def _attention_buffers() -> dict[int, int]:
    """Bytes of Q [rows][D], K^T [D][keys], V [keys][D] and out [rows][D], padded."""
    rows, keys = tables.attention_padded_sizes()
    dim = tables.attention_config()["HEAD_DIM"]
    return {3: 2 * rows * dim, 4: 2 * dim * keys, 5: 2 * keys * dim, 6: 2 * rows * dim}


class NpuAttentionBackend(_NpuOpBackend):
    """Attention on the NPU, one head per run (Q, K^T, V bf16 in, zero-padded to whole tiles
    and blocks; bf16 out)."""

    stem = tables.attention_stem()
    inputs: ClassVar[dict[int, int]] = {a: n for a, n in _attention_buffers().items() if a != 6}
    output = (6, _attention_buffers()[6])

    def _head(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        rows, keys = tables.attention_padded_sizes()
        n, dim = q.shape
        q_padded = np.zeros((rows, dim), np.uint16)
        q_padded[:n] = q
        kt_padded = np.zeros((dim, keys), np.uint16)
        kt_padded[:, :n] = k.T
        v_padded = np.zeros((keys, dim), np.uint16)
        v_padded[:n] = v
        out = self._run({3: q_padded, 4: kt_padded, 5: v_padded}).reshape(rows, dim)[:n]
        if not out.any() and golden.from_bf16(v).any():
            raise BackendError(FallbackReason.BAD_OUTPUT, "attention kernel returned all zeros")
        return out

    def _probe(self) -> None:
        (q, k, v), expected = _attention_probe()
        if not np.array_equal(self._head(q, k, v), expected):
            raise BackendError(FallbackReason.BAD_OUTPUT,
                               "attention known-answer probe differs from the golden model")

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Float32 attention over ``[..., MAX_KEYS, HEAD_DIM]`` (one kernel run per head)."""
        if not tables.attention_kernel_takes(np.shape(q), np.shape(k), np.shape(v)):
            raise ValueError(f"the attention kernel does not take shapes {np.shape(q)}")
        if not all(np.isfinite(a).all() for a in (q, k, v)):
            raise ValueError("attention input has NaN or inf")
        heads = [golden.to_bf16(np.asarray(a, np.float32)).reshape(-1, *np.shape(q)[-2:])
                 for a in (q, k, v)]
        out = np.empty_like(heads[0])
        with self._lock:
            self._check_open()
            for head in range(out.shape[0]):
                out[head] = self._head(heads[0][head], heads[1][head], heads[2][head])
        return golden.from_bf16(out).reshape(np.shape(q))


def open_npu_gelu(config: FrontEndConfig) -> NpuGeluBackend:
    """Runtime factory ``npu`` of the GELU op."""
    return NpuGeluBackend(config)


def open_npu_attention(config: FrontEndConfig) -> NpuAttentionBackend:
    """Runtime factory ``npu`` of the attention op."""
    return NpuAttentionBackend(config)
