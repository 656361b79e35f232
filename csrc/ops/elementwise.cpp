#include "elementwise.h"

#include <ATen/MemoryOverlap.h>

#include "common.h"
#include "output_buffers.h"

namespace fastconv {
namespace {

bool is_flat(const at::Tensor& t, FlatOrder order) {
  return order == FlatOrder::kRowMajor ? t.is_contiguous() : t.is_non_overlapping_and_dense();
}

}  // namespace

void run_elementwise(const at::Tensor& input, const at::Tensor& output, FlatOrder order,
                     c10::function_ref<void(const at::Tensor& in, const at::Tensor& out)> kernels) {
  if (is_flat(output, order)) {
    kernels(order == FlatOrder::kRowMajor ? input.contiguous() : with_layout_of(input, output), output);
    return;
  }
  at::assert_no_internal_overlap(output);
  // Preserve gives a non-dense input its suggested memory format: dense, the order kStorage needs.
  const at::MemoryFormat format = order == FlatOrder::kRowMajor ? at::MemoryFormat::Contiguous
                                                                : at::MemoryFormat::Preserve;
  const at::Tensor flat = empty_output_like(input, format).copy_(input);
  kernels(flat, flat);
  output.copy_(flat);
}

}  // namespace fastconv
