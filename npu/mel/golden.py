"""The mel kernel's integer arithmetic, bit for bit, in NumPy (vectorised over frames).

``kernel_frames`` computes exactly what ``kernels/mel/mel_kernel.cc`` writes for each frame:
int32 log10 of the mel band energies in Q(MEL_OUT_FRAC_BITS). Every step is an integer operation
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
    tw = tables.twiddles(config).astype(np.int64)
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


def _cmul(ar, ai, wr, wi, frac_bits: int):
    """Complex multiply by a fixed-point twiddle, each part rounded half up (the kernel's srs)."""
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
            tr, ti = _cmul(re[:, m], im[:, m], wr[m - 1], wi[m - 1], frac)
            out_re += tr
            out_im += ti
        re = out_re.reshape(frames, subs, radix * length)
        im = out_im.reshape(frames, subs, radix * length)
    return re.reshape(frames, half), im.reshape(frames, half)


def _config_key(config: dict) -> tuple:
    return tuple(sorted(config.items()))


def window_exponent(products: np.ndarray, align: np.ndarray, config: dict) -> np.ndarray:
    """Each frame's block-floating-point exponent s >= 0 (int64 [F]) from its products
    ``sample * window`` (int64 [F, N_FFT]) and their alignment shifts (block gain minus the
    frame's lowest): shifted right by s, their aligned absolute sum - a bound on every value of
    the FFT - stays below 2^SPECTRUM_BITS however quiet the frame is."""
    total = (np.abs(products) >> align).sum(axis=1)
    return np.maximum(bit_length(total) - config["SPECTRUM_BITS"], 0)


def power_spectrum(frames: np.ndarray, gains: np.ndarray,
                   config: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|2X[k]|^2 for k in 0..N_FFT/2 as int64 [F, N_BINS] from int16 frames [F, N_FFT] whose
    samples carry the gain exponents ``gains`` [F, N_FFT] (clamped), the frames' window
    exponents s and reference gains r (the power is that of the frame's float samples times
    2^(2r - 2s))."""
    reference = gains.min(axis=1)
    align = gains - reference[:, None]
    product = frames.astype(np.int64) * tables.hann_window(config).astype(np.int64)
    exponent = window_exponent(product, align, config)
    right = exponent[:, None] + align
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    windowed = (product + half) >> right
    zr, zi = _fft200(windowed[:, 0::2], windowed[:, 1::2], config)
    half = config["HALF_FFT"]
    k = np.arange(config["N_BINS"])
    ar, ai = zr[:, k % half], zi[:, k % half]
    br, bi = zr[:, (half - k) % half], -zi[:, (half - k) % half]
    tw = tables.twiddles(config).astype(np.int64)
    # O = -i (a - b); 2X = (a + b) + W^k O
    tr, ti = _cmul(ai - bi, -(ar - br), tw[k, 0], tw[k, 1], config["TWIDDLE_FRAC_BITS"])
    xr, xi = ar + br + tr, ai + bi + ti
    return xr * xr + xi * xi, exponent, reference


def bit_length(values: np.ndarray) -> np.ndarray:
    """Exact bit length of non-negative int64/uint64 values (0 for 0), like 64 - clz."""
    remaining = values.astype(np.uint64)
    length = np.zeros(values.shape, dtype=np.int64)
    for step in _BITLEN_STEPS:
        big = remaining >= np.uint64(1 << step)
        length += np.where(big, step, 0)
        remaining = np.where(big, remaining >> np.uint64(step), remaining)
    return length + (remaining > 0)


def log10_q(acc: np.ndarray, exponent: np.ndarray, config: dict) -> np.ndarray:
    """The kernel's log: leading-zero count + table + interpolation -> int32 log10 in
    Q(OUT_FRAC_BITS) of ``acc * 2^exponent`` (both [F, n_mels])."""
    table = tables.log2_table(config).astype(np.int64)
    table_bits, frac_bits = config["LOG2_TABLE_BITS"], config["LOG2_FRAC_BITS"]
    top = bit_length(acc) - 1
    safe_top = np.maximum(top, 0).astype(np.uint64)
    mantissa = acc.astype(np.uint64) << (np.uint64(63) - safe_top)
    index = ((mantissa >> np.uint64(63 - table_bits)) & np.uint64((1 << table_bits) - 1))
    index = index.astype(np.int64)
    frac = ((mantissa >> np.uint64(63 - table_bits - 16)) & np.uint64(0xFFFF)).astype(np.int64)
    lo, hi = table[index], table[index + 1]
    log2 = ((top + exponent) << frac_bits) + lo + (((hi - lo) * frac + (1 << 15)) >> 16)
    shift = frac_bits + 24 - config["OUT_FRAC_BITS"]
    log10 = (log2 * config["LOG10_OF_2_Q24"] + (1 << (shift - 1))) >> shift
    return np.where(acc == 0, config["OUT_FLOOR"], log10).astype(np.int32)


def band_energies(power: np.ndarray, n_mels: int, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each band's weighted sum (uint64 [F, n_mels]) after shifting its bins right, rounded, by
    the band's exponent (int64 [F, n_mels]) so that the largest fits MEL_POWER_BITS bits."""
    filters = tables.sparse_filters(n_mels, config)
    energy = np.zeros((power.shape[0], n_mels), np.uint64)
    exponent = np.zeros((power.shape[0], n_mels), np.int64)
    for band, (start, count, offset) in enumerate(
            zip(filters.starts, filters.counts, filters.offsets)):
        bins = power[:, start:start + count]
        shift = np.maximum(bit_length(bins.max(axis=1, initial=0)) - config["POWER_BITS"], 0)
        half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
        scaled = ((bins + half[:, None]) >> shift[:, None]).astype(np.uint64)
        energy[:, band] = scaled @ filters.coefs[offset:offset + count].astype(np.uint64)
        exponent[:, band] = shift
    return energy, exponent


def kernel_frames(frames: np.ndarray, gains: np.ndarray, n_mels: int) -> np.ndarray:
    """int16 frames [F, N_FFT] with their samples' gain exponents [F, N_FFT] -> the kernel's
    int32 log10 mel [F, n_mels]."""
    config = tables.read_config()
    power, window_shift, reference = power_spectrum(frames, gains, config)
    energy, band_shift = band_energies(power, n_mels, config)
    exponent = (band_shift + 2 * (window_shift - reference)[:, None]
                - config["FILTER_FRAC_BITS"] - config["POWER_SCALE_LOG2"])
    return log10_q(energy, exponent, config)


def kernel_call(samples: np.ndarray, n_frames: int, n_mels: int,
                block_frames: int = 4096) -> np.ndarray:
    """What one kernel call writes: ``samples`` is the int16 input of ``n_frames + 2`` blocks
    (each a gain exponent, then HOP samples: ``mel_config.h``), frame f reads blocks f, f + 1
    and the start of f + 2; returns int32 [n_frames, n_mels]."""
    config = tables.read_config()
    hop, n_fft, words = config["HOP"], config["N_FFT"], tables.block_words(config)
    n_blocks = tables.input_blocks(n_frames)
    needed = n_blocks * words
    if samples.dtype != np.int16 or samples.ndim != 1 or samples.size < needed:
        raise ValueError(f"need >= {needed} int16 values for {n_frames} frames")
    blocks = samples[:needed].reshape(n_blocks, words)
    gains = np.clip(blocks[:, 0].astype(np.int64), config["HOST_MIN_GAIN_LOG2"],
                    config["HOST_MAX_GAIN_LOG2"])
    signal = blocks[:, 1:].reshape(-1)
    sample_gains = np.repeat(gains, hop)
    frames = np.lib.stride_tricks.sliding_window_view(signal, n_fft)[::hop][:n_frames]
    frame_gains = np.lib.stride_tricks.sliding_window_view(sample_gains, n_fft)[::hop][:n_frames]
    return np.concatenate([kernel_frames(frames[i:i + block_frames],
                                         frame_gains[i:i + block_frames], n_mels)
                           for i in range(0, n_frames, block_frames)])
