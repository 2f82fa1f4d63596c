"""``amanuensis bench mel``: our mel back-ends against librosa, WhisperX (torch) and
faster-whisper (NumPy) on the same audio, in one process, best of interleaved repeats.

Our NPU back-ends join the table when they open (a real device with built kernels). With
``--npu-host-only`` it also measures what the NPU path still costs the CPU - padding,
quantisation, the buffer copies to and from the device, normalisation: everything but the kernel
run, which is replayed from the golden model's answer - as CPU time (``time.process_time``, all
threads) per 30 s chunk, over our CPU back-end's CPU time on the same chunk:
``npu_host_cpu_ratio`` (goal <= 0.25: the NPU exists to free the CPU).

asrfront (C with SIMD and threads) is timed on three patterns: the audio as 30 s chunks (20 for
the default 600 s; one ``runtime.log_mel_batch`` call over them, as the engine makes one per
decode batch, against one ``asrfront.whisper.log_mel_batch`` call over the same chunks; our
former one call per chunk is reported beside it); the chunks the engine's default VAD really cuts
from the audio, each padded to 30 s (by both); and the whole signal in one call each. All report the max abs error against WhisperX and against a float64 reference of the same
maths (NumPy's FFT in float64), so an error against WhisperX can be told from WhisperX's own
float32 rounding."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np

from app.evaluation.corpus import SHARED_SPEECH_DIR, speech_files
from npu.audio_spec import HOP_LENGTH, N_FFT, SAMPLE_RATE

SETTLE_SECONDS = 0.3
"""Pause before each timed run: OpenBLAS (librosa's and faster-whisper's matrix products) and
OpenMP (torch) threads spin for ~0.1 s after their work, and a contestant timed inside that
window loses a core to the previous one (measured: ours 60 -> 86 ms right after faster-whisper)."""


def register(commands, bench) -> None:
    parser = bench.add_parser("mel", help="log-mel front-end throughput and error vs WhisperX")
    parser.add_argument("--seconds", type=float, default=600.0, help="audio length (default 600)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contestant")
    parser.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    parser.add_argument(
        "--audio", choices=("speech", "noise"), default="speech",
        help="tiled shared speech clips (noise if they are absent) or white noise",
    )
    parser.add_argument(
        "--every-file", action="store_true",
        help="also the max abs errors on every shared speech file and on noise, one by one",
    )
    parser.add_argument("--kernel-dir", type=Path, default=None,
                        help="NPU kernel artifacts directory (default kernels/build)")
    parser.add_argument(
        "--npu-host-only", action="store_true",
        help="also time the NPU path's host-side CPU work per 30 s chunk (no device needed)",
    )
    parser.set_defaults(handler=run)


def bench_audio(kind: str, seconds: float) -> tuple[np.ndarray, str]:
    """``seconds`` of 16 kHz audio: the shared speech clips end to end, repeated, or noise."""
    n = int(seconds * SAMPLE_RATE)
    if n <= 200:
        raise SystemExit("--seconds must give more than 200 samples")
    files = speech_files()
    if kind == "speech" and files:
        from app.transcription.audio import decode_file

        clips = []
        for path in files:
            clips.append(decode_file(path))
            if sum(c.size for c in clips) >= n:
                break
        return np.resize(np.concatenate(clips), n), f"speech ({SHARED_SPEECH_DIR})"
    noise = np.random.default_rng(0).standard_normal(n).astype(np.float32) * np.float32(0.1)
    return noise, "white noise"


def contestants(n_mels: int, kernel_dir: Path | None, stack: contextlib.ExitStack):
    """(name, is_ours, function audio -> float32 features); each peer returns Whisper's frames.
    Our runtime and back-ends are closed with ``stack``."""
    import librosa
    import torch
    import whisperx.audio
    from faster_whisper.feature_extractor import FeatureExtractor

    from app.settings import Settings
    from npu import UnifiedNPURuntime
    from npu.mel.cpu import log_mel_spectrogram

    settings = Settings()
    if kernel_dir is not None:
        settings = settings.model_copy(update={"kernel_dir": kernel_dir})
    runtime = stack.enter_context(UnifiedNPURuntime.from_config(settings.front_end_config(n_mels)))

    def librosa_features(audio):
        power = librosa.feature.melspectrogram(
            y=audio, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=n_mels,
            pad_mode="reflect"
        )[:, :-1]
        log = np.log10(np.maximum(power, 1e-10))
        return (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0

    extractor = FeatureExtractor(feature_size=n_mels)
    entries = [
        (f"amanuensis runtime ({runtime.mel_backend_name})", True, runtime.process_audio_to_features),
        ("amanuensis cpu, 1 thread", False, lambda a: log_mel_spectrogram(a, n_mels)),
        *npu_entries(runtime, stack),
        ("librosa", False, librosa_features),
        ("whisperx (torch)", False, lambda a: whisperx.audio.log_mel_spectrogram(torch.from_numpy(a), n_mels).numpy()),
        ("faster-whisper (numpy)", False, lambda a: extractor(a, padding=0)),
    ]
    return runtime, entries


def npu_entries(runtime, stack: contextlib.ExitStack) -> list:
    """Our NPU back-ends that open here (each tier on its own), closed with ``stack``."""
    from npu.backend import MelBackendError
    from npu.runtime import default_backend_factories

    entries = []
    for name, factory in default_backend_factories():
        try:
            backend = factory(runtime.config)
        except MelBackendError as error:
            print(f"{name}: not benchmarked ({error})")
            continue
        stack.callback(backend.close)
        entries.append((f"amanuensis {name}", False, backend.log_mel))
    return entries


def npu_host_seconds(chunk: np.ndarray, padding: int, n_mels: int, frames_per_call: int,
                     runs: int) -> float:
    """Least CPU time of ``runs`` of the NPU path's host side on one chunk: the kernel run is
    replayed from the golden model's answer, recorded beforehand; the copies into the input
    buffer object and out of the output one (what ``bo.write`` / ``bo.read`` do) are kept."""
    from npu.mel import golden, host

    recorded = []

    def recording_kernel(samples, count):
        recorded.append(golden.kernel_call(samples, frames_per_call, n_mels))
        return recorded[-1]

    host.log_mel(chunk, n_mels, padding, frames_per_call, recording_kernel)
    buffers = host.CallBuffers.for_frames(frames_per_call)
    device_in = np.empty_like(buffers.samples)
    calls = iter(())

    def replay(samples, count):
        np.copyto(device_in, samples)
        return next(calls).copy()

    best = float("inf")
    for _ in range(runs):
        calls = iter(recorded)
        started = time.process_time()
        host.log_mel(chunk, n_mels, padding, frames_per_call, replay, buffers)
        best = min(best, time.process_time() - started)
    return best


def cpu_backend_seconds(chunk: np.ndarray, padding: int, n_mels: int, runs: int) -> float:
    """Least CPU time (all threads) of ``runs`` of our CPU back-end on one chunk."""
    from npu.mel.cpu import CpuMelBackend

    with CpuMelBackend(n_mels) as backend:
        backend.log_mel(chunk, padding)
        best = float("inf")
        for _ in range(runs):
            started = time.process_time()
            backend.log_mel(chunk, padding)
            best = min(best, time.process_time() - started)
    return best


def npu_host_report(audio: np.ndarray, n_mels: int, repeats: int) -> dict:
    """``npu_host_cpu_ratio`` (batch tier) and the frame tier's, on the first 30 s chunk padded
    to 30 s as WhisperX pads it; each side the least of ``20 * repeats`` runs."""
    from npu import audio_spec
    from npu.mel.tables import read_config

    chunk = np.ascontiguousarray(audio[:audio_spec.N_SAMPLES])
    padding = audio_spec.N_SAMPLES - chunk.size
    runs = max(20, 20 * repeats)
    cpu = cpu_backend_seconds(chunk, padding, n_mels, runs)
    batch = npu_host_seconds(chunk, padding, n_mels, audio_spec.N_FRAMES, runs)
    frame = npu_host_seconds(chunk, padding, n_mels, read_config()["FRAMES_PER_CALL_FRAME"], runs)
    print(f"NPU path host-side CPU time per 30 s chunk: batch {batch * 1e3:.3f} ms, "
          f"frame {frame * 1e3:.3f} ms; our CPU back-end {cpu * 1e3:.3f} ms (CPU time, all threads)")
    return {
        "cpu_backend_cpu_ms_per_chunk": round(cpu * 1e3, 3),
        "npu_host_cpu_ms_per_chunk": round(batch * 1e3, 3),
        "npu_host_cpu_ratio": round(batch / cpu, 3),
        "npu_frame_host_cpu_ratio": round(frame / cpu, 3),
    }


def float64_log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """Whisper's log-mel of ``audio`` with every step in float64 (NumPy's FFT, the Slaney
    filters unrounded): the exact value both float32 implementations approximate."""
    from npu.mel.slaney import slaney_filters

    padded = np.pad(audio.astype(np.float64), 200, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160][: audio.size // 160]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    mel = slaney_filters(n_mels) @ (np.abs(np.fft.rfft(frames * window, axis=1)) ** 2).T
    log = np.log10(np.maximum(mel, 1e-10))
    return (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0


def best_seconds(functions: dict, repeats: int) -> dict[str, float]:
    """Least wall time of each function over ``repeats`` interleaved rounds (after one warm-up
    call each), with the settling pause before every run."""
    best = {name: float("inf") for name in functions}
    for round_ in range(max(1, repeats) + 1):
        for name, function in functions.items():
            time.sleep(SETTLE_SECONDS)
            started = time.perf_counter()
            function()
            if round_:
                best[name] = min(best[name], time.perf_counter() - started)
    return best


def vad_chunks(audio: np.ndarray) -> list[np.ndarray]:
    """``audio`` as the engine's default VAD hands it to the model: the speech chunks WhisperX
    merges (up to 30 s each), cut from the samples as WhisperX cuts them."""
    from app.transcription.vad import CHUNK_SECONDS, SileroOnnx

    vad = SileroOnnx()
    merged = vad.merge_chunks(vad({"waveform": audio, "sample_rate": SAMPLE_RATE}), CHUNK_SECONDS)
    return [audio[int(c["start"] * SAMPLE_RATE):int(c["end"] * SAMPLE_RATE)] for c in merged]


def asrfront_report(audio: np.ndarray, n_mels: int, repeats: int, runtime) -> dict:
    """Ours against asrfront on ``audio`` cut into 30 s chunks (the last one filled by repeating
    the audio) and on the whole of ``audio``; errors against WhisperX and against
    :func:`float64_log_mel`."""
    import asrfront.whisper
    import torch
    import whisperx.audio

    from npu import audio_spec
    from npu.config import whisper_windows

    n_chunks = -(-audio.size // audio_spec.N_SAMPLES)
    chunks = np.split(np.resize(audio, n_chunks * audio_spec.N_SAMPLES), n_chunks)
    signal = audio
    windows, paddings = whisper_windows(chunks)
    speech = vad_chunks(audio)
    speech_windows, speech_paddings = whisper_windows(speech)
    ours_chunks = lambda: runtime.log_mel_batch(windows, paddings).features
    ours_chunk_calls = lambda: [runtime.process_audio_to_features(c) for c in chunks]
    theirs_chunks = lambda: asrfront.whisper.log_mel_batch(chunks, n_mels)
    ours_long = lambda: runtime.process_audio_to_features(signal)
    theirs_long = lambda: asrfront.whisper.log_mel(signal, n_mels, pad_or_trim=False)
    contestants = {"ours chunks": ours_chunks, "ours chunk calls": ours_chunk_calls,
                   "asrfront chunks": theirs_chunks,
                   "ours long": ours_long, "asrfront long": theirs_long}
    if speech:  # noise may hold none
        contestants["ours vad chunks"] = lambda: runtime.log_mel_batch(speech_windows,
                                                                       speech_paddings)
        contestants["asrfront vad chunks"] = lambda: asrfront.whisper.log_mel_batch(speech, n_mels)
    best = best_seconds(contestants, repeats)
    whisperx_chunks = [whisperx.audio.log_mel_spectrogram(torch.from_numpy(c), n_mels).numpy()
                       for c in chunks]
    exact_chunks = [float64_log_mel(c, n_mels) for c in chunks]

    def worst(outputs, references) -> float:
        return max(float(np.abs(o - r).max()) for o, r in zip(outputs, references))

    errors = {
        "ours_vs_whisperx": worst(ours_chunks(), whisperx_chunks),
        "asrfront_vs_whisperx": worst(theirs_chunks(), whisperx_chunks),
        "ours_vs_exact": worst(ours_chunks(), exact_chunks),
        "asrfront_vs_exact": worst(theirs_chunks(), exact_chunks),
        "whisperx_vs_exact": worst(whisperx_chunks, exact_chunks),
        "ours_long_vs_whisperx": float(np.abs(ours_long() - whisperx.audio.log_mel_spectrogram(
            torch.from_numpy(signal), n_mels).numpy()).max()),
        "asrfront_long_vs_whisperx": float(np.abs(theirs_long() - whisperx.audio.log_mel_spectrogram(
            torch.from_numpy(signal), n_mels).numpy()).max()),
    }
    for name, seconds in best.items():
        print(f"{name:<32} {seconds * 1e3:>10.1f} ms")
    for name, error in errors.items():
        print(f"max abs err {name:<28} {error:.2e}")
    return {
        "chunk_count": n_chunks,
        "ours_chunks_ms": round(best["ours chunks"] * 1e3, 2),
        "ours_chunk_calls_ms": round(best["ours chunk calls"] * 1e3, 2),
        "asrfront_chunks_ms": round(best["asrfront chunks"] * 1e3, 2),
        "speedup_vs_asrfront_chunks": round(best["asrfront chunks"] / best["ours chunks"], 3),
        "ours_long_ms": round(best["ours long"] * 1e3, 2),
        "asrfront_long_ms": round(best["asrfront long"] * 1e3, 2),
        "speedup_vs_asrfront_long": round(best["asrfront long"] / best["ours long"], 3),
        "vad_chunk_count": len(speech),
        **(vad_figures(speech, best) if speech else {}),
        **{f"max_abs_err_{name}": error for name, error in errors.items()},
    }


def vad_figures(speech: list[np.ndarray], best: dict[str, float]) -> dict:
    return {
        "vad_chunk_mean_seconds": round(sum(c.size for c in speech) / len(speech) / SAMPLE_RATE, 2),
        "ours_vad_chunks_ms": round(best["ours vad chunks"] * 1e3, 2),
        "asrfront_vad_chunks_ms": round(best["asrfront vad chunks"] * 1e3, 2),
        "speedup_vs_asrfront_vad_chunks": round(
            best["asrfront vad chunks"] / best["ours vad chunks"], 3),
    }


def exactness_report(n_mels: int, runtime) -> dict:
    """The worst max abs error, over every shared speech file and 20 s of white noise (each whole,
    unpadded), of ours, asrfront and WhisperX against one another and :func:`float64_log_mel`,
    and how many files each of ours and asrfront keeps within 2e-5 of WhisperX."""
    import asrfront.whisper
    import torch
    import whisperx.audio

    from app.transcription.audio import decode_file

    signals = {path.name: decode_file(path) for path in speech_files()}
    signals["white noise"] = (np.random.default_rng(1).standard_normal(20 * SAMPLE_RATE)
                              * 0.1).astype(np.float32)
    worst: dict[str, tuple[float, str]] = {}
    within = {"ours": 0, "asrfront": 0}
    for name, audio in signals.items():
        outputs = {
            "ours": runtime.process_audio_to_features(audio),
            "asrfront": asrfront.whisper.log_mel(audio, n_mels, pad_or_trim=False),
            "whisperx": whisperx.audio.log_mel_spectrogram(torch.from_numpy(audio), n_mels).numpy(),
            "exact": float64_log_mel(audio, n_mels),
        }
        for a, b in (("ours", "whisperx"), ("asrfront", "whisperx"), ("whisperx", "exact"),
                     ("ours", "exact"), ("asrfront", "exact")):
            error = float(np.abs(outputs[a] - outputs[b]).max())
            if error > worst.get(f"{a}_vs_{b}", (-1.0, ""))[0]:
                worst[f"{a}_vs_{b}"] = (error, name)
            if b == "whisperx" and error <= 2e-5:
                within[a] += 1
    for key, (error, name) in worst.items():
        print(f"worst max abs err {key:<22} {error:.2e} ({name})")
    return {
        "signals_checked": len(signals),
        **{f"worst_err_{key}": error for key, (error, _) in worst.items()},
        "signals_ours_within_2e-5_of_whisperx": within["ours"],
        "signals_asrfront_within_2e-5_of_whisperx": within["asrfront"],
    }


def run(args: argparse.Namespace) -> int:
    audio, source = bench_audio(args.audio, args.seconds)
    seconds = audio.size / SAMPLE_RATE
    host_report = npu_host_report(audio, args.n_mels, args.repeats) if args.npu_host_only else {}
    with contextlib.ExitStack() as stack:
        runtime, entries = contestants(args.n_mels, args.kernel_dir, stack)
        outputs = {name: fn(audio) for name, _, fn in entries}  # warm-up, and the error check
        best = {name: float("inf") for name, _, _ in entries}
        for _ in range(max(1, args.repeats)):
            for name, _, fn in entries:
                time.sleep(SETTLE_SECONDS)
                started = time.perf_counter()
                fn(audio)
                best[name] = min(best[name], time.perf_counter() - started)
        print(f"mel front-end, {seconds:.1f} s of {source}, n_mels={args.n_mels}, best of {args.repeats}")
        reference = outputs["whisperx (torch)"]
        errors = {name: float(np.abs(out - reference).max()) for name, out in outputs.items()}
        print(f"{'name':<32} {'ms':>10} {'x realtime':>11} {'max abs err vs WhisperX':>24}")
        for name, _, _ in entries:
            print(f"{name:<32} {best[name] * 1e3:>10.1f} {seconds / best[name]:>11.0f} {errors[name]:>24.2e}")
        ours = next(name for name, is_ours, _ in entries if is_ours)
        asrfront = asrfront_report(audio, args.n_mels, args.repeats, runtime)
        every_file = exactness_report(args.n_mels, runtime) if args.every_file else {}
        x_rt = {name: seconds / t for name, t in best.items()}
        print(json.dumps({
            "audio": source.split(" (")[0],
            "seconds": seconds,
            "n_mels": args.n_mels,
            "mel_backend": runtime.mel_backend_name,
            "ours_x_realtime": round(x_rt[ours], 1),
            "ours_single_thread_x_realtime": round(x_rt["amanuensis cpu, 1 thread"], 1),
            "librosa_x_realtime": round(x_rt["librosa"], 1),
            "whisperx_x_realtime": round(x_rt["whisperx (torch)"], 1),
            "faster_whisper_x_realtime": round(x_rt["faster-whisper (numpy)"], 1),
            "speedup_vs_librosa": round(x_rt[ours] / x_rt["librosa"], 2),
            "speedup_vs_whisperx": round(x_rt[ours] / x_rt["whisperx (torch)"], 2),
            "speedup_vs_faster_whisper": round(x_rt[ours] / x_rt["faster-whisper (numpy)"], 2),
            "max_abs_err": errors[ours],
            "librosa_max_abs_err": errors["librosa"],
            "faster_whisper_max_abs_err": errors["faster-whisper (numpy)"],
            **{f"{name.split()[-1].replace('-', '_')}_x_realtime": round(x_rt[name], 1)
               for name, _, _ in entries if name.startswith("amanuensis npu-")},
            **host_report,
            **asrfront,
            **every_file,
        }))
    return 0
