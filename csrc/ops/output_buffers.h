// Outputs of the CPU ops (ReLU, dropout, max pooling; the convolutions'
// outputs and input gradients), and the CPU kernels' large scratch of one
// call (cpu_scratch_memory, declared in csrc/cpu/scratch.h), without the
// page-fault cost of a large fresh allocation.
//
// A tensor above glibc's largest mmap threshold (32 MiB) is mmapped afresh on
// every at::empty and unmapped on free, so each call pays a page fault per
// 4 KiB page; for ReLU on a 45 MB activation that, not the loop, was the time,
// and it was half the forward time of convnet4's first convolution.
// Large CPU outputs therefore come from a small cache of buffers that earlier
// outputs released: a network or training loop asks for the same sizes every
// step, so after the first step they are reused with their pages mapped.
// (A miss allocates plain pages, as torch does: output_buffers.cpp says why
// not transparent huge pages.)
//
// The tensors are ordinary CPU tensors: resizable, storage offset 0, freed by
// their storage's deleter on any thread; copies (pin_memory, share_memory_)
// leave the cache. What it may hold: buffers of at least 2 MiB, rounded up
// to whole 2 MiB, and at most FASTCONV_CPU_OUTPUT_CACHE_MB MiB of released
// buffers in all (default: an eighth of the memory the process may use,
// physical or its container's limit, divided among torchrun's processes on
// the host, between 256 MiB and 4 GiB; each process has its own cache),
// least recently released evicted first; a buffer larger than that is freed
// at once, and 0 turns the cache off. empty_output_cache() frees what it
// holds, as torch.cuda.empty_cache() does for CUDA.
// Smaller and non-CPU tensors come from torch's allocator as before. The
// cached bytes are not reported to torch's memory profiler. The cache's lock
// is held only around a list operation, by the thread that creates or frees
// an output; a process forked while another of its threads held it (not
// torch's DataLoader, which forks from the thread that runs the model) would
// find it locked.
#pragma once

#include <ATen/core/Tensor.h>

namespace fastconv {

struct OutputCacheStats {
  size_t limit_bytes;   // the most released bytes the cache keeps
  size_t held_bytes;    // released bytes it keeps now
  size_t held_buffers;  // and in how many buffers
};

OutputCacheStats output_cache_stats();

// Frees every released buffer the cache holds; outputs still alive are
// unaffected and return to the cache when released.
void empty_output_cache();

// at::empty(sizes, options.memory_format(format)) with the allocation above.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                        at::MemoryFormat format = at::MemoryFormat::Contiguous);

// at::empty_like(like, format) with the allocation above: Preserve keeps a
// dense input's strides and otherwise takes its suggested memory format.
at::Tensor empty_output_like(const at::Tensor& like, at::MemoryFormat format = at::MemoryFormat::Preserve);

}  // namespace fastconv
