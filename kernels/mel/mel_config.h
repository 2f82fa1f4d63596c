// Every size and fixed-point format shared by the mel kernel, its design generator and the host.
// One `#define NAME value` per line: npu/golden_mel.py parses these lines and checks the
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

// Frames per ObjectFIFO object; each object holds FRAMES*HOP+N_FFT-HOP samples (the shim DMA
// reads overlapping windows of the padded signal, so the kernel keeps no history).
#define MEL_FRAMES_PER_OBJECT 10
#define MEL_FRAMES_PER_CALL_BATCH 3000
#define MEL_FRAMES_PER_CALL_FRAME 30

// Fixed-point formats.
#define MEL_WINDOW_FRAC_BITS 15   // periodic Hann in Q15 (1.0 stored as 32767)
#define MEL_WINDOW_SHIFT 9        // (sample * window) >> 9: 21-bit windowed samples
#define MEL_TWIDDLE_FRAC_BITS 15  // cint16 twiddles, products rounded half up
#define MEL_POWER_BITS 40         // per-frame power is shifted right until it fits 40 bits
#define MEL_FILTER_FRAC_BITS 20   // Slaney weights * 2^20 as uint16 (max weight 0.0417 < 0.0625)
#define MEL_LOG2_TABLE_BITS 6     // log2(1+i/64) table, linear interpolation on 16 more bits
#define MEL_LOG2_FRAC_BITS 16     // internal log2 in Q16
#define MEL_LOG10_OF_2_Q24 5050445  // round(log10(2) * 2^24)
#define MEL_OUT_FRAC_BITS 10      // output: int16 log10 in Q10 (1/1024 log10 units)
#define MEL_OUT_FLOOR (-32768)    // written for an all-zero mel band (host clamps to 1e-10)
// Scale from integer power to Whisper's float power: x_int16 = x * 2^15, window Q15 >> 9,
// real-FFT split doubles the spectrum: |2X|^2 = |X|^2 * 2^(2 * (15 + 15 - 9 + 1)).
#define MEL_POWER_SCALE_LOG2 44
// Host side: each call's samples are scaled by 2^g before quantising to int16, g the largest
// power keeping the peak below full scale (quiet audio up, audio beyond [-1, 1] down).
#define MEL_HOST_MIN_GAIN_LOG2 (-8)
#define MEL_HOST_MAX_GAIN_LOG2 16

// Tile memory: the design generator refuses a design whose data memory exceeds this.
#define MEL_TILE_DATA_BYTES 65536
#define MEL_CORE_STACK_BYTES 1024

#endif
