"""Whisper's log-mel front-end on the CPU: WhisperX-exact, NumPy + Numba, no torch.

The computation is ``whisperx.audio.log_mel_spectrogram``: append ``padding`` zeros, reflect-pad
200 samples on both sides, periodic Hann window, 400-point real FFT every 160 samples (last frame
dropped), power, Slaney mel filters, ``log10(max(mel, 1e-10))``, clamp at the chunk's maximum
minus 8, then ``(x + 4) / 4``.

Speed comes from working on cache-sized blocks of frames read straight from the samples (no
padded copy of the audio, no windowed copy of each frame), from DUCC0's SIMD float64 FFT
(through rocket-fft, callable from compiled code) writing into reused buffers, from a compiled
kernel that windows, squares and sums each Slaney triangle over only the few bins it covers (~2%
of the dense filter product), and from sharing chunks of frames between the calling thread and a
persistent pool. Frames that read only the padding zeros WhisperX appends to a chunk skip the
FFT: their energy is the floor. FFT and filters for a whole chunk run in one compiled call
without the GIL, so the only Python per chunk is that call, the log and the peak, and the threads
run on separate cores.

The window is applied after the FFT: the periodic Hann window is ``0.5 - 0.5 cos(2 pi j / 400)``,
three Fourier terms, so the windowed spectrum is ``0.5 X[k] - 0.25 (X[k-1] + X[k+1])`` of the
plain frame's, in float64. With the float64 FFT that keeps ours within ~2e-7 of the exact maths;
what remains against WhisperX (up to ~3e-5 on loud speech) is WhisperX's own float32 STFT.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from rocket_fft import r2c

from npu.audio_spec import (
    DYNAMIC_RANGE_LOG10,
    HOP_LENGTH,
    LOG_FLOOR,
    N_FFT,
    N_FREQ_BINS,
    REFLECT_PAD,
)
from npu.backend import MelBackend
from npu.config import check_n_mels, naming_chunk, validate_audio, validate_chunks
from npu.mel.slaney import slaney_filters

BLOCK_FRAMES = 128
"""Frames per block: its samples, spectrum and power (~0.5 MB) stay in L2."""
CHUNK_BLOCKS = 4
"""Blocks per unit of work a thread claims: small enough that a core slowed by other processes
hands its share to the other, large enough that claiming costs nothing measurable."""
CHUNK_FRAMES = BLOCK_FRAMES * CHUNK_BLOCKS
CLAMP_ROWS = 16
"""Mel rows per unit of the clamp: a 30 s chunk's 80 rows are five units (~190 kB each), so a
batch's clamps, memory-bound, spread over the threads too."""
FFT_AXES = np.array([1], dtype=np.int64)
"""The axis ``r2c`` transforms: each row of a block is one frame."""


@functools.cache
def mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-scale, Slaney-normalised filters ``[n_mels, 201]`` as ``librosa.filters.mel``.

    Computed in float64 with librosa's arithmetic and rounded to float32, like the
    ``mel_filters.npz`` WhisperX ships. Read-only: the array is shared.
    """
    check_n_mels(n_mels)
    filters = slaney_filters(n_mels).astype(np.float32)
    filters.flags.writeable = False
    return filters


@functools.cache
def _filter_bands(n_mels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each filter's non-zero bins ``[starts[m], stops[m])`` and the (float32) filters.

    A Slaney triangle spans a few to ~15 of the 201 bins, so summing only over its band does
    ~2% of the dense product's work.
    """
    filters = mel_filters(n_mels)
    nonzero = filters != 0
    starts = nonzero.argmax(axis=1)
    stops = N_FREQ_BINS - nonzero[:, ::-1].argmax(axis=1)
    return starts.astype(np.int64), stops.astype(np.int64), filters


@numba.njit(nogil=True, cache=True)
def _padded_sample(samples, total, i):  # pragma: no cover - compiled
    """Sample ``i`` of ``concat(samples, zeros)`` (``total`` long) reflect-padded by 200
    (``i`` counts from the first real sample); ``total > 200`` so one reflection suffices."""
    if i < 0:
        i = -i
    elif i >= total:
        i = 2 * (total - 1) - i
    return samples[i] if i < samples.shape[0] else np.float32(0.0)


@numba.njit(nogil=True, cache=True)
def _block_samples(samples, total, first_frame, count, buffer):  # pragma: no cover - compiled
    """The samples frames ``first_frame ...`` (``count`` of them) read, in float64: the
    ``160 (count - 1) + 400`` from ``160 first_frame - 200`` of the padded signal, copied into
    the start of ``buffer`` (only a block at either end of the audio needs the padding rules)."""
    start = first_frame * HOP_LENGTH - REFLECT_PAD
    block = buffer[: HOP_LENGTH * (count - 1) + N_FFT]
    if start >= 0 and start + block.shape[0] <= samples.shape[0]:
        source = samples[start : start + block.shape[0]]  # a view: indexing it from 0 vectorises
        for i in range(block.shape[0]):
            block[i] = source[i]
    else:
        for i in range(block.shape[0]):
            block[i] = _padded_sample(samples, total, start + i)
    return block


@numba.njit(nogil=True, cache=True)
def _mel_power(spectrum_t, starts, stops, filters, floor, power_t, acc, mel):  # pragma: no cover
    """``mel = maximum(filters @ |hann(spectrum)|^2, floor)`` for a block of unwindowed frames'
    spectra laid out bin-major (``spectrum_t[k, n]``, as the FFT writes it), so every loop runs
    over frames, contiguous, and vectorises.

    The window: ``0.5 X[k] - 0.25 (X[k-1] + X[k+1])``, with ``X[-1] = conj(X[1])`` and
    ``X[201] = conj(X[199])`` (a real frame's spectrum is conjugate-symmetric). The power is
    rounded to float32 and each filter summed in float32 over only its band, as WhisperX's
    float32 filter product does: a relative error of a few 1e-7 in the mel energy, ~3e-8 in the
    normalised output.
    """
    n_frames = spectrum_t.shape[1]
    last = spectrum_t.shape[0] - 1
    for k in range(last + 1):
        here = spectrum_t[k]
        below = spectrum_t[abs(k - 1)]
        above = spectrum_t[k + 1 if k < last else k - 1]
        below_sign = -1.0 if k == 0 else 1.0
        above_sign = -1.0 if k == last else 1.0
        power_row = power_t[k]
        for n in range(n_frames):
            re = 0.5 * here[n].real - 0.25 * (below[n].real + above[n].real)
            im = 0.5 * here[n].imag - 0.25 * (below_sign * below[n].imag
                                              + above_sign * above[n].imag)
            power_row[n] = np.float32(re * re + im * im)
    for m in range(starts.shape[0]):
        acc[:] = np.float32(0.0)
        for k in range(starts[m], stops[m]):
            weight = filters[m, k]
            power_row = power_t[k]
            for n in range(n_frames):
                acc[n] += weight * power_row[n]
        for n in range(n_frames):
            mel[m, n] = max(acc[n], floor)  # NaN stays NaN: bad input shows


@numba.njit(nogil=True, cache=True)
def _mel_frames(samples, total, first_frame, starts, stops, filters, floor,
                block_buffer, spectrum_t, power_t, acc, mel):  # pragma: no cover - compiled
    """``mel[:, n] = maximum(filters @ |rfft(hann * frame(first_frame + n))|^2, floor)`` in
    blocks of ``acc.shape[0]`` frames, all without the GIL.

    The FFT runs in float64: WhisperX's own float32 FFT (MKL, through torch) is up to ~3e-5
    (normalised units) away from the exact value on loud speech, so a second float32 FFT with
    different rounding would add its own error on top; float64 keeps ours on the exact value.
    It reads each frame in place from the block's samples (overlapping rows of one buffer).
    """
    n_frames = mel.shape[1]
    silent_start, silent_stop = _padding_frames(samples.shape[0], total, first_frame, n_frames)
    for start, stop in ((0, silent_start), (silent_stop, n_frames)):
        for block_start in range(start, stop, acc.shape[0]):
            count = min(acc.shape[0], stop - block_start)
            block = _block_samples(samples, total, first_frame + block_start, count, block_buffer)
            frames = np.lib.stride_tricks.sliding_window_view(block, N_FFT)[::HOP_LENGTH]
            block_spectrum_t = spectrum_t[: N_FREQ_BINS * count].reshape(N_FREQ_BINS, count)
            r2c(frames, block_spectrum_t.T, FFT_AXES, True, 1.0, 1)
            block_power_t = power_t[: N_FREQ_BINS * count].reshape(N_FREQ_BINS, count)
            _mel_power(block_spectrum_t, starts, stops, filters, floor, block_power_t,
                       acc[:count], mel[:, block_start : block_start + count])
    mel[:, silent_start:silent_stop] = floor


@numba.njit(nogil=True, cache=True)
def _padding_frames(n_samples, total, first_frame, n_frames):  # pragma: no cover - compiled
    """The frames ``[a, b)`` (of the ``n_frames`` from ``first_frame``) that read only the
    padding zeros: their spectrum is exactly 0, so their mel energy is ``floor`` with no FFT.

    WhisperX pads every chunk to 30 s, so a 10 s request is two-thirds padding. Frame ``f``
    reads samples ``[160 f - 200, 160 f + 200)``: wholly padding from
    ``ceil((n_samples + 200) / 160)`` while it ends within ``total``.
    """
    first_silent = -(-(n_samples + REFLECT_PAD) // HOP_LENGTH)
    last_silent = (total + REFLECT_PAD - N_FFT) // HOP_LENGTH
    a = min(max(first_silent - first_frame, 0), n_frames)
    b = min(max(last_silent + 1 - first_frame, a), n_frames)
    return a, b


@numba.njit(nogil=True, cache=True)
def _clamp_and_scale_rows(rows, floor):  # pragma: no cover - compiled
    """In place: ``(max(x, floor) + 4) / 4`` (the division by 4 is exact as a multiply)."""
    for m in range(rows.shape[0]):
        row = rows[m]
        for n in range(row.shape[0]):
            row[n] = (max(row[n], floor) + np.float32(4.0)) * np.float32(0.25)


class _BlockScratch:
    """One thread's buffers for a block of frames (reused across its blocks and chunks)."""

    def __init__(self) -> None:
        self.samples = np.empty(HOP_LENGTH * (BLOCK_FRAMES - 1) + N_FFT, dtype=np.float64)
        self.spectrum_t = np.empty(N_FREQ_BINS * BLOCK_FRAMES, dtype=np.complex128)
        self.power_t = np.empty(N_FREQ_BINS * BLOCK_FRAMES, dtype=np.float32)
        self.acc = np.empty(BLOCK_FRAMES, dtype=np.float32)


def _log_mel_frames(
    samples: np.ndarray, total: int, first_frame: int, out: np.ndarray, scratch: _BlockScratch
) -> np.float32:
    """Write ``log10(max(mel, 1e-10))`` of frames ``first_frame...`` into ``out``.

    ``samples`` are the audio before padding, ``total`` its length with the padding zeros, and
    ``out`` is ``[n_mels, n]`` (a column slice of the result). Returns the maximum of ``out``
    (NaN if any value is NaN). The log is NumPy's SIMD float32 log10, in place.
    """
    starts, stops, filters = _filter_bands(out.shape[0])
    _mel_frames(samples, total, first_frame, starts, stops, filters, LOG_FLOOR, scratch.samples,
                scratch.spectrum_t, scratch.power_t, scratch.acc, out)
    np.log10(out, out=out)
    return out.max()


def _clamp_floor(peak: np.float32) -> np.float32:
    """The lower bound ``max - 8`` from the chunk's peak; a non-finite peak means bad input."""
    if not np.isfinite(peak):
        raise ValueError("audio must be finite: it contains NaN/inf or values that overflow")
    return peak - np.float32(DYNAMIC_RANGE_LOG10)


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """Whisper's normalised log-mel features, float32 ``[n_mels, (len(audio) + padding) // 160]``.

    Same contract and values as ``whisperx.audio.log_mel_spectrogram(audio, n_mels, padding)``,
    on the calling thread only; :class:`CpuMelBackend` spreads the work over all cores.
    """
    check_n_mels(n_mels)
    samples = validate_audio(audio, padding)
    n_frames = (samples.size + padding) // HOP_LENGTH
    out = np.empty((n_mels, n_frames), dtype=np.float32)
    total = samples.size + int(padding)
    scratch = _BlockScratch()
    peaks = [
        _log_mel_frames(samples, total, a, out[:, a:b], scratch)
        for a, b in _ranges(n_frames, CHUNK_FRAMES)
    ]
    floor = _clamp_floor(np.max(peaks))
    _clamp_and_scale_rows(out, floor)
    return out


def _ranges(length: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, length)) for a in range(0, length, step)]


def default_worker_count() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class CpuMelBackend(MelBackend):
    """The CPU mel back-end: the blocks of one call run on ``workers`` cores at once.

    The calling thread and a persistent pool of ``workers - 1`` threads claim chunks of frames
    until none are left, so concurrent callers share the pool without any global lock.
    ``close()`` stops the pool.
    """

    name = "cpu"

    def __init__(self, n_mels: int = 80, workers: int | None = None) -> None:
        self.n_mels = check_n_mels(n_mels)
        self.workers = default_worker_count() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self._pool = (
            ThreadPoolExecutor(max_workers=self.workers - 1, thread_name_prefix="cpu-mel")
            if self.workers > 1
            else None
        )
        self._closed = False
        self._lock = threading.Lock()

    def log_mel(self, audio: np.ndarray, padding: int = 0) -> np.ndarray:
        return self.log_mel_batch([audio], [padding])[0]

    def log_mel_batch(self, chunks: Sequence[np.ndarray], paddings: Sequence[int]) -> np.ndarray:
        """``MelBackend.log_mel_batch`` in two hand-offs to the pool for the whole batch: every
        chunk's frame ranges in one :meth:`_share`, then every chunk's clamp (with its own
        floor) in rows of ``CLAMP_ROWS`` in another - not two per chunk."""
        samples, n_frames = validate_chunks(chunks, paddings)
        totals = [chunk.size + int(padding) for chunk, padding in zip(samples, paddings)]
        out = np.empty((len(samples), self.n_mels, n_frames), dtype=np.float32)
        frame_ranges = _ranges(n_frames, CHUNK_FRAMES)
        peaks = self._share(
            [(chunk, a, b) for chunk in range(len(samples)) for a, b in frame_ranges],
            lambda scratch, chunk, a, b: _log_mel_frames(samples[chunk], totals[chunk], a,
                                                         out[chunk, :, a:b], scratch),
            _BlockScratch,
        )
        floors = []
        for chunk in range(len(samples)):
            with naming_chunk(chunk, len(samples)):
                chunk_peaks = peaks[chunk * len(frame_ranges):(chunk + 1) * len(frame_ranges)]
                floors.append(_clamp_floor(np.max(chunk_peaks)))
        row_ranges = _ranges(self.n_mels, CLAMP_ROWS)
        self._share(
            [(chunk, m, n) for chunk in range(len(samples)) for m, n in row_ranges],
            lambda _, chunk, m, n: _clamp_and_scale_rows(out[chunk, m:n], floors[chunk]),
            lambda: None,
        )
        return out

    def _share(self, units: list[tuple[int, ...]], work, make_scratch) -> list:
        """``[work(scratch, *unit) for unit in units]``, the units claimed one at a time by
        the calling thread and up to ``workers - 1`` pool threads, each with its own scratch.

        Claiming (rather than a fixed split) lets a core that other processes slow down hand
        its share to the other, and lets concurrent callers run when the pool is busy.
        """
        results = [None] * len(units)
        claims = iter(range(len(units)))
        claim_lock = threading.Lock()

        def run() -> None:
            scratch = None
            while True:
                with claim_lock:
                    index = next(claims, None)
                if index is None:
                    return
                if scratch is None:
                    scratch = make_scratch()
                results[index] = work(scratch, *units[index])

        with self._lock:
            if self._closed:
                raise RuntimeError("CpuMelBackend is closed")
            helpers = min(self.workers, len(units)) - 1
            futures = [self._pool.submit(run) for _ in range(helpers)] if self._pool else []
        try:
            run()
        finally:
            # a helper not yet started would find nothing left to claim: cancel it rather than
            # wait for a thread wake-up (on a loaded machine, milliseconds per call)
            running = [future for future in futures if not future.cancel()]
            concurrent.futures.wait(running)
        for future in running:
            future.result()
        return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> CpuMelBackend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
