#include "output_buffers.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <mutex>

namespace fastconv {
namespace {

// Sizes are rounded up to whole buckets, so that outputs of nearly the same
// size share buffers. Below one bucket, glibc's heap serves outputs without
// fresh page faults, and the cache leaves them to torch's allocator.
constexpr size_t kBucket = size_t{2} << 20;
constexpr size_t kMinBytes = kBucket;
constexpr size_t kAlignment = 64;  // c10's CPU alignment

// Unset, the cache may hold an eighth of physical memory (at least 256 MiB):
// enough for the activations a training step releases at the sizes where a
// fresh mapping costs most (VGG16's first ReLU at batch 32 is 411 MB, and its
// forward output and input gradient are both released every step).
size_t default_cache_limit_bytes() {
  constexpr size_t kFloor = size_t{256} << 20;
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_bytes = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_bytes <= 0) return kFloor;
  const size_t eighth = static_cast<size_t>(pages) * static_cast<size_t>(page_bytes) / 8;
  return std::max(kFloor, eighth / kBucket * kBucket);
}

// FASTCONV_CPU_OUTPUT_CACHE_MB: a whole number of MiB; anything else is
// reported on stderr and the default kept.
size_t read_cache_limit_bytes() {
  const char* mb = std::getenv("FASTCONV_CPU_OUTPUT_CACHE_MB");
  if (mb == nullptr || *mb == '\0') return default_cache_limit_bytes();
  char* end = nullptr;
  const unsigned long long value = std::strtoull(mb, &end, 10);
  if (*end != '\0' || *mb == '-' || value > (size_t{1} << 40 >> 20)) {
    std::fprintf(stderr, "fastconv: ignoring FASTCONV_CPU_OUTPUT_CACHE_MB=%s (expected a number of MiB)\n", mb);
    return default_cache_limit_bytes();
  }
  return static_cast<size_t>(value) << 20;
}

size_t cache_limit_bytes() {
  static const size_t limit = read_cache_limit_bytes();
  return limit;
}

struct Block {
  void* ptr;
  size_t bytes;
};

// Released blocks, most recently released first. A handful of sizes repeat
// in a network, so a linear search is enough.
class BufferCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    const size_t bytes = (n + kBucket - 1) / kBucket * kBucket;
    Block* block = take(bytes);
    if (block == nullptr) block = new Block{fresh(bytes), bytes};
    return {block->ptr, block, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, size_t count) const override { default_copy_data(dest, src, count); }

  static BufferCache& instance() {
    // Never destroyed: tensors may be freed during static destruction.
    static BufferCache* cache = new BufferCache();
    return *cache;
  }

  OutputCacheStats stats() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return {limit_, held_, free_.size()};
  }

  void empty() {
    std::list<Block*> released;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      released.swap(free_);
      held_ = 0;
    }
    for (Block* b : released) discard(b);
  }

 private:
  // Plain pages, as torch's allocator gives. Transparent huge pages
  // (MADV_HUGEPAGE) made fresh buffers 4-5x faster to fault in once free
  // huge pages were at hand, but with the kernel's default defrag=madvise
  // each such fault may compact memory first: 1.5-2.4 s for a 411 MB buffer
  // here, on every call when torch's own allocations split the huge pages in
  // between (VGG16 pooling at batch 32).
  static void* fresh(size_t bytes) {
    void* ptr = std::aligned_alloc(kAlignment, bytes);
    TORCH_CHECK(ptr != nullptr, "fastconv: out of memory allocating ", bytes, " bytes");
    return ptr;
  }

  Block* take(size_t bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if ((*it)->bytes == bytes) {
        Block* block = *it;
        free_.erase(it);
        held_ -= bytes;
        return block;
      }
    }
    return nullptr;
  }

  static void release(void* context) { instance().put(static_cast<Block*>(context)); }

  void put(Block* block) {
    if (block->bytes > limit_) return discard(block);  // would evict everything, itself last
    std::list<Block*> evicted;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      free_.push_front(block);
      held_ += block->bytes;
      while (held_ > limit_) {
        held_ -= free_.back()->bytes;
        evicted.splice(evicted.end(), free_, std::prev(free_.end()));
      }
    }
    for (Block* b : evicted) discard(b);
  }

  static void discard(Block* block) {
    std::free(block->ptr);
    delete block;
  }

  const size_t limit_ = cache_limit_bytes();
  std::mutex mutex_;
  std::list<Block*> free_;
  size_t held_ = 0;
};

bool use_cache(size_t bytes) {
  static const bool enabled = cache_limit_bytes() > 0;  // 0: every output from torch's allocator
  return enabled && bytes >= kMinBytes;
}

// Where a CPU output of `bytes` comes from: the cache, or torch's CPU
// allocator, called here directly: at::empty_like would reach it through two
// dispatcher passes, a measurable share of a small op's time.
c10::Allocator* cpu_allocator_for(size_t bytes) {
  return use_cache(bytes) ? &BufferCache::instance() : c10::GetCPUAllocator();
}

c10::DispatchKeySet cpu_keys() { return c10::DispatchKeySet(c10::DispatchKey::CPU); }

}  // namespace

OutputCacheStats output_cache_stats() { return BufferCache::instance().stats(); }

void empty_output_cache() { BufferCache::instance().empty(); }

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format) {
  if (!options.device().is_cpu()) return at::empty(sizes, options.memory_format(format));
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * options.dtype().itemsize();
  return at::detail::empty_generic(sizes, cpu_allocator_for(bytes), cpu_keys(), options.dtype().toScalarType(),
                                   format);
}

// As at::empty_like: Preserve keeps a dense input's strides and otherwise
// takes its suggested memory format.
at::Tensor empty_output_like(const at::Tensor& like, at::MemoryFormat format) {
  if (!like.is_cpu()) return at::empty_like(like, format);
  c10::Allocator* allocator = cpu_allocator_for(static_cast<size_t>(like.numel()) * like.dtype().itemsize());
  if (format != at::MemoryFormat::Preserve) {
    return at::detail::empty_generic(like.sizes(), allocator, cpu_keys(), like.scalar_type(), format);
  }
  if (like.is_non_overlapping_and_dense()) {
    return at::detail::empty_strided_generic(like.sizes(), like.strides(), allocator, cpu_keys(),
                                             like.scalar_type());
  }
  return at::detail::empty_generic(like.sizes(), allocator, cpu_keys(), like.scalar_type(),
                                   like.suggest_memory_format());
}

}  // namespace fastconv
