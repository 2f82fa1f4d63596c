// Every size and fixed-point format shared by the mel kernel, its design generator and the host.
// One `#define NAME value` per line: npu/mel/tables.py parses these lines and checks the
// Whisper constants against npu/audio_spec.py. Do not write these numbers anywhere else.
#ifndef MEL_CONFIG_H
#define MEL_CONFIG_H

// Whisper's STFT.
#define MEL_SAMPLE_RATE 16000
#define MEL_N_FFT 400
#define MEL_HOP 160
#define MEL_N_BINS 201
// The 400-point real FFT runs as a 200-point complex FFT, radices innermost first.
#define MEL_HALF_FFT 200
#define MEL_RADICES 2, 4, 5, 5
#define MEL_N_RADICES 4

// The input is the padded signal in blocks of MEL_HOP samples, each block preceded by its own gain
// exponent g (one int16: the block's samples are x * 2^(15 + g), quantised): MEL_HOP + 1 int16 per
// block. Frame f reads blocks f, f + 1 and the first N_FFT - 2 * HOP samples of f + 2, so a call
// of F frames reads F + 2 blocks. An ObjectFIFO object holds MEL_FRAMES_PER_OBJECT + 2 blocks
// (the shim DMA reads overlapping windows of the blocks, so the kernel keeps no history).
#define MEL_FRAMES_PER_OBJECT 10
#define MEL_FRAMES_PER_CALL_BATCH 3000
#define MEL_FRAMES_PER_CALL_FRAME 30

// Fixed-point formats. The widths are chosen so that the kernel's error stays below float32's
// (the CPU path) even in bands 80 dB under the frame's strongest: npu/mel/tables.py checks the
// overflow bounds stated here.
#define MEL_WINDOW_FRAC_BITS 30   // periodic Hann as int32 in Q30
// Block floating point per frame: the products sample * window (< 2^45) of the frame's blocks are
// aligned to the frame's lowest block gain r (shifted right by g - r) and shifted right, rounded
// half up, by the frame's exponent s = max(bit_length(sum |sample * window| >> (g - r)) - 30, 0),
// so every frame, loud or near silent, enters the FFT with sum |windowed| < 2^30 + 3 * N_FFT / 2:
// that sum bounds every FFT value (|Z|, |X| < 2^31 in int32, |2X|^2 < 2^63 in int64); s and r
// are undone in the log.
#define MEL_SPECTRUM_BITS 30
#define MEL_TWIDDLE_FRAC_BITS 30  // int32 twiddles in Q30; each complex product rounded half up
// Each mel band's bins are shifted right (rounded half up) by the band's own exponent until the
// largest fits MEL_POWER_BITS bits; times uint32 weights the band sum stays below 2^64.
#define MEL_POWER_BITS 32
#define MEL_FILTER_FRAC_BITS 35   // Slaney weights * 2^35 as uint32 (max weight 0.0417 < 2^-4.5)
#define MEL_LOG2_TABLE_BITS 8     // log2(1+i/256) table, linear interpolation on 16 more bits
#define MEL_LOG2_FRAC_BITS 20     // internal log2 in Q20
#define MEL_LOG10_OF_2_Q24 5050445  // round(log10(2) * 2^24)
#define MEL_OUT_FRAC_BITS 16      // output: int32 log10 in Q16 (1/65536 log10 units)
#define MEL_OUT_FLOOR (-2147483648)  // written for an all-zero mel band (host clamps to 1e-10)
// Scale from integer power to Whisper's float power for a frame of exponents s and r:
// x_int16 = x * 2^(15 + r), window Q30, windowed = x_int16 * window * 2^-s, the real-FFT split
// doubles the spectrum: |2X|^2 = |X|^2 * 2^(2 * (15 + 30 + 1)) * 2^(2r - 2s).
#define MEL_POWER_SCALE_LOG2 92
// Host side: each block's samples are scaled by 2^g before quantising to int16, g the largest
// power keeping the block's peak below full scale (quiet blocks up, audio beyond [-1, 1] down; a
// silent block gets the largest). The kernel clamps every g to this range.
#define MEL_HOST_MIN_GAIN_LOG2 (-8)
#define MEL_HOST_MAX_GAIN_LOG2 16

// The core's stack; the design generator checks it, and data and program memory against the
// target's tile (npu/kernel_budget.py).
#define MEL_CORE_STACK_BYTES 1024

#endif
