"""``amanuensis bench mel``: our mel back-ends against librosa, WhisperX (torch) and
faster-whisper (NumPy) on the same audio, in one process, best of interleaved repeats."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SPEECH_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "speech"


def register(commands, bench) -> None:
    parser = bench.add_parser("mel", help="log-mel front-end throughput and error vs WhisperX")
    parser.add_argument("--seconds", type=float, default=600.0, help="audio length (default 600)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contestant")
    parser.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    parser.add_argument(
        "--audio", choices=("speech", "noise"), default="speech",
        help="tiled shared speech clips (noise if they are absent) or white noise",
    )
    parser.set_defaults(handler=run)


def bench_audio(kind: str, seconds: float) -> tuple[np.ndarray, str]:
    """``seconds`` of 16 kHz audio: the shared speech clips end to end, repeated, or noise."""
    n = int(seconds * 16000)
    if n <= 200:
        raise SystemExit("--seconds must give more than 200 samples")
    if kind == "speech" and SPEECH_DIR.is_dir():
        import av

        clips = []
        for path in sorted(SPEECH_DIR.rglob("*.flac")) + sorted(SPEECH_DIR.rglob("*.wav")):
            resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
            with av.open(str(path)) as container:
                for frame in container.decode(audio=0):
                    clips.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            clips.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
            if sum(c.size for c in clips) >= n:
                break
        speech = np.concatenate(clips).astype(np.float32) / 32768.0
        return np.resize(speech, n), f"speech ({SPEECH_DIR.resolve()})"
    noise = np.random.default_rng(0).standard_normal(n).astype(np.float32) * np.float32(0.1)
    return noise, "white noise"


def contestants(n_mels: int):
    """(name, is_ours, function audio -> float32 features); each peer returns Whisper's frames."""
    import librosa
    import torch
    import whisperx.audio
    from faster_whisper.feature_extractor import FeatureExtractor

    from npu import UnifiedNPURuntime
    from npu.cpu_mel import log_mel_spectrogram

    runtime = UnifiedNPURuntime(n_mels=n_mels)

    def librosa_features(audio):
        power = librosa.feature.melspectrogram(
            y=audio, sr=16000, n_fft=400, hop_length=160, n_mels=n_mels, pad_mode="reflect"
        )[:, :-1]
        log = np.log10(np.maximum(power, 1e-10))
        return (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0

    extractor = FeatureExtractor(feature_size=n_mels)
    entries = [
        (f"amanuensis runtime ({runtime.mel_backend_name})", True, runtime.process_audio_to_features),
        ("amanuensis cpu, 1 thread", False, lambda a: log_mel_spectrogram(a, n_mels)),
        ("librosa", False, librosa_features),
        ("whisperx (torch)", False, lambda a: whisperx.audio.log_mel_spectrogram(torch.from_numpy(a), n_mels).numpy()),
        ("faster-whisper (numpy)", False, lambda a: extractor(a, padding=0)),
    ]
    return runtime, entries


def run(args: argparse.Namespace) -> int:
    audio, source = bench_audio(args.audio, args.seconds)
    seconds = audio.size / 16000
    runtime, entries = contestants(args.n_mels)
    with runtime:
        outputs = {name: fn(audio) for name, _, fn in entries}  # warm-up, and the error check
        best = {name: float("inf") for name, _, _ in entries}
        for _ in range(max(1, args.repeats)):
            for name, _, fn in entries:
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
        }))
    return 0
