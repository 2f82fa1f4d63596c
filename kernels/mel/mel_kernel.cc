// Whisper log-mel front-end, one frame at a time, in integer arithmetic.
//
// Frame f of a call reads samples[f * MEL_HOP .. f * MEL_HOP + MEL_N_FFT) of the int16 padded
// signal and writes MEL_N_MELS int16 values, log10 of the mel band energies in Q(MEL_OUT_FRAC_BITS).
// Steps: Q15 periodic Hann window -> 400-point real FFT as a 200-point complex mixed-radix FFT
// (radices MEL_RADICES) plus the real-split -> |2X|^2 in int64 -> per-frame shift to MEL_POWER_BITS
// -> sparse Slaney filters (uint16 weights) -> log2 by leading-zero count + table -> log10.
// npu/golden_mel.py is the same arithmetic in NumPy; the two must agree bit for bit.
//
// One source, two targets: the host compiler builds the scalar path into a shared library
// (tests, `amanuensis kernels verify`); Peano builds the AIE-ML path (__AIE_ARCH__), which
// vectorises the windowing with aie_api and shares everything after it with the host.
// All scratch arrays are static: the core's stack (MEL_CORE_STACK_BYTES) holds only scalars.
#include <stdint.h>

#include "mel_config.h"
#include "mel_tables.h"

#if defined(__AIE_ARCH__)
#include <aie_api/aie.hpp>
#endif

namespace {

constexpr int kRadices[MEL_N_RADICES] = {MEL_RADICES};
constexpr int kHalf = MEL_HALF_FFT;
constexpr int64_t kRoundTwiddle = int64_t{1} << (MEL_TWIDDLE_FRAC_BITS - 1);

alignas(32) int32_t g_windowed[MEL_N_FFT];
alignas(32) int32_t g_re[2][kHalf];
alignas(32) int32_t g_im[2][kHalf];
alignas(32) int64_t g_power[MEL_N_BINS];

inline int32_t twiddle_round(int64_t product) {
  return static_cast<int32_t>((product + kRoundTwiddle) >> MEL_TWIDDLE_FRAC_BITS);
}

inline int bit_length(uint64_t value) { return value ? 64 - __builtin_clzll(value) : 0; }

#if defined(__AIE_ARCH__)
void window_frame(const int16_t* __restrict samples) {
  constexpr int kLanes = 16;
  static_assert(MEL_N_FFT % kLanes == 0, "window loop needs whole vectors");
  aie::set_rounding(aie::rounding_mode::positive_inf);
  aie::set_saturation(aie::saturation_mode::none);
  for (int n = 0; n < MEL_N_FFT; n += kLanes) {
    aie::vector<int16_t, kLanes> x = aie::load_unaligned_v<kLanes>(samples + n);
    aie::vector<int16_t, kLanes> w = aie::load_v<kLanes>(mel_window + n);
    aie::accum<acc32, kLanes> product = aie::mul(x, w);
    aie::store_v(g_windowed + n, product.template to_vector<int32_t>(MEL_WINDOW_SHIFT));
  }
}
#else
void window_frame(const int16_t* samples) {
  constexpr int32_t kRound = 1 << (MEL_WINDOW_SHIFT - 1);
  for (int n = 0; n < MEL_N_FFT; ++n) {
    g_windowed[n] = (int32_t{samples[n]} * mel_window[n] + kRound) >> MEL_WINDOW_SHIFT;
  }
}
#endif

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
      int32_t acc_re = src_re[p * length + k0];
      int32_t acc_im = src_im[p * length + k0];
      for (int m = 1; m < radix; ++m) {
        const int j = ((m * k) % combined) * tw_step;
        const int64_t ar = src_re[(m * subs + p) * length + k0];
        const int64_t ai = src_im[(m * subs + p) * length + k0];
        acc_re += twiddle_round(ar * mel_twiddle_re[j] - ai * mel_twiddle_im[j]);
        acc_im += twiddle_round(ar * mel_twiddle_im[j] + ai * mel_twiddle_re[j]);
      }
      dst_re[p * combined + k] = acc_re;
      dst_im[p * combined + k] = acc_im;
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
// Returns the largest power of the frame.
int64_t power_spectrum(int z) {
  const int32_t* zr = g_re[z];
  const int32_t* zi = g_im[z];
  int64_t peak = 0;
  for (int k = 0; k < MEL_N_BINS; ++k) {
    const int a = k % kHalf, b = (kHalf - k) % kHalf;
    const int64_t ar = zr[a], ai = zi[a], br = zr[b], bi = -int64_t{zi[b]};
    const int64_t odd_re = ai - bi, odd_im = -(ar - br);
    const int64_t xr = ar + br + twiddle_round(odd_re * mel_twiddle_re[k] - odd_im * mel_twiddle_im[k]);
    const int64_t xi = ai + bi + twiddle_round(odd_re * mel_twiddle_im[k] + odd_im * mel_twiddle_re[k]);
    g_power[k] = xr * xr + xi * xi;
    if (g_power[k] > peak) peak = g_power[k];
  }
  return peak;
}

int16_t log10_q(uint64_t energy, int frame_shift) {
  if (energy == 0) return MEL_OUT_FLOOR;
  const int top = bit_length(energy) - 1;
  const uint64_t mantissa = energy << (63 - top);
  const int index = static_cast<int>((mantissa >> (63 - MEL_LOG2_TABLE_BITS)) &
                                     ((1u << MEL_LOG2_TABLE_BITS) - 1));
  const int64_t frac = static_cast<int64_t>((mantissa >> (63 - MEL_LOG2_TABLE_BITS - 16)) & 0xFFFF);
  const int64_t lo = mel_log2_table[index], hi = mel_log2_table[index + 1];
  const int64_t exponent = frame_shift - MEL_FILTER_FRAC_BITS - MEL_POWER_SCALE_LOG2;
  const int64_t log2 = (int64_t{top} + exponent) * (int64_t{1} << MEL_LOG2_FRAC_BITS) + lo +
                       (((hi - lo) * frac + (1 << 15)) >> 16);
  constexpr int kShift = MEL_LOG2_FRAC_BITS + 24 - MEL_OUT_FRAC_BITS;
  const int64_t log10 = (log2 * MEL_LOG10_OF_2_Q24 + (int64_t{1} << (kShift - 1))) >> kShift;
  if (log10 < -32768) return -32768;
  if (log10 > 32767) return 32767;
  return static_cast<int16_t>(log10);
}

void mel_frame(const int16_t* samples, int16_t* out) {
  window_frame(samples);
  const int64_t peak = power_spectrum(fft_half());
  const int excess = bit_length(static_cast<uint64_t>(peak)) - MEL_POWER_BITS;
  const int shift = excess > 0 ? excess : 0;
  for (int band = 0; band < MEL_N_MELS; ++band) {
    const uint16_t* coef = mel_filter_coef + mel_filter_offset[band];
    const int64_t* power = g_power + mel_filter_start[band];
    uint64_t energy = 0;
    for (int i = 0; i < mel_filter_count[band]; ++i) {
      energy += static_cast<uint64_t>(power[i] >> shift) * coef[i];
    }
    out[band] = log10_q(energy, shift);
  }
}

}  // namespace

extern "C" {

// n_frames frames from one contiguous padded signal (host library, and what a call computes).
void mel_frames(const int16_t* samples, int16_t* out, int32_t n_frames) {
  for (int32_t f = 0; f < n_frames; ++f) {
    mel_frame(samples + f * MEL_HOP, out + f * MEL_N_MELS);
  }
}

// One ObjectFIFO object: MEL_FRAMES_PER_OBJECT frames (the AIE core's per-object call).
void mel_object(const int16_t* samples, int16_t* out) {
  mel_frames(samples, out, MEL_FRAMES_PER_OBJECT);
}

int32_t mel_kernel_n_mels(void) { return MEL_N_MELS; }

}  // extern "C"
