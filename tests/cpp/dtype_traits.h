// Element types of the CUDA kernels, for host-side tests: name, unit roundoff
// and conversions through double (float16 and bfloat16 with the same
// round-to-nearest-even conversions the SIMT runtime uses).
#pragma once

#include "../../csrc/common/dtypes.h"

template <typename T>
struct Type;
template <>
struct Type<float> {
  static constexpr const char* name = "float";
  static constexpr double eps = 2e-6;
  static double to_double(float v) { return v; }
  static float from_double(double v) { return static_cast<float>(v); }
};
template <>
struct Type<double> {
  static constexpr const char* name = "double";
  static constexpr double eps = 1e-13;
  static double to_double(double v) { return v; }
  static double from_double(double v) { return v; }
};
template <>
struct Type<fastconv::half_t> {
  static constexpr const char* name = "float16";
  static constexpr double eps = 1.0 / 2048;
  static double to_double(fastconv::half_t v) { return fastconv::half_bits_to_float(v.bits); }
  static fastconv::half_t from_double(double v) { return {fastconv::float_to_half_bits(static_cast<float>(v))}; }
};
template <>
struct Type<fastconv::bfloat16_t> {
  static constexpr const char* name = "bfloat16";
  static constexpr double eps = 1.0 / 256;
  static double to_double(fastconv::bfloat16_t v) { return fastconv::bfloat16_bits_to_float(v.bits); }
  static fastconv::bfloat16_t from_double(double v) {
    return {fastconv::float_to_bfloat16_bits(static_cast<float>(v))};
  }
};
