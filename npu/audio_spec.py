"""Whisper's front-end constants: the one Python home of these numbers.

The NPU kernel keeps its own copy in ``kernels/mel/mel_config.h``; the NPU back-end reads that
header and refuses to run when the two disagree.
"""

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
N_FREQ_BINS = N_FFT // 2 + 1
REFLECT_PAD = N_FFT // 2
"""Samples of reflect padding on each side (``center=True``)."""
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE
N_FRAMES = N_SAMPLES // HOP_LENGTH
SUPPORTED_N_MELS = (80, 128)
LOG_FLOOR = 1e-10
DYNAMIC_RANGE_LOG10 = 8.0
