// bf16 <-> float32 on the scalar path, the conversions npu/ops/golden.py mirrors bit for bit:
// widening is exact; narrowing rounds to nearest, ties to even, and keeps NaN a (quiet) NaN.
#ifndef AMANUENSIS_BF16_H
#define AMANUENSIS_BF16_H

#include <stdint.h>
#include <string.h>

inline float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  memcpy(&value, &wide, sizeof value);
  return value;
}

inline uint16_t float_to_bf16(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

#endif
