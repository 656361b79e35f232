// Torch-free storage types and accumulation rules shared by CPU, CUDA and SIMT code.
//
// The CUDA kernels are compiled without ATen, so they cannot name at::Half or
// at::BFloat16. These two structs have the same size and alignment (2 bytes of
// raw bits), so the ATen glue can reinterpret_cast a tensor's data pointer to
// them; inside a kernel they are converted to float with the CUDA intrinsics.
#pragma once

#include <cstdint>

namespace fastconv {

struct alignas(2) half_t {
  uint16_t bits;
};

struct alignas(2) bfloat16_t {
  uint16_t bits;
};

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
