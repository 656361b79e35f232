// Torch-free storage types and accumulation rules shared by CPU, CUDA and SIMT code.
//
// The CUDA kernels are compiled without ATen, so they cannot name at::Half or
// at::BFloat16. These two structs have the same size and alignment (2 bytes of
// raw bits), so the ATen glue can reinterpret_cast a tensor's data pointer to
// them; inside a kernel they are converted to float with the CUDA intrinsics.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fastconv {

struct alignas(2) half_t {
  uint16_t bits;
};

struct alignas(2) bfloat16_t {
  uint16_t bits;
};

// Host conversions between float and the 16-bit types, what CUDA's
// __half2float / __float2half_rn and __bfloat162float / __float2bfloat16_rn
// compute for every number: widening is exact, narrowing rounds to nearest
// even (float_to_half_bits uses nearbyint, so under the default rounding
// mode), overflow gives infinity. A NaN stays a NaN, though its payload may
// differ from the device's canonical one. The SIMT runtime runs the CUDA
// kernels' half and bfloat16 instantiations through these.
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  const uint32_t bits = exponent == 0x1f ? sign | 0x7f800000u | (mantissa << 13)       // inf, NaN
                                         : sign | ((exponent + 112) << 23) | (mantissa << 13);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_half_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u;  // NaN (quiet)
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (x < 0x38800000u) {
    // Below the smallest normal half (2^-14): a subnormal m * 2^-24. Scaling
    // by 2^24 is exact, and nearbyint rounds to nearest even (the default
    // rounding mode); m == 1024 is the smallest normal's encoding.
    float magnitude;
    std::memcpy(&magnitude, &x, sizeof magnitude);
    return sign | static_cast<uint16_t>(std::nearbyint(magnitude * 16777216.0f));
  }
  // Normal: rebias the exponent, keep 10 mantissa bits, round the 13 dropped
  // ones to nearest even (a carry into the exponent is the right result).
  uint32_t h = ((((x >> 23) - 127 + 15) << 10) | ((x >> 13) & 0x3ffu));
  const uint32_t dropped = x & 0x1fffu;
  if (dropped > 0x1000u || (dropped == 0x1000u && (h & 1u))) ++h;
  return sign | static_cast<uint16_t>(h);
}

inline float bfloat16_bits_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_bfloat16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even on the 16 dropped bits
  return static_cast<uint16_t>(x >> 16);
}

// Arithmetic happens in float for every type narrower than double.
template <typename T>
struct AccumulateType {
  using type = float;
};
template <>
struct AccumulateType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccumulateType<T>::type;

}  // namespace fastconv
