// Uninitialised scratch memory for one call of a CPU kernel (partial sums,
// packed weights, transformed filters), taken from the CPU output cache
// (csrc/ops/output_buffers.h). A buffer of a few MiB allocated afresh on
// every call is mapped and faulted in page by page every time, depending on
// glibc's moving mmap threshold: the Winograd weight gradient of a
// 512-channel layer at batch 1 (two 17 MB buffers) took 16-20 ms in some
// processes and 7-8 ms in others. From the cache, the pages stay mapped.
#pragma once

#include <cstdint>

#include "../ops/output_buffers.h"

namespace fastconv {
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
