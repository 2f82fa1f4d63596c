"""The mel kernel's constants: read from ``kernels/mel/mel_config.h`` and turned into integer tables.

This is the one generator of the kernel's tables (Hann window, twiddles, sparse Slaney filters,
log2 table). The golden model imports it; the kernel build runs it as
``python -m npu.mel_tables --n-mels 80 --out FILE`` to write the C header it compiles against.
The filters follow ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=n)`` (Slaney mel scale,
Slaney area norm); a test checks them against librosa and WhisperX's stored filters.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from npu import audio_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_HEADER = REPO_ROOT / "kernels" / "mel" / "mel_config.h"
_DEFINE = re.compile(r"^#define\s+(MEL_\w+)\s+(.+?)\s*(?://.*)?$")


class MelConfigError(RuntimeError):
    """The kernel header is missing, malformed, or disagrees with ``npu/audio_spec.py``."""


@cache
def read_config(path: Path = CONFIG_HEADER) -> dict[str, int | tuple[int, ...]]:
    """Parse the header's ``#define MEL_X value`` lines and check them against ``audio_spec``."""
    if not path.is_file():
        raise MelConfigError(f"kernel config header not found: {path}")
    values: dict[str, int | tuple[int, ...]] = {}
    for line in path.read_text().splitlines():
        match = _DEFINE.match(line.strip())
        if not match:
            continue
        name, raw = match.group(1), match.group(2).strip("() ")
        numbers = tuple(int(part) for part in raw.split(","))
        values[name[len("MEL_"):]] = numbers if len(numbers) > 1 else numbers[0]
    _check_against_audio_spec(values)
    return values


def _check_against_audio_spec(config: dict) -> None:
    expected = {
        "SAMPLE_RATE": audio_spec.SAMPLE_RATE,
        "N_FFT": audio_spec.N_FFT,
        "HOP": audio_spec.HOP_LENGTH,
        "N_BINS": audio_spec.N_FREQ_BINS,
        "HALF_FFT": audio_spec.N_FFT // 2,
        "FRAMES_PER_CALL_BATCH": audio_spec.N_FRAMES,
    }
    for name, value in expected.items():
        if config.get(name) != value:
            raise MelConfigError(f"MEL_{name} is {config.get(name)} in the header, expected {value}")
    if int(np.prod(config["RADICES"])) != config["HALF_FFT"]:
        raise MelConfigError(f"MEL_RADICES {config['RADICES']} do not multiply to MEL_HALF_FFT")
    lowest = (config["OUT_FLOOR"] / 2 ** config["OUT_FRAC_BITS"]
              - 2 * config["HOST_MIN_GAIN_LOG2"] * np.log10(2))
    if lowest >= np.log10(audio_spec.LOG_FLOOR):
        raise MelConfigError("MEL_OUT_FLOOR does not map below Whisper's 1e-10 floor")
    for name in ("FRAMES_PER_CALL_BATCH", "FRAMES_PER_CALL_FRAME"):
        if config[name] % config["FRAMES_PER_OBJECT"]:
            raise MelConfigError(f"MEL_{name} is not a multiple of MEL_FRAMES_PER_OBJECT")


def object_samples(config: dict) -> int:
    """Samples in one input FIFO object: its frames plus the overlap the last frame reads."""
    return config["FRAMES_PER_OBJECT"] * config["HOP"] + config["N_FFT"] - config["HOP"]


def hann_q15(config: dict) -> np.ndarray:
    """Periodic Hann window (``torch.hann_window(400)``) in Q15, 1.0 saturated to 32767."""
    n = np.arange(config["N_FFT"])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / config["N_FFT"])
    return np.minimum(np.rint(window * 2 ** config["WINDOW_FRAC_BITS"]), 32767).astype(np.int16)


def twiddles_q15(config: dict) -> np.ndarray:
    """``exp(-2 pi i j / N_FFT)`` for j < N_FFT as int16 pairs [N_FFT, 2] (re, im), saturated."""
    angle = -2 * np.pi * np.arange(config["N_FFT"]) / config["N_FFT"]
    scaled = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 2 ** config["TWIDDLE_FRAC_BITS"]
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


def slaney_filters(n_mels: int, config: dict) -> np.ndarray:
    """``librosa.filters.mel(sr, n_fft, n_mels)`` (htk=False, norm='slaney') in float64."""
    sample_rate, n_fft = config["SAMPLE_RATE"], config["N_FFT"]
    fft_freqs = np.linspace(0, sample_rate / 2, config["N_BINS"])
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    assert n_fft // 2 + 1 == weights.shape[1]
    return weights


_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz):
    hz = np.asanyarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def _mel_to_hz(mel):
    mel = np.asanyarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


@dataclass(frozen=True)
class SparseFilters:
    """Each mel band as a run of consecutive bins: ``coefs[offsets[j] : offsets[j] + counts[j]]``
    weigh bins ``starts[j] ...``. Weights are ``round(w * 2^FILTER_FRAC_BITS)`` as uint16."""

    starts: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    coefs: np.ndarray


def sparse_filters(n_mels: int, config: dict) -> SparseFilters:
    if n_mels not in audio_spec.SUPPORTED_N_MELS:
        raise MelConfigError(f"n_mels must be one of {audio_spec.SUPPORTED_N_MELS}, got {n_mels}")
    quantised = np.rint(slaney_filters(n_mels, config) * 2 ** config["FILTER_FRAC_BITS"])
    if quantised.max() > 65535:
        raise MelConfigError("MEL_FILTER_FRAC_BITS too large: a filter weight exceeds uint16")
    starts, counts, coefs = [], [], []
    for row in quantised.astype(np.int64):
        nonzero = np.flatnonzero(row)
        start = int(nonzero[0]) if nonzero.size else 0
        stop = int(nonzero[-1]) + 1 if nonzero.size else 0
        starts.append(start)
        counts.append(stop - start)
        coefs.extend(row[start:stop])
    counts_arr = np.array(counts, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts_arr)[:-1]]).astype(np.int64)
    return SparseFilters(np.array(starts, np.int64), counts_arr, offsets,
                         np.array(coefs, dtype=np.uint16))


def log2_table(config: dict) -> np.ndarray:
    """``round(log2(1 + i / 2^bits) * 2^LOG2_FRAC_BITS)`` for i in 0..2^bits (one extra entry)."""
    size = 1 << config["LOG2_TABLE_BITS"]
    values = np.log2(1 + np.arange(size + 1) / size) * 2 ** config["LOG2_FRAC_BITS"]
    return np.rint(values).astype(np.int32)


def c_header(n_mels: int, config: dict) -> str:
    """The generated C header: every table the kernel reads, for one n_mels."""
    filters = sparse_filters(n_mels, config)
    tw = twiddles_q15(config)

    def array(ctype: str, name: str, values) -> str:
        body = ", ".join(str(int(v)) for v in np.ravel(values))
        return f"alignas(32) static const {ctype} {name}[{np.size(values)}] = {{{body}}};\n"

    return "".join([
        f"// Generated by `python -m npu.mel_tables --n-mels {n_mels}`. Do not edit.\n",
        "#pragma once\n#include <stdint.h>\n",
        f"#define MEL_N_MELS {n_mels}\n",
        f"#define MEL_N_COEFS {filters.coefs.size}\n",
        array("int16_t", "mel_window", hann_q15(config)),
        array("int16_t", "mel_twiddle_re", tw[:, 0]),
        array("int16_t", "mel_twiddle_im", tw[:, 1]),
        array("uint8_t", "mel_filter_start", filters.starts),
        array("uint8_t", "mel_filter_count", filters.counts),
        array("uint16_t", "mel_filter_offset", filters.offsets),
        array("uint16_t", "mel_filter_coef", filters.coefs),
        array("int32_t", "mel_log2_table", log2_table(config)),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write the mel kernel's generated table header")
    parser.add_argument("--n-mels", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(c_header(args.n_mels, read_config()))


if __name__ == "__main__":
    main()
