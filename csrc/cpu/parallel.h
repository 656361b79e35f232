// Parallel loops for the CPU kernels: at::parallel_for with grain sizes chosen
// so that small tensors stay on one thread, and deterministic parallel sums.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "../common/index_math.h"
#include "scratch.h"

namespace fastconv {
namespace cpu {

// Elementwise loops are memory-bound: split only when each thread gets at
// least this many elements.
constexpr int64_t kElementwiseGrain = 32768;

// Items [begin, begin + count): output pixels, Winograd tiles.
struct ItemRange {
  int64_t begin;
  int64_t count;
};

// How many parts to cut each of `images` images into when the work is split
// over (image, part) units on `threads` threads: at least `at_least` (what the
// cache allows) and one unit per thread at least; then more, up to
// `at_most`, until the units spread evenly: at::parallel_for gives each
// thread ceil(units / threads) of them, and with few threads one unit more is
// a large share of the time (3 units on 2 threads: one thread does 2). Within
// 1/8 of even is even enough, which any count that makes `units` a multiple
// of `threads` reaches.
inline int64_t parts_per_image(int64_t images, int64_t at_least, int64_t at_most, int64_t threads) {
  images = std::max<int64_t>(1, images);
  at_most = std::max<int64_t>(1, at_most);
  const int64_t wanted = std::clamp(std::max(at_least, ceil_div(threads, images)), int64_t{1}, at_most);
  for (int64_t parts = wanted; parts <= at_most; ++parts) {
    const int64_t units = images * parts;
    if (8 * ceil_div(units, threads) * threads <= 9 * units) return parts;
  }
  return wanted;
}

// An image's `items` cut into `count` blocks made of whole `align`-item
// chunks (the GEMM's column tiles: a partial tile costs as much as a full
// one), spread as evenly as the chunks allow: block sizes differ by one chunk
// at most, and only the last block ends on a partial chunk. Even blocks keep
// the threads even when the units are few (289 tiles in blocks of 128: 128 +
// 128 + 33, one thread doing 2 of the 3; in 4 blocks: 64 + 96 + 64 + 65).
struct Blocks {
  int64_t items, align, count;
  int64_t chunks() const { return ceil_div(items, align); }
  // The largest block, counted in whole chunks (as the GEMM pays for them).
  int64_t widest() const { return ceil_div(chunks(), std::max<int64_t>(1, count)) * align; }
  ItemRange operator[](int64_t i) const {
    const int64_t begin = std::min(items, align * (chunks() * i / count));
    return {begin, std::min(items, align * (chunks() * (i + 1) / count)) - begin};
  }
};

// `items` per image cut into blocks of about `fit` items at most (what fits
// the cache) for work split over (image, block) units of `images` images on
// `threads` threads (parts_per_image); pass threads = 1 for blocks that must
// not depend on the thread count.
inline Blocks balanced_blocks(int64_t items, int64_t fit, int64_t align, int64_t images, int64_t threads) {
  if (items <= 0) return {0, align, 0};
  const int64_t chunks = ceil_div(items, align);
  return {items, align, parts_per_image(images, ceil_div(items, std::max<int64_t>(1, fit)), chunks, threads)};
}

template <typename F>
void parallel_chunks(int64_t n, int64_t grain, const F& body) {
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { body(begin, end); });
}

// A sum over `units` work items (a weight gradient over (image, block)
// units): the units are cut into one chunk per thread, in order; chunk 0 sums
// into `result`, the others into private buffers of `numel` that are added to
// it afterwards in chunk order, so the result is deterministic for a given
// thread count and no two threads write the same element.
// body(sum, unit_begin, unit_end) overwrites `sum` with its units' sum.
template <typename T, typename F>
void sum_over_chunks(int64_t units, int64_t numel, T* result, const F& body) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(units, at::get_num_threads()));
  // Each chunk overwrites its buffer whole: no need to zero it.
  const Scratch<T> partials((chunks - 1) * numel);
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      T* sum = chunk == 0 ? result : partials.get() + (chunk - 1) * numel;
      const int64_t unit_begin = units * chunk / chunks, unit_end = units * (chunk + 1) / chunks;
      if (unit_begin == unit_end) {
        std::fill_n(sum, numel, T(0));
      } else {
        body(sum, unit_begin, unit_end);
      }
    }
  });
  if (chunks == 1) return;
  // Each element in chunk order, whichever thread adds it.
  parallel_chunks(numel, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = 1; chunk < chunks; ++chunk) {
      const T* part = partials.get() + (chunk - 1) * numel;
      for (int64_t i = begin; i < end; ++i) result[i] += part[i];
    }
  });
}

}  // namespace cpu
}  // namespace fastconv
