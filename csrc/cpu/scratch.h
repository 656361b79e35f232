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
#include <memory>

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

// A thread's working buffer whose size varies from one unit of work to the
// next (a column block, a Winograd tile block): uninitialised, grown when
// asked for more, and growing keeps nothing. A std::vector resized there
// zero-filled the whole buffer on every call. From malloc, not the output
// cache, which hands a block of one size to whichever thread asks: that way
// the Winograd weight gradient of 128 -> 128 @17 at batch 1 measured up to
// 15% slower on 2 threads, where malloc gives each thread its own arena's
// memory back.
template <typename T>
class GrowingBuffer {
 public:
  T* get(int64_t numel) {
    if (numel > capacity_) {
      memory_.reset(new T[numel]);
      capacity_ = numel;
    }
    return memory_.get();
  }

 private:
  std::unique_ptr<T[]> memory_;
  int64_t capacity_ = 0;
};

}  // namespace cpu
}  // namespace fastconv
