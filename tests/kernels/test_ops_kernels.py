"""The GELU and attention kernels: host builds (ctypes) equal the golden models bit for bit, and
both are within their stated error of exact GELU / float64 attention."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from npu.kernel_lib import host_attention, host_gelu
from npu.ops import golden, tables
from npu.ops.golden import (
    ATTENTION_MAX_ERR_OVER_MAX_V,
    ATTENTION_WEIGHTS_ERR,
    GELU_APPROX_ERR,
    GELU_MAX_ABS_ERR,
)

ALL_BF16 = np.arange(1 << 16, dtype=np.uint16)


@pytest.fixture(scope="module")
def gelu_kernel():
    return host_gelu()


@pytest.fixture(scope="module")
def attention_kernel():
    return host_attention()


def bf16(rng, shape, scale=1.0):
    return golden.to_bf16((rng.standard_normal(shape) * scale).astype(np.float32))


def exact_gelu(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + scipy.special.erf(x / np.sqrt(2.0)))


def exact_attention(q, k, v) -> np.ndarray:
    q, k, v = (golden.from_bf16(a).astype(np.float64) for a in (q, k, v))
    scores = q @ k.T / np.sqrt(q.shape[1])
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (weights / weights.sum(axis=1, keepdims=True)) @ v


def test_bf16_conversion_rounds_to_nearest_even():
    values = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20,
                       np.inf, -0.0], np.float32)
    expected = np.array([1.0, 1.0, 1.0 + 2 ** -6, 1.0 + 2 ** -7, np.inf, -0.0], np.float32)
    np.testing.assert_array_equal(golden.round_bf16(values), expected)
    assert np.isnan(golden.round_bf16(np.array([np.nan], np.float32)))[0]


def test_gelu_host_equals_golden_on_every_bf16_value(gelu_kernel):
    actual, expected = gelu_kernel(ALL_BF16), golden.gelu(ALL_BF16)
    differ = np.flatnonzero(actual != expected)
    assert differ.size == 0, f"{differ.size} inputs differ, first bits {ALL_BF16[differ[:5]]}"


def test_gelu_is_within_its_stated_error_of_exact_gelu(gelu_kernel):
    x = golden.from_bf16(ALL_BF16)
    finite = np.isfinite(x)
    ours = golden.from_bf16(gelu_kernel(ALL_BF16))[finite].astype(np.float64)
    exact = exact_gelu(x[finite])
    assert np.abs(ours - exact).max() <= GELU_MAX_ABS_ERR
    half_ulp = np.abs(golden.round_bf16(exact.astype(np.float32))).astype(np.float64) * 2.0 ** -8
    assert (np.abs(ours - exact) <= half_ulp + GELU_APPROX_ERR).all()


def test_gelu_special_values(gelu_kernel):
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 100.0, -100.0], np.float32)
    out = golden.from_bf16(gelu_kernel(golden.to_bf16(x)))
    np.testing.assert_array_equal(out[[0, 1, 3, 5, 6]], [np.inf, 0.0, 0.0, 100.0, 0.0])
    assert np.isnan(out[2])


def test_gelu_keeps_shape_and_refuses_non_bf16(gelu_kernel):
    bits = bf16(np.random.default_rng(1), (3, 5, 7))
    assert gelu_kernel(bits).shape == (3, 5, 7)
    with pytest.raises(ValueError, match="uint16"):
        gelu_kernel(np.zeros(4, np.float32))


@pytest.mark.parametrize("n_q, n_k", [(1500, 1500), (17, 65), (16, 64), (3, 1), (40, 1499)])
def test_attention_host_equals_golden(attention_kernel, n_q, n_k):
    rng = np.random.default_rng(n_q * 10_000 + n_k)
    q, k, v = bf16(rng, (n_q, 64)), bf16(rng, (n_k, 64)), bf16(rng, (n_k, 64))
    np.testing.assert_array_equal(attention_kernel(q, k, v), golden.attention(q, k, v))


def test_attention_host_equals_golden_on_peaked_scores(attention_kernel):
    """Large scores: most softmax weights underflow, the running maximum moves between blocks."""
    rng = np.random.default_rng(7)
    q, k = bf16(rng, (48, 64), 4.0), bf16(rng, (300, 64), 4.0)
    k[:, :] = k[np.argsort(rng.random(300))]
    v = bf16(rng, (300, 64), 10.0)
    out = attention_kernel(q, k, v)
    np.testing.assert_array_equal(out, golden.attention(q, k, v))
    error = np.abs(golden.from_bf16(out) - exact_attention(q, k, v)).max()
    assert error / np.abs(golden.from_bf16(v)).max() <= ATTENTION_MAX_ERR_OVER_MAX_V


@pytest.mark.parametrize("n_q, n_k", [(1500, 1500), (33, 200)])
def test_attention_is_within_its_stated_error_of_float64(attention_kernel, n_q, n_k):
    rng = np.random.default_rng(n_k)
    q, k, v = bf16(rng, (n_q, 64), 2.0), bf16(rng, (n_k, 64), 2.0), bf16(rng, (n_k, 64))
    exact = exact_attention(q, k, v)
    error = np.abs(golden.from_bf16(attention_kernel(q, k, v)) - exact)
    max_v = np.abs(golden.from_bf16(v)).max()
    assert error.max() / max_v <= ATTENTION_MAX_ERR_OVER_MAX_V
    half_ulp = np.abs(golden.round_bf16(exact.astype(np.float32))) * 2.0 ** -8
    assert (error <= half_ulp + ATTENTION_WEIGHTS_ERR * max_v).all()


def test_attention_refuses_what_the_design_cannot_take(attention_kernel):
    config = tables.attention_config()
    ok = np.zeros((4, config["HEAD_DIM"]), np.uint16)
    too_many = np.zeros((config["MAX_KEYS"] + 1, config["HEAD_DIM"]), np.uint16)
    with pytest.raises(ValueError, match="attention kernel takes"):
        attention_kernel(ok, too_many, too_many)
    with pytest.raises(ValueError, match="attention kernel takes"):
        attention_kernel(np.zeros((4, 32), np.uint16), ok, ok)
    with pytest.raises(ValueError, match="uint16"):
        attention_kernel(ok.astype(np.float32), ok, ok)


def test_exp2_matches_numpy_within_float32(attention_kernel):
    t = np.linspace(-125.0, 0.0, 100_001, dtype=np.float32)
    relative = np.abs(golden.exp2_nonpositive(t) / np.exp2(t.astype(np.float64)) - 1.0)
    assert relative.max() < 1e-6
    assert golden.exp2_nonpositive(np.array([0.0], np.float32))[0] == 1.0
    assert golden.exp2_nonpositive(np.array([-127.0, -1e30], np.float32)).tolist() == [0.0, 0.0]
