"""Golden models of the GELU and attention kernels: the same float32 operations, in the same
order, as ``kernels/gelu/gelu_kernel.cc`` and ``kernels/attention/attention_kernel.cc``, so the
host builds of those files equal these functions bit for bit (tests and ``amanuensis kernels
verify`` check it). Inputs and outputs are bf16 bit patterns (``uint16``); :func:`to_bf16` and
:func:`from_bf16` convert, as ``kernels/common/bf16.h`` does.
"""

from __future__ import annotations

import numpy as np

from npu.ops import tables

GELU_MAX_ABS_ERR = 2.0 ** -7
"""Stated bound of the GELU kernel against exact-erf GELU of the same bf16 input, over every
finite bf16 value (the bf16 rounding of outputs in [2, 4) alone reaches 2^-7)."""
GELU_APPROX_ERR = 2e-4
"""...and beyond half a bf16 ulp of the output: the float32 approximation's own error (the clamp
at |x| = 4 dominates: GELU(-4) = -1.3e-4)."""
ATTENTION_MAX_ERR_OVER_MAX_V = 2.0 ** -8
"""Stated bound of the attention kernel's max |out - exact| / max |v| against float64 softmax
attention: half a bf16 ulp of the output (2^-9 relative) plus the bf16 softmax weights."""
ATTENTION_WEIGHTS_ERR = 1e-3
"""...of which the part beyond half a bf16 ulp of the output, relative to max |v|."""


def from_bf16(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns, round to nearest even; NaN stays a quiet NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((bits >> 16) | np.uint32(0x40)).astype(np.uint16), rounded)


def round_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bf16, as float32."""
    return from_bf16(to_bf16(values))


def gelu(bits: np.ndarray) -> np.ndarray:
    """The GELU kernel on bf16 bit patterns (any shape)."""
    x = from_bf16(bits)
    clamp = np.float32(tables.gelu_config()["CLAMP"])
    poly = tables.gelu_poly()
    with np.errstate(over="ignore", invalid="ignore"):
        u = x * x
        p = np.full_like(x, poly[-1])
        for coefficient in poly[-2::-1]:
            p = p * u + coefficient
        y = x * (x * p + np.float32(0.5))
    y = np.where(x <= -clamp, np.float32(0.0), y)
    y = np.where(x >= clamp, x, y)
    return to_bf16(y)


def exp2_nonpositive(t: np.ndarray) -> np.ndarray:
    """The kernel's ``2^t`` for float32 ``t <= 0``."""
    t = np.asarray(t, dtype=np.float32)
    tiny = t < np.float32(-126.0)
    t = np.where(tiny, np.float32(0.0), t)
    whole = np.floor(t)
    f = t - whole
    poly = tables.exp2_poly()
    p = np.full_like(f, poly[-1])
    for coefficient in poly[-2::-1]:
        p = p * f + coefficient
    mantissa = np.float32(1.0) + f * p
    scale = ((whole.astype(np.int32) + 127).astype(np.uint32) << 23).view(np.float32)
    return np.where(tiny, np.float32(0.0), mantissa * scale)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The attention kernel for one head: bf16 bits ``q [n_q, D]``, ``k, v [n_k, D]`` ->
    bf16 bits ``[n_q, D]``. Query rows are independent, so all tiles are computed at once."""
    config = tables.attention_config()
    block = config["KEY_BLOCK"]
    q, k, v = from_bf16(q), from_bf16(k), from_bf16(v)
    n_q, n_k = q.shape[0], k.shape[0]
    scale = tables.score_scale()
    running_max = np.full(n_q, tables.INITIAL_MAX, np.float32)
    total = np.zeros(n_q, np.float32)
    acc = np.zeros((n_q, q.shape[1]), np.float32)
    for start in range(0, n_k, block):
        keys = k[start:start + block]
        scores = np.zeros((n_q, keys.shape[0]), np.float32)
        for d in range(q.shape[1]):
            scores += q[:, d, None] * keys[None, :, d]
        scores *= scale
        new_max = np.maximum(running_max, scores.max(axis=1))
        alpha = exp2_nonpositive(running_max - new_max)
        running_max = new_max
        total *= alpha
        acc *= alpha[:, None]
        weights = round_bf16(exp2_nonpositive(scores - new_max[:, None]))
        for j in range(keys.shape[0]):
            total += weights[:, j]
            acc += weights[:, j, None] * v[None, start + j, :]
    return to_bf16(acc / total[:, None])
