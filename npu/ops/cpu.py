"""Transformer operations on the CPU: exact-erf GELU and scaled dot-product attention.

These are the CPU implementations behind ``UnifiedNPURuntime.gelu`` / ``.attention``. They keep
the input's floating dtype (float32 stays float32) and follow PyTorch's semantics
(``torch.nn.functional.gelu(approximate="none")`` and ``scaled_dot_product_attention``).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special


def _as_float(x: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(x)
    if np.issubdtype(array.dtype, np.floating):
        return array
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return array.astype(np.float32)
    raise ValueError(f"{what} must be real numbers, got dtype {array.dtype}")


def gelu(x: np.ndarray) -> np.ndarray:
    """``x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))``, the exact (not tanh) GELU."""
    values = _as_float(x, "x")
    dtype = values.dtype.type
    out = scipy.special.erf(values * dtype(1.0 / math.sqrt(2.0)))
    out += dtype(1.0)
    out *= values
    out *= dtype(0.5)
    return out


def attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """``softmax(q @ k^T / sqrt(d) + mask) @ v`` over ``[..., seq, dim]`` arrays.

    ``mask`` broadcasts to ``[..., q_len, k_len]``: a boolean mask keeps the positions that are
    True (as PyTorch's), a float mask is added to the scores. A query row with every key masked
    has no defined softmax and is rejected.
    """
    q, k, v = (_as_float(a, name) for a, name in ((q, "q"), (k, "k"), (v, "v")))
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError("q, k and v must be at least 2-D: [..., seq, dim]")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dimension, got {q.shape} and {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must share the sequence length, got {k.shape} and {v.shape}")
    dtype = np.result_type(q, k, v)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)).astype(dtype, copy=False)
    scores *= dtype.type(1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            scores = np.where(mask, scores, dtype.type(-np.inf))
        else:
            scores = scores + mask.astype(dtype, copy=False)
    row_max = scores.max(axis=-1, keepdims=True)
    if not np.isfinite(row_max).all():
        raise ValueError("a query row has no finite score: every key masked, or NaN/inf input")
    scores -= row_max
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return np.matmul(scores, v).astype(dtype, copy=False)


class CpuGeluBackend:
    """The runtime's CPU GELU back-end (the last resort of its GELU tiers)."""

    name = "cpu"

    def gelu(self, x: np.ndarray) -> np.ndarray:
        return gelu(x)

    def close(self) -> None:
        """Nothing to release."""


class CpuAttentionBackend:
    """The runtime's CPU attention back-end (the last resort, and every masked call)."""

    name = "cpu"

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                  mask: np.ndarray | None = None) -> np.ndarray:
        return attention(q, k, v, mask)

    def close(self) -> None:
        """Nothing to release."""
