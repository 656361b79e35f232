// Uninitialised scratch memory for one call of a CPU kernel (partial sums,
// packed weights, transformed filters), taken from the CPU output cache
// (csrc/ops/output_buffers.h). A buffer of a few MiB allocated afresh on
// every call is mapped and faulted in page by page every time, depending on
// glibc's moving mmap threshold: the time of the Winograd weight gradient
// of a 512-channel layer at batch 1 (two 17 MB buffers) varied from process
// to process by a factor of two. From the cache, the pages stay mapped.
#pragma once

#include <c10/core/Allocator.h>

#include <cstddef>
#include <cstdint>

namespace fastconv {

// `bytes` of uninitialised CPU memory, from the output cache when it is
// large enough to be kept there, else from torch's CPU allocator; it goes
// back when the DataPtr is released. Defined beside the cache, in
// csrc/ops/output_buffers.cpp.
c10::DataPtr cpu_scratch_memory(size_t bytes);

namespace cpu {

template <typename T>
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(int64_t numel) : memory_(cpu_scratch_memory(static_cast<size_t>(numel) * sizeof(T))) {}
  T* get() const { return static_cast<T*>(memory_.get()); }

 private:
  c10::DataPtr memory_;
};

}  // namespace cpu
}  // namespace fastconv
