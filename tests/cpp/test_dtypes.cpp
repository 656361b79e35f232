// The host float <-> float16/bfloat16 conversions of csrc/common/dtypes.h
// (what the SIMT runtime runs in place of CUDA's intrinsics) against c10's,
// which round to nearest even as CUDA does: every 16-bit value widened, and
// narrowing checked at and around every rounding boundary (the ties, one
// float ulp either side), at the overflow edge, and on a stride through all
// 2^32 float bit patterns.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "../../csrc/common/dtypes.h"

namespace {

int failures = 0;

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

// NaN payloads may differ; any NaN encoding is a NaN.
bool same_half(uint16_t a, uint16_t b) {
  const bool nan_a = (a & 0x7c00) == 0x7c00 && (a & 0x3ff), nan_b = (b & 0x7c00) == 0x7c00 && (b & 0x3ff);
  return (nan_a && nan_b) || a == b;
}
bool same_bfloat16(uint16_t a, uint16_t b) {
  const bool nan_a = (a & 0x7f80) == 0x7f80 && (a & 0x7f), nan_b = (b & 0x7f80) == 0x7f80 && (b & 0x7f);
  return (nan_a && nan_b) || a == b;
}

void check_narrowing(float f) {
  const uint16_t half = fastconv::float_to_half_bits(f), half_expected = c10::Half(f).x;
  const uint16_t bf16 = fastconv::float_to_bfloat16_bits(f), bf16_expected = c10::BFloat16(f).x;
  if (!same_half(half, half_expected) && failures++ < 10)
    std::printf("float %a -> half 0x%04x, expected 0x%04x\n", f, half, half_expected);
  if (!same_bfloat16(bf16, bf16_expected) && failures++ < 10)
    std::printf("float %a -> bfloat16 0x%04x, expected 0x%04x\n", f, bf16, bf16_expected);
}

void check_around(float f) {
  check_narrowing(f);
  check_narrowing(std::nextafter(f, INFINITY));
  check_narrowing(std::nextafter(f, -INFINITY));
}

}  // namespace

int main() {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const uint16_t b = static_cast<uint16_t>(bits);
    const float half = fastconv::half_bits_to_float(b), bf16 = fastconv::bfloat16_bits_to_float(b);
    if (!same_float(half, static_cast<float>(c10::Half(b, c10::Half::from_bits()))) && failures++ < 10)
      std::printf("half 0x%04x -> %a\n", b, half);
    if (!same_float(bf16, static_cast<float>(c10::BFloat16(b, c10::BFloat16::from_bits()))) && failures++ < 10)
      std::printf("bfloat16 0x%04x -> %a\n", b, bf16);
    // Each 16-bit value, and the tie halfway to the next one (exact in float).
    check_around(half);
    check_around(bf16);
    const float next_half = fastconv::half_bits_to_float(static_cast<uint16_t>(b + 1));
    const float next_bf16 = fastconv::bfloat16_bits_to_float(static_cast<uint16_t>(b + 1));
    if (std::isfinite(half) && std::isfinite(next_half)) check_around(half + (next_half - half) / 2);
    if (std::isfinite(bf16) && std::isfinite(next_bf16)) check_around(bf16 + (next_bf16 - bf16) / 2);
  }
  for (float edge : {65504.0f, 65519.996f, 65520.0f, 65536.0f, 6.1035156e-05f, 5.9604645e-08f, 2.9802322e-08f,
                     3.3895314e38f, INFINITY, NAN}) {
    check_around(edge);
    check_around(-edge);
  }
  for (uint64_t bits = 0; bits <= 0xffffffffull; bits += 65521) check_narrowing(from_bits(static_cast<uint32_t>(bits)));
  std::printf(failures ? "FAILED: %d mismatches\n" : "dtypes: ok\n", failures);
  return failures ? 1 : 0;
}
