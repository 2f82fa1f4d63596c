"""CPU GELU and attention against math.erf and PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from npu.ops.cpu import attention, gelu


def test_gelu_matches_math_erf_in_float64():
    x = np.linspace(-8, 8, 401)
    expected = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(gelu(x), expected, rtol=1e-14, atol=1e-15)


def test_gelu_matches_torch_exact_gelu_in_float32():
    x = np.random.default_rng(0).standard_normal((4, 33, 17)).astype(np.float32) * 4
    ours = gelu(x)
    assert ours.dtype == np.float32 and ours.shape == x.shape
    np.testing.assert_allclose(ours, F.gelu(torch.from_numpy(x), approximate="none").numpy(), rtol=2e-6, atol=1e-6)


def test_gelu_rejects_non_numbers():
    with pytest.raises(ValueError):
        gelu(np.array(["a"]))


def _torch_sdpa(q, k, v, mask=None):
    t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))
    return F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(mask)).numpy()


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_attention_matches_torch(mask_kind):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 3, 5, 16))
    k = rng.standard_normal((2, 3, 7, 16))
    v = rng.standard_normal((2, 3, 7, 9))
    mask = None
    if mask_kind == "bool":
        mask = rng.random((5, 7)) > 0.4
        mask[:, 0] = True
    elif mask_kind == "float":
        mask = rng.standard_normal((2, 1, 5, 7))
    ours = attention(q, k, v, mask)
    assert ours.shape == (2, 3, 5, 9) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, _torch_sdpa(q, k, v, mask), rtol=1e-10, atol=1e-12)


def test_attention_float32_matches_torch():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((4, 10, 32)).astype(np.float32) for _ in range(3))
    ours = attention(q, k, v)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, _torch_sdpa(q, k, v), rtol=1e-5, atol=1e-6)


def test_attention_rejects_fully_masked_rows_and_bad_shapes():
    q = np.ones((2, 4))
    with pytest.raises(ValueError, match="no finite score"):
        attention(q, q, q, np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="last dimension"):
        attention(q, np.ones((2, 3)), q)
    with pytest.raises(ValueError, match="sequence length"):
        attention(q, q, np.ones((3, 4)))
