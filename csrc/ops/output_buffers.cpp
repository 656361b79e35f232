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
#include <unordered_map>
#include <vector>

#include "../common/read_number_file.h"
#include "../cpu/scratch.h"

namespace fastconv {
namespace {

// Sizes are rounded up to whole buckets, so that outputs of nearly the same
// size share buffers. Below one bucket, glibc's heap serves outputs without
// fresh page faults, and the cache leaves them to torch's allocator.
constexpr size_t kBucket = size_t{2} << 20;
constexpr size_t kMinBytes = kBucket;
constexpr size_t kAlignment = 64;  // c10's CPU alignment

// The memory this process may use: physical memory, or its container's limit
// where that is lower (cgroup v2 memory.max, v1 memory.limit_in_bytes;
// sysconf reports the host's memory inside a container). 0 if unknown.
size_t usable_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page_bytes = sysconf(_SC_PAGESIZE);
  size_t usable = pages > 0 && page_bytes > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page_bytes) : 0;
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    unsigned long long limit = 0;
    char next = 0;
    // "max" (no limit) does not parse as a number.
    if (read_number_file(path, limit, next) && limit > 0 && (usable == 0 || limit < usable)) {
      usable = static_cast<size_t>(limit);
    }
  }
  return usable;
}

// Unset, the cache may hold an eighth of the usable memory, shared among the
// processes torchrun starts on the host (LOCAL_WORLD_SIZE, each with its own
// cache), between 256 MiB and 4 GiB: enough for the activations a training
// step releases at the sizes where a fresh mapping costs most (VGG16's first
// ReLU at batch 32 is 411 MB, and its forward output and input gradient are
// both released every step), without holding a large host's memory.
size_t default_cache_limit_bytes() {
  constexpr size_t kFloor = size_t{256} << 20, kCeiling = size_t{4} << 30;
  size_t share = usable_memory_bytes() / 8;
  if (const char* ranks = std::getenv("LOCAL_WORLD_SIZE")) {
    const long count = std::strtol(ranks, nullptr, 10);
    if (count > 1) share /= static_cast<size_t>(count);
  }
  return std::clamp(share / kBucket * kBucket, kFloor, kCeiling);
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

// Released blocks: a list in release order (most recent first) for
// eviction, and per size the list positions of its blocks (most recent
// last) for lookup. With the default bound the cache may hold thousands of
// blocks of sizes that never come back, and a lookup runs under the lock on
// every large allocation.
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
      by_size_.clear();
      held_ = 0;
    }
    for (Block* b : released) discard(b);
  }

 private:
  using Position = std::list<Block*>::iterator;

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

  // The most recently released block of `bytes`, whose pages are the likeliest in cache.
  Block* take(size_t bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto same = by_size_.find(bytes);
    if (same == by_size_.end() || same->second.empty()) return nullptr;
    const Position at = same->second.back();
    same->second.pop_back();
    Block* block = *at;
    free_.erase(at);
    held_ -= bytes;
    return block;
  }

  static void release(void* context) { instance().put(static_cast<Block*>(context)); }

  void put(Block* block) {
    if (block->bytes > limit_) return discard(block);  // would evict everything, itself last
    std::vector<Block*> evicted;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      free_.push_front(block);
      by_size_[block->bytes].push_back(free_.begin());
      held_ += block->bytes;
      while (held_ > limit_) {
        // The least recently released block is the oldest of its size: the first in its list.
        Block* oldest = free_.back();
        std::vector<Position>& same = by_size_[oldest->bytes];
        same.erase(same.begin());
        free_.pop_back();
        held_ -= oldest->bytes;
        evicted.push_back(oldest);
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
  std::unordered_map<size_t, std::vector<Position>> by_size_;
  size_t held_ = 0;
};

bool use_cache(size_t bytes) {
#if defined(__SANITIZE_ADDRESS__)
  // Reused buffers would hide reads of stale values and writes past an
  // output's end inside its bucket from AddressSanitizer.
  static const bool enabled = false;
#else
  static const bool enabled = cache_limit_bytes() > 0;  // 0: every output from torch's allocator
#endif
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

c10::DataPtr cpu_scratch_memory(size_t bytes) { return cpu_allocator_for(bytes)->allocate(bytes); }

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
