// Whisper log-mel front-end, one frame at a time, in integer arithmetic.
//
// The input is the padded signal in blocks of MEL_HOP int16 samples, each preceded by its gain
// exponent g (samples = x * 2^(15 + g)); frame f reads blocks f, f + 1 and the start of f + 2 and
// writes MEL_N_MELS int32 values, log10 of the mel band energies of x in Q(MEL_OUT_FRAC_BITS).
// Steps: Q30 periodic Hann window, the products aligned to the frame's lowest block gain and
// shifted by the frame's own exponent (block floating point per frame: a near-silent frame in a
// loud chunk keeps full precision) -> 400-point
// real FFT as a 200-point complex mixed-radix FFT (radices MEL_RADICES, Q30 twiddles) plus the
// real-split -> |2X|^2 in int64 -> per band: its bins shifted by the band's own exponent to
// MEL_POWER_BITS, times uint32 Slaney weights -> log2 by leading-zero count + table -> log10.
// npu/mel/golden.py is the same arithmetic in NumPy; the two must agree bit for bit.
//
// One source, two targets: the host compiler builds it into a shared library (tests,
// `amanuensis kernels verify`); Peano builds the same scalar code for the AIE-ML core (no
// intrinsics: the int16 x int32 window products with a per-frame shift would map onto
// aie::mul into acc64 and a run-time srs shift, not written here because it cannot be compiled
// on the development machines).
// All scratch arrays are static: the core's stack (MEL_CORE_STACK_BYTES) holds only scalars.
#include <stdint.h>

#include "mel_config.h"
#include "mel_tables.h"

namespace {

constexpr int kRadices[MEL_N_RADICES] = {MEL_RADICES};
constexpr int kHalf = MEL_HALF_FFT;
constexpr int64_t kRoundTwiddle = int64_t{1} << (MEL_TWIDDLE_FRAC_BITS - 1);

alignas(32) int64_t g_product[MEL_N_FFT];
alignas(32) int32_t g_windowed[MEL_N_FFT];
alignas(32) int32_t g_re[2][kHalf];
alignas(32) int32_t g_im[2][kHalf];
alignas(32) int64_t g_power[MEL_N_BINS];

inline int64_t twiddle_round(int64_t product) {
  return (product + kRoundTwiddle) >> MEL_TWIDDLE_FRAC_BITS;
}

inline int bit_length(uint64_t value) { return value ? 64 - __builtin_clzll(value) : 0; }

// (value + 2^(shift-1)) >> shift, rounding half up; value itself for shift 0.
inline int64_t shift_round(int64_t value, int shift) {
  return shift > 0 ? (value + (int64_t{1} << (shift - 1))) >> shift : value;
}

constexpr int kBlockWords = MEL_HOP + 1;  // gain exponent, then MEL_HOP samples
constexpr int kFrameBlocks = 3;             // blocks f, f + 1 and the start of f + 2

inline int clamp_gain(int16_t gain) {
  return gain < MEL_HOST_MIN_GAIN_LOG2 ? MEL_HOST_MIN_GAIN_LOG2
         : gain > MEL_HOST_MAX_GAIN_LOG2 ? MEL_HOST_MAX_GAIN_LOG2 : gain;
}

// Window the frame starting at ``blocks`` into g_windowed. The products sample * window are
// aligned to the frame's lowest block gain r (set in *reference) and shifted right by the
// returned exponent s so that their absolute sum, which bounds every FFT value, is < 2^30.
int window_frame(const int16_t* blocks, int* reference) {
  int gains[kFrameBlocks];
  int lowest = MEL_HOST_MAX_GAIN_LOG2;
  for (int b = 0; b < kFrameBlocks; ++b) {
    gains[b] = clamp_gain(blocks[b * kBlockWords]);
    if (gains[b] < lowest) lowest = gains[b];
  }
  int64_t total = 0;
  for (int n = 0; n < MEL_N_FFT; ++n) {
    const int b = n / MEL_HOP;
    g_product[n] = int64_t{blocks[b * kBlockWords + 1 + n % MEL_HOP]} * mel_window[n];
    total += (g_product[n] < 0 ? -g_product[n] : g_product[n]) >> (gains[b] - lowest);
  }
  const int excess = bit_length(static_cast<uint64_t>(total)) - MEL_SPECTRUM_BITS;
  const int shift = excess > 0 ? excess : 0;
  for (int n = 0; n < MEL_N_FFT; ++n) {
    const int align = gains[n / MEL_HOP] - lowest;
    g_windowed[n] = static_cast<int32_t>(shift_round(g_product[n], shift + align));
  }
  *reference = lowest;
  return shift;
}

// Decimation-in-time stage: r sub-DFTs of length L (index m * P' + p, bin k0) become P' DFTs of
// length r*L. Each output sums its m = 0 input exactly and the others times W_{rL}^(m k), each
// product rounded on its own, so the result does not depend on the order of the sum.
void fft_stage(int radix, int subs, int length, const int32_t* src_re, const int32_t* src_im,
               int32_t* dst_re, int32_t* dst_im) {
  const int combined = radix * length;
  const int tw_step = MEL_N_FFT / combined;
  for (int p = 0; p < subs; ++p) {
    for (int k = 0; k < combined; ++k) {
      const int k0 = k % length;
      int64_t acc_re = src_re[p * length + k0];
      int64_t acc_im = src_im[p * length + k0];
      for (int m = 1; m < radix; ++m) {
        const int j = ((m * k) % combined) * tw_step;
        const int64_t ar = src_re[(m * subs + p) * length + k0];
        const int64_t ai = src_im[(m * subs + p) * length + k0];
        acc_re += twiddle_round(ar * mel_twiddle_re[j] - ai * mel_twiddle_im[j]);
        acc_im += twiddle_round(ar * mel_twiddle_im[j] + ai * mel_twiddle_re[j]);
      }
      // Every partial DFT is bounded by sum |windowed| < 2^31 (MEL_SPECTRUM_BITS).
      dst_re[p * combined + k] = static_cast<int32_t>(acc_re);
      dst_im[p * combined + k] = static_cast<int32_t>(acc_im);
    }
  }
}

// 200-point complex FFT of z[n] = x[2n] + i x[2n+1]; returns which buffer holds Z.
int fft_half() {
  for (int n = 0; n < kHalf; ++n) {
    g_re[0][n] = g_windowed[2 * n];
    g_im[0][n] = g_windowed[2 * n + 1];
  }
  int current = 0, subs = kHalf, length = 1;
  for (int s = 0; s < MEL_N_RADICES; ++s) {
    subs /= kRadices[s];
    fft_stage(kRadices[s], subs, length, g_re[current], g_im[current], g_re[1 - current],
              g_im[1 - current]);
    length *= kRadices[s];
    current = 1 - current;
  }
  return current;
}

// Real-split: 2X[k] = (Z[k] + conj Z[-k]) + W_400^k * (-i)(Z[k] - conj Z[-k]); power |2X[k]|^2.
void power_spectrum(int z) {
  const int32_t* zr = g_re[z];
  const int32_t* zi = g_im[z];
  for (int k = 0; k < MEL_N_BINS; ++k) {
    const int a = k % kHalf, b = (kHalf - k) % kHalf;
    const int64_t ar = zr[a], ai = zi[a], br = zr[b], bi = -int64_t{zi[b]};
    const int64_t odd_re = ai - bi, odd_im = -(ar - br);
    const int64_t xr = ar + br + twiddle_round(odd_re * mel_twiddle_re[k] - odd_im * mel_twiddle_im[k]);
    const int64_t xi = ai + bi + twiddle_round(odd_re * mel_twiddle_im[k] + odd_im * mel_twiddle_re[k]);
    g_power[k] = xr * xr + xi * xi;
  }
}

// log10(energy * 2^exponent) in Q(MEL_OUT_FRAC_BITS); |result| < 2^24, no saturation needed.
int32_t log10_q(uint64_t energy, int exponent) {
  if (energy == 0) return MEL_OUT_FLOOR;
  const int top = bit_length(energy) - 1;
  const uint64_t mantissa = energy << (63 - top);
  const int index = static_cast<int>((mantissa >> (63 - MEL_LOG2_TABLE_BITS)) &
                                     ((1u << MEL_LOG2_TABLE_BITS) - 1));
  const int64_t frac = static_cast<int64_t>((mantissa >> (63 - MEL_LOG2_TABLE_BITS - 16)) & 0xFFFF);
  const int64_t lo = mel_log2_table[index], hi = mel_log2_table[index + 1];
  const int64_t log2 = (int64_t{top} + exponent) * (int64_t{1} << MEL_LOG2_FRAC_BITS) + lo +
                       (((hi - lo) * frac + (1 << 15)) >> 16);
  constexpr int kShift = MEL_LOG2_FRAC_BITS + 24 - MEL_OUT_FRAC_BITS;
  return static_cast<int32_t>((log2 * MEL_LOG10_OF_2_Q24 + (int64_t{1} << (kShift - 1))) >> kShift);
}

void mel_frame(const int16_t* blocks, int32_t* out) {
  int reference = 0;
  const int window_shift = window_frame(blocks, &reference);
  power_spectrum(fft_half());
  for (int band = 0; band < MEL_N_MELS; ++band) {
    const uint32_t* coef = mel_filter_coef + mel_filter_offset[band];
    const int64_t* power = g_power + mel_filter_start[band];
    const int count = mel_filter_count[band];
    int64_t peak = 0;
    for (int i = 0; i < count; ++i) {
      if (power[i] > peak) peak = power[i];
    }
    const int excess = bit_length(static_cast<uint64_t>(peak)) - MEL_POWER_BITS;
    const int shift = excess > 0 ? excess : 0;
    uint64_t energy = 0;
    for (int i = 0; i < count; ++i) {
      energy += static_cast<uint64_t>(shift_round(power[i], shift)) * coef[i];
    }
    out[band] = log10_q(energy, shift + 2 * (window_shift - reference) - MEL_FILTER_FRAC_BITS -
                                    MEL_POWER_SCALE_LOG2);
  }
}

}  // namespace

extern "C" {

// n_frames frames from one call's input of n_frames + 2 blocks (host library, and what a call
// computes).
void mel_frames(const int16_t* blocks, int32_t* out, int32_t n_frames) {
  for (int32_t f = 0; f < n_frames; ++f) {
    mel_frame(blocks + f * kBlockWords, out + f * MEL_N_MELS);
  }
}

// One ObjectFIFO object: MEL_FRAMES_PER_OBJECT frames (the AIE core's per-object call).
void mel_object(const int16_t* blocks, int32_t* out) {
  mel_frames(blocks, out, MEL_FRAMES_PER_OBJECT);
}

int32_t mel_kernel_n_mels(void) { return MEL_N_MELS; }

}  // extern "C"
