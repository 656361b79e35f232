// How the elementwise ops (ReLU, dropout) hand tensors to kernels that walk
// flat buffers: one element after another from a base pointer, reading one
// buffer and writing another or the same one (in place).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/FunctionRef.h>

namespace fastconv {

// The buffers the kernels walk.
//  - kStorage: any dense, non-overlapping layout, the input with the output's
//    strides: a map applied to each element alone may visit them in any order.
//  - kRowMajor: contiguous, for kernels whose i-th element must be the i-th in
//    logical order (the stored keep bits, dropout's Philox mask), so that
//    backward finds it whatever the layout of its gradient.
enum class FlatOrder { kStorage, kRowMajor };

// The op input -> output (`output` is `input` itself for an in-place op) on
// kernels that read `in` and write `out`, flat buffers in `order`.
// An input of another layout is read from a flat copy. An output the kernels
// cannot write as it is (not dense, overlapping, or not row-major where they
// need it; only in-place ops and row-major kernels meet one) is computed in
// place in a flat copy of the input, from the output cache, and copied in:
// kernels(copy, copy). An overlapping output is refused before anything runs,
// with torch's message for in-place ops on one.
void run_elementwise(const at::Tensor& input, const at::Tensor& output, FlatOrder order,
                     c10::function_ref<void(const at::Tensor& in, const at::Tensor& out)> kernels);

}  // namespace fastconv
