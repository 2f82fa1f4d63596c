"""The mel kernel's integer arithmetic, bit for bit, in NumPy (vectorised over frames).

``kernel_frames`` computes exactly what ``kernels/mel/mel_kernel.cc`` writes for each frame:
int16 log10 of the mel band energies in Q(MEL_OUT_FRAC_BITS). Every step is an integer operation
with the kernel's widths and rounding; products of the twiddle multiplies are rounded one by
one and summed exactly, so the order of summation cannot change a bit.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from npu.mel import tables

_BITLEN_STEPS = (32, 16, 8, 4, 2, 1)


@cache
def _fft_stages(config_key: tuple) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per radix (innermost first): the merged twiddles W_L'^(m*k) for m >= 1 as [r-1, r, L]."""
    config = tables.read_config()
    n_fft, half = config["N_FFT"], config["HALF_FFT"]
    tw = tables.twiddles_q15(config).astype(np.int64)
    stages, length = [], 1
    for radix in config["RADICES"]:
        combined = length * radix
        m = np.arange(1, radix)[:, None, None]
        k = (np.arange(radix)[None, :, None] * length + np.arange(length)[None, None, :])
        index = ((m * k) % combined) * (n_fft // combined)
        stages.append((radix, tw[index, 0], tw[index, 1]))
        length = combined
    assert length == half
    return stages


def _cmul_q15(ar, ai, wr, wi, frac_bits: int):
    """Complex multiply by a Q15 twiddle, each part rounded half up (the kernel's srs)."""
    half = 1 << (frac_bits - 1)
    return (ar * wr - ai * wi + half) >> frac_bits, (ar * wi + ai * wr + half) >> frac_bits


def _fft200(zr: np.ndarray, zi: np.ndarray, config: dict):
    """Mixed-radix decimation-in-time FFT over the last axis; int64 in, int64 out."""
    frames, half = zr.shape
    frac = config["TWIDDLE_FRAC_BITS"]
    re, im = zr.reshape(frames, half, 1), zi.reshape(frames, half, 1)
    for radix, wr, wi in _fft_stages(_config_key(config)):
        subs, length = re.shape[1] // radix, re.shape[2]
        re = re.reshape(frames, radix, subs, 1, length)
        im = im.reshape(frames, radix, subs, 1, length)
        out_re = np.repeat(re[:, 0], radix, axis=2)
        out_im = np.repeat(im[:, 0], radix, axis=2)
        for m in range(1, radix):
            tr, ti = _cmul_q15(re[:, m], im[:, m], wr[m - 1], wi[m - 1], frac)
            out_re += tr
            out_im += ti
        re = out_re.reshape(frames, subs, radix * length)
        im = out_im.reshape(frames, subs, radix * length)
    return re.reshape(frames, half), im.reshape(frames, half)


def _config_key(config: dict) -> tuple:
    return tuple(sorted(config.items()))


def power_spectrum(frames: np.ndarray, config: dict) -> np.ndarray:
    """|2X[k]|^2 for k in 0..N_FFT/2 as int64 [F, N_BINS], from int16 frames [F, N_FFT]."""
    window = tables.hann_q15(config).astype(np.int64)
    shift = config["WINDOW_SHIFT"]
    windowed = (frames.astype(np.int64) * window + (1 << (shift - 1))) >> shift
    zr, zi = _fft200(windowed[:, 0::2], windowed[:, 1::2], config)
    half = config["HALF_FFT"]
    k = np.arange(config["N_BINS"])
    ar, ai = zr[:, k % half], zi[:, k % half]
    br, bi = zr[:, (half - k) % half], -zi[:, (half - k) % half]
    tw = tables.twiddles_q15(config).astype(np.int64)
    # O = -i (a - b); 2X = (a + b) + W^k O
    tr, ti = _cmul_q15(ai - bi, -(ar - br), tw[k, 0], tw[k, 1], config["TWIDDLE_FRAC_BITS"])
    xr, xi = ar + br + tr, ai + bi + ti
    return xr * xr + xi * xi


def bit_length(values: np.ndarray) -> np.ndarray:
    """Exact bit length of non-negative int64/uint64 values (0 for 0), like 64 - clz."""
    remaining = values.astype(np.uint64)
    length = np.zeros(values.shape, dtype=np.int64)
    for step in _BITLEN_STEPS:
        big = remaining >= np.uint64(1 << step)
        length += np.where(big, step, 0)
        remaining = np.where(big, remaining >> np.uint64(step), remaining)
    return length + (remaining > 0)


@cache
def _dense_filters(n_mels: int) -> np.ndarray:
    config = tables.read_config()
    filters = tables.sparse_filters(n_mels, config)
    dense = np.zeros((config["N_BINS"], n_mels), dtype=np.int64)
    for band, (start, count, offset) in enumerate(
            zip(filters.starts, filters.counts, filters.offsets)):
        dense[start:start + count, band] = filters.coefs[offset:offset + count]
    return dense


def log10_q(acc: np.ndarray, frame_shift: np.ndarray, config: dict) -> np.ndarray:
    """The kernel's log: leading-zero count + table + interpolation -> int16 log10 Q10."""
    table = tables.log2_table(config).astype(np.int64)
    table_bits, frac_bits = config["LOG2_TABLE_BITS"], config["LOG2_FRAC_BITS"]
    top = bit_length(acc) - 1
    safe_top = np.maximum(top, 0).astype(np.uint64)
    mantissa = acc.astype(np.uint64) << (np.uint64(63) - safe_top)
    index = ((mantissa >> np.uint64(63 - table_bits)) & np.uint64((1 << table_bits) - 1))
    index = index.astype(np.int64)
    frac = ((mantissa >> np.uint64(63 - table_bits - 16)) & np.uint64(0xFFFF)).astype(np.int64)
    lo, hi = table[index], table[index + 1]
    log2 = (top << frac_bits) + lo + (((hi - lo) * frac + (1 << 15)) >> 16)
    exponent = frame_shift[:, None] - config["FILTER_FRAC_BITS"] - config["POWER_SCALE_LOG2"]
    log2 = log2 + (exponent << frac_bits)
    shift = frac_bits + 24 - config["OUT_FRAC_BITS"]
    log10 = (log2 * config["LOG10_OF_2_Q24"] + (1 << (shift - 1))) >> shift
    log10 = np.clip(log10, -32768, 32767)
    return np.where(acc == 0, config["OUT_FLOOR"], log10).astype(np.int16)


def kernel_frames(frames: np.ndarray, n_mels: int) -> np.ndarray:
    """int16 frames [F, N_FFT] -> the kernel's int16 log10 mel [F, n_mels]."""
    config = tables.read_config()
    power = power_spectrum(frames, config)
    shift = np.maximum(bit_length(power.max(axis=1)) - config["POWER_BITS"], 0)
    scaled = power >> shift[:, None]
    acc = scaled @ _dense_filters(n_mels)
    return log10_q(acc, shift, config)


def kernel_call(samples: np.ndarray, n_frames: int, n_mels: int,
                block_frames: int = 4096) -> np.ndarray:
    """What one kernel call writes: ``samples`` is the int16 padded signal, frame f reads
    ``samples[f*HOP : f*HOP + N_FFT]``; returns int16 [n_frames, n_mels]."""
    config = tables.read_config()
    hop, n_fft = config["HOP"], config["N_FFT"]
    needed = (n_frames - 1) * hop + n_fft
    if samples.dtype != np.int16 or samples.ndim != 1 or samples.size < needed:
        raise ValueError(f"need >= {needed} int16 samples for {n_frames} frames")
    frames = np.lib.stride_tricks.sliding_window_view(samples[:needed], n_fft)[::hop]
    return np.concatenate([kernel_frames(frames[i:i + block_frames], n_mels)
                           for i in range(0, n_frames, block_frames)])
