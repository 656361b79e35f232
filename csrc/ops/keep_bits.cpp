#include "keep_bits.h"

#include "../cpu/keep_bits.h"
#include "output_buffers.h"

namespace fastconv {

at::Tensor empty_mask_for(const at::Tensor& input) {
  return empty_output({cpu::keep_bits_bytes(input.numel())}, input.options().dtype(at::kByte));
}

void check_mask(const at::Tensor& mask, const at::Tensor& grad_output, const char* op) {
  const int64_t bytes = cpu::keep_bits_bytes(grad_output.numel());
  TORCH_CHECK(mask.scalar_type() == at::kByte, op, ": mask must be a uint8 tensor (the keep bits its ",
              "forward returned), got ", mask.scalar_type());
  TORCH_CHECK(mask.device() == grad_output.device(), op, ": mask must be on grad_output's device (",
              grad_output.device(), "), got ", mask.device());
  TORCH_CHECK(mask.dim() == 1 && mask.numel() == bytes, op, ": mask must hold one bit per element of ",
              "grad_output, a 1-D tensor of ", bytes, " bytes for ", grad_output.numel(), " elements, got shape ",
              mask.sizes());
}

}  // namespace fastconv
