// The stored masks of the ops that keep one for their backward on the cpu
// backend (dropout_with_mask, relu_with_mask and their in-place and backward
// ops): one bit per element in row-major order (csrc/cpu/keep_bits.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include "common.h"

namespace fastconv {

// An uninitialised mask for `input`'s elements.
at::Tensor empty_mask_for(const at::Tensor& input);

// `mask` holds one bit per element of `grad_output`: uint8, 1-D, on its device.
void check_mask(const at::Tensor& mask, const at::Tensor& grad_output, const char* op);

}  // namespace fastconv
