// Winograd F(2x2, 3x3) convolution for 3x3, stride-1, undilated kernels
// (csrc/cpu/winograd_transforms.h has the transforms). Each 2x2 output tile
// costs 16 multiplications per channel pair instead of 36: the products are
// 16 GEMMs over channels, one per point of the 4x4 transformed tile,
//   forward          M[xi] (K x tiles) = U[xi] (K x C) * V[xi] (C x tiles),  Y = A^T M A
//   backward input   the same forward on dY, with the filters rotated by 180
//                    degrees and transposed (in and out channels swapped) and
//                    padding 2 - pad ("full" correlation; negative padding
//                    crops, and the gathers handle it like any other offset)
//   backward weight  M[xi] (K x C) += E[xi] (K x tiles) * V[xi]^T, over every
//                    tile of the batch, then dW = G^T M G once at the end
//                    (F(3x3, 2x2): E the transformed 2x2 tiles of dY)
// through our GEMM (csrc/cpu/gemm.h). Like im2col, an image's tiles are cut
// into blocks whose transformed data (V and M) fit in L2, each block
// transformed right before its GEMMs and consumed right after; work is split
// over (image, tile block) units, so a single image still uses every thread,
// and no two threads write the same element (the weight gradient sums
// per-thread partials in a fixed order, as im2col's does). Where the units
// are too few to share evenly (batch 1), the threads split the output
// channels instead (convolve_split; the weight gradient's rows likewise).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/index_math.h"
#include "conv2d_algorithms.h"
#include "gemm.h"
#include "parallel.h"
#include "scratch.h"
#include "winograd_transforms.h"

namespace fastconv {
namespace cpu {
namespace {

using winograd::kPoints;

// Elements of V and M (or E) of one block, together, at most: 1 MiB of
// float, Zen 5's L2 per core. Measured on one thread (convnet4's layers at
// batch 16 and VGG16's 256 ch @56, every pass): 256K and 1M run alike within
// the noise of a shared machine, 64K is up to 2x slower (narrow GEMMs).
constexpr int64_t kBlockElements = 256 * 1024;

// Tiles of one block at least, whatever the budget says: each block streams
// all 16 packed filter matrices (16 * K * C, 16 MiB of float at 512 -> 512)
// through the GEMM, so a block must be wide enough to reuse each filter value
// a few dozen times (the budget alone gives 16 tiles at 512 -> 512). On this
// shared machine 16 and 64 ran alike within the noise on VGG16's 256 and 512
// channel layers at batch 1.
constexpr int64_t kMinBlockTiles = 4 * kGemmColumnAlignment;

// The distance between the 16 points of U, V, M and E: a point's `values`
// and one cache line more. The transforms write (or read) all 16 points
// together, and at a multiple of 4 KiB apart (128 channels x 64 tiles: 32
// KiB) the 16 streams would all fall in the same L1 sets.
template <typename T>
int64_t point_stride(int64_t values) {
  return values + 64 / static_cast<int64_t>(sizeof(T));
}

// The 2x2 output tiles of a convolution whose output is out_h x out_w (the
// last row and column partial when odd), numbered row-major and cut into
// blocks that fit the budget, with enough of them that every thread has work
// even at batch 1 (csrc/cpu/parallel.h). `tiles_w`, the tiles per row, turns
// a tile's number into its row and column.
struct TileBlocks : Blocks {
  int64_t tiles_w;
};

TileBlocks tile_blocks(int64_t out_h, int64_t out_w, int64_t batch, int64_t channels_per_tile,
                       int64_t threads = at::get_num_threads()) {
  const int64_t tiles_h = ceil_div(out_h, 2), tiles_w = ceil_div(out_w, 2);
  const int64_t fit = std::max(kMinBlockTiles, kBlockElements / (kPoints * std::max<int64_t>(1, channels_per_tile)));
  return {balanced_blocks(tiles_h * tiles_w, fit, kGemmColumnAlignment, batch, threads), tiles_w};
}

// Calls body(th, tw_begin, tiles, offset) for each tile row that `range`
// crosses: tiles tw_begin .. tw_begin + tiles - 1 of tile row th, which are
// tiles offset .. offset + tiles - 1 of the range.
template <typename F>
void for_each_tile_row(const TileBlocks& blocks, ItemRange range, const F& body) {
  int64_t t = range.begin;
  const int64_t end = range.begin + range.count;
  while (t < end) {
    const int64_t th = t / blocks.tiles_w, tw = t % blocks.tiles_w;
    const int64_t n = std::min(blocks.tiles_w - tw, end - t);
    body(th, tw, n, t - range.begin);
    t += n;
  }
}

// The geometry the kernels run: a 3x3 stride-1 convolution of `in_channels`
// planes of in_h x in_w into `out_channels` planes of out_h x out_w, reading
// input row 2 * th - pad_h + i for tile row th (pad may be negative).
struct Geometry {
  int64_t batch, groups, in_channels, in_h, in_w, out_channels, out_h, out_w, pad_h, pad_w;
  int64_t in_per_group() const { return in_channels / groups; }
  int64_t out_per_group() const { return out_channels / groups; }
};

Geometry forward_geometry(const Conv2dParams& p) {
  return {p.batch, p.groups, p.in_channels, p.in_h, p.in_w, p.out_channels, p.out_h, p.out_w, p.pad_h, p.pad_w};
}

// dX is the forward convolution of dY, padded by 2 - pad, with the rotated
// and transposed filters.
Geometry backward_input_geometry(const Conv2dParams& p) {
  return {p.batch, p.groups, p.out_channels, p.out_h, p.out_w, p.in_channels, p.in_h, p.in_w, 2 - p.pad_h,
          2 - p.pad_w};
}

// V[xi][c][t] for the `channels` planes at `planes` over the tiles of `range`.
// The transform reads the planes in place and treats what lies outside them
// as zeros: copying padded rows cost a quarter of the input gradient's time
// (its padding is 2).
template <typename T>
void transform_inputs(const T* planes, int64_t channels, const Geometry& q, const TileBlocks& blocks,
                      ItemRange range, T* v, int64_t v_stride, std::vector<T>& scratch) {
  const int64_t width = 2 * blocks.tiles_w + 2;
  scratch.assign(5 * width, T(0));  // 4 rows for the transform, then a row of zeros
  const T* zeros = scratch.data() + 4 * width;
  for (int64_t c = 0; c < channels; ++c) {
    const T* plane = planes + c * q.in_h * q.in_w;
    for_each_tile_row(blocks, range, [&](int64_t th, int64_t tw, int64_t n, int64_t offset) {
      const int64_t col = 2 * tw - q.pad_w;
      const int64_t lo = std::clamp<int64_t>(-col, 0, 2 * n + 2), hi = std::clamp<int64_t>(q.in_w - col, lo, 2 * n + 2);
      const T* rows[4];
      for (int64_t i = 0; i < 4; ++i) {
        const int64_t row = 2 * th - q.pad_h + i;
        rows[i] = hi > lo && row >= 0 && row < q.in_h ? plane + row * q.in_w + col + lo : zeros;
      }
      winograd::transform_input_row(rows, n, lo, hi, scratch.data(), v + c * range.count + offset, v_stride);
    });
  }
}

// Filters per parallel task of the summed weight gradient's transform (about
// 50 flops each): enough to outweigh a task's start. (The filter transform
// runs a packed panel a task.)
constexpr int64_t kFilterGrain = 256;
// Filters per tap-major batch of the filter and weight-gradient transforms:
// 9 rows of taps on the stack (the filter transform fills whole panel
// columns of it, 64 / MR of them).
constexpr int64_t kFilterBatch = 64;

// Calls body(g, first, count) for runs of filters first .. first + count - 1
// of group g (of `filters` each) on every thread, no run across groups.
template <typename F>
void for_each_filter_run(int64_t groups, int64_t filters, const F& body) {
  parallel_chunks(groups * filters, kFilterGrain, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end;) {
      const int64_t g = f / filters, first = f % filters, count = std::min(filters - first, end - f);
      body(g, first, count);
      f += count;
    }
  });
}

// How winograd_convolve cuts its work: over (image, tile block) units, or,
// where the units are too few for the threads to share evenly, over the
// output channels: each thread runs every unit on its own part of them,
// repeating the input transform (batch 1: the input gradient of 128 -> 128
// @17 has 81 tiles, blocks of 32 and 49 that one thread runs as 64, where
// each thread can run all 81, as 96, on half the channels).
struct ConvolveSplit {
  TileBlocks blocks;
  Blocks rows;  // a group's output channels in parts of whole GEMM tiles, each part packed for itself
  // Each thread packs the filters of its own part, slice by slice, right
  // before their GEMMs, instead of all of them being packed beforehand.
  bool per_thread_filters = false;
};

// GEMM rows whose multiply-adds cost about as much as one input transform
// of the same tiles (16 outputs a channel and tile, a few additions each,
// against 16 multiply-adds a channel, row and tile): an estimate, which
// only tips close calls.
constexpr int64_t kTransformCostRows = 8;

// Elements of one group's packed filters (16 x K x C) above which a single
// unit packs them per thread (ConvolveSplit::per_thread_filters): 4 MiB of
// float (8 of double), four times a core's L2. Below it they are packed
// beforehand, by all the threads together.
constexpr int64_t kFiltersInCache = int64_t(1) << 20;

template <typename T>
ConvolveSplit convolve_split(const Geometry& q, int64_t threads) {
  const int64_t cg = q.in_per_group(), og = q.out_per_group();
  const ConvolveSplit by_blocks{tile_blocks(q.out_h, q.out_w, q.batch, cg + og, threads), {og, gemm_tile_rows<T>(), 1}};
  const ConvolveSplit by_rows{tile_blocks(q.out_h, q.out_w, q.batch, cg + og, /*threads=*/1),
                              {og, gemm_tile_rows<T>(), threads}};
  // A deep layer on one unit (512 -> 512 @14 at batch 1: one block of 49
  // tiles): its packed filters, 16 MiB, would be written out and read back
  // for 49 columns of GEMM. Packed by each thread in slices of its rows, they
  // stay in the cache, and each is transformed once all the same.
  const bool one_unit = q.batch * by_rows.blocks.count == 1;
  if (one_unit && kPoints * og * cg > kFiltersInCache && (threads == 1 || by_rows.rows.chunks() >= threads)) {
    ConvolveSplit split = by_rows;
    split.per_thread_filters = true;
    return split;
  }
  if (threads < 2 || by_rows.rows.chunks() < threads) return by_blocks;
  // Padded GEMM rows x the columns the GEMM computes for the widest block
  // (49 tiles: 56 on AVX2, where its 32-tile chunks would count 64), plus
  // the input transforms, on the busiest thread.
  const auto cost = [](const ConvolveSplit& s, int64_t units) {
    int64_t columns = 0;
    for (int64_t b = 0; b < s.blocks.count; ++b) columns = std::max(columns, gemm_computed_columns<T>(s.blocks[b].count));
    return units * columns * (s.rows.widest() + kTransformCostRows);
  };
  const int64_t block_cost = cost(by_blocks, ceil_div(q.batch * by_blocks.blocks.count, threads));
  const int64_t row_cost = cost(by_rows, q.batch * by_rows.blocks.count);
  // Cutting rows packs the filters in parts and repeats the transforms: it must win by 1/16.
  return 16 * row_cost < 15 * block_cost ? by_rows : by_blocks;
}

// Where U's elements come from: U[xi] is K x C (forward) or, for the input
// gradient, C x K of the filters rotated by 180 degrees (its "input
// channels" are the forward's outputs), of group g, its rows cut into parts.
template <typename T>
struct FilterSource {
  const T* weight;
  const Conv2dParams& p;
  bool backward;
  int64_t cols() const { return backward ? p.out_channels_per_group() : p.in_channels_per_group(); }
};

// Copies the 9 taps of filters w, w + col_step, ... (one per slot column, a
// panel's mr rows apart by row_step) into tap-major `taps` (kFilterBatch
// apart), slot j * mr + r for column j and row r; rows from `live` on are
// the panel's zero padding. Rotated: tap t from 8 - t. Scalar copies: the
// compiler turns stride-9 vector loads into gathers, no faster. A panel
// reads mr streams of the weight at once (forward: 18 KiB apart at 512
// channels), which the hardware prefetchers did not keep ahead of:
// prefetching 16 columns ahead made the copy 3.5x faster on its own.
constexpr int64_t kPrefetchColumns = 16;
template <bool kRotated, typename T>
void gather_taps(const T* w, int64_t row_step, int64_t col_step, int64_t cols, int64_t mr, int64_t live, T* taps) {
  for (int64_t j = 0; j < cols; ++j, w += col_step) {
    for (int64_t r = 0; r < mr; ++r) {
      T* slot = taps + j * mr + r;
      if (r >= live) {
        for (int64_t t = 0; t < 9; ++t) slot[t * kFilterBatch] = T(0);
        continue;
      }
      const T* filter = w + r * row_step;
      // As an integer: the address may lie past the weights near their end,
      // where a prefetch is harmless but pointer arithmetic is not defined.
      __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(filter) +
                                                       kPrefetchColumns * col_step * sizeof(T)));
      for (int64_t t = 0; t < 9; ++t) slot[t * kFilterBatch] = filter[kRotated ? 8 - t : t];
    }
  }
}

// One panel of the 16 matrices of U for rows `rows` of group g, written at
// `points[xi] + panel.offset` through the vectorised transform.
template <typename T>
void pack_filter_panel(const FilterSource<T>& source, int64_t g, ItemRange rows, const PackedPanel& panel,
                       T* const* points) {
  const int64_t og = source.p.out_channels_per_group(), cg = source.p.in_channels_per_group();
  const int64_t mr = PackedA<T>::panel_rows(), cols_per_batch = kFilterBatch / mr;
  // U's element (row, col) is filter (k, c) = (row, col), or (col, row) rotated.
  const int64_t row_step = source.backward ? 9 : cg * 9, col_step = source.backward ? cg * 9 : 9;
  const int64_t first_row = rows.begin + panel.row0, live = std::clamp<int64_t>(rows.count - panel.row0, 0, mr);
  const T* w = source.weight + g * og * cg * 9 + first_row * row_step + panel.col0 * col_step;
  T taps[9 * kFilterBatch];
  T* batch_points[kPoints];
  for (int64_t j0 = 0; j0 < panel.cols; j0 += cols_per_batch, w += cols_per_batch * col_step) {
    const int64_t cols = std::min(cols_per_batch, panel.cols - j0);
    if (source.backward) {
      gather_taps<true>(w, row_step, col_step, cols, mr, live, taps);
    } else {
      gather_taps<false>(w, row_step, col_step, cols, mr, live, taps);
    }
    for (int64_t xi = 0; xi < kPoints; ++xi) batch_points[xi] = points[xi] + panel.offset + j0 * mr;
    run_widest<winograd::Filters>(static_cast<const T*>(taps), kFilterBatch, cols * mr,
                                  static_cast<T* const*>(batch_points));
  }
}

// The 16 matrices of U for `rows` of group g (one row part), in the GEMM's
// packed layout (PackedA), sharing `memory`: 16 * elements(rows, cols), each
// a point_stride apart. The transform writes all 16 together, and end to
// end (64 x 512 floats: 128 KiB apart) they fell in the same L1 and L2
// sets: 512 -> 512 @14 at batch 1 took 2.2 ms forward, 1.7 with the stride.
template <typename T>
struct FilterPoints {
  PackedA<T> points[kPoints];

  FilterPoints() = default;
  FilterPoints(int64_t rows, int64_t cols, T* memory) {
    for (PackedA<T>& point : points) {
      point = PackedA<T>(rows, cols, memory);
      memory += point_stride<T>(PackedA<T>::elements(rows, cols));
    }
  }
  static int64_t elements(int64_t rows, int64_t cols) {
    return kPoints * point_stride<T>(PackedA<T>::elements(rows, cols));
  }
  // The 16 points share one layout: panel i of each, from one transform.
  void pack_panel(const FilterSource<T>& source, int64_t g, ItemRange rows, int64_t i) {
    T* data[kPoints];
    for (int64_t xi = 0; xi < kPoints; ++xi) data[xi] = points[xi].mutable_data();
    pack_filter_panel(source, g, rows, points[0].panel(i), static_cast<T* const*>(data));
  }
};

// U of every group and row part, packed before the convolution, the panels
// spread over the threads: on small images and batches the filters cost as
// much as the tiles. Transforming into a plain U and packing that cost a
// second pass over all 16 matrices, as long as the transform itself at
// batch 1.
template <typename T>
struct PackedFilters {
  Scratch<T> memory;                    // all of them, in one allocation
  std::vector<FilterPoints<T>> parts;  // [g * parts + part]
};

template <typename T>
PackedFilters<T> pack_filters(const FilterSource<T>& source, const Blocks& row_parts) {
  const int64_t cols = source.cols(), parts = row_parts.count, groups = source.p.groups;
  int64_t elements = 0;
  for (int64_t part = 0; part < parts; ++part) elements += FilterPoints<T>::elements(row_parts[part].count, cols);
  PackedFilters<T> filters{Scratch<T>(groups * elements), {}};
  T* memory = filters.memory.get();
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t part = 0; part < parts; ++part) {
      filters.parts.emplace_back(row_parts[part].count, cols, memory);
      memory += FilterPoints<T>::elements(row_parts[part].count, cols);
    }
  }
  // Tasks: every panel of every part of every group, numbered part by part.
  std::vector<int64_t> first_panel(parts + 1, 0);
  for (int64_t part = 0; part < parts; ++part)
    first_panel[part + 1] = first_panel[part] + filters.parts[part].points[0].panels();
  const int64_t panels = first_panel[parts];
  at::parallel_for(0, groups * panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / panels, in_group = task % panels;
      const int64_t part = std::upper_bound(first_panel.begin(), first_panel.end(), in_group) - first_panel.begin() - 1;
      filters.parts[g * parts + part].pack_panel(source, g, row_parts[part], in_group - first_panel[part]);
    }
  });
  return filters;
}

// Rows of U a thread packs at a time where it packs its own (convolve_split's
// per_thread_filters): 16 matrices of 64 x 512 floats, 2 MiB, so that a
// deep layer's filters pass through the cache in slices instead of 16 MiB
// of them being written out and read back, while the GEMM repacks the
// transformed inputs once per slice (64 rows of work per repacked column).
constexpr int64_t kSliceRows = 64;

// Y = conv(X) + bias (then ReLU) over q, cut as convolve_split says, with
// the filters packed per group and row part beforehand, or, with
// per_thread_filters, by each thread for its rows in slices.
template <typename T>
void winograd_convolve(const T* input, const FilterSource<T>& source, const T* bias, T* output, const Geometry& q,
                       bool relu) {
  const ConvolveSplit split = convolve_split<T>(q, at::get_num_threads());
  const PackedFilters<T> packed = split.per_thread_filters ? PackedFilters<T>{} : pack_filters(source, split.rows);
  const int64_t cg = q.in_per_group(), og = q.out_per_group(), parts = split.rows.count;
  const TileBlocks& blocks = split.blocks;
  struct Buffers {
    GrowingBuffer<T> v, m, corners, filters;
    std::vector<T> scratch;
  };
  // M = U V over the transformed inputs `v` of one block (`range`) for the
  // group's output channels `rows`, then Y = A^T M A, straight into the output.
  const auto multiply = [&](int64_t n, int64_t g, ItemRange range, const T* v, int64_t v_stride, ItemRange rows,
                            const FilterPoints<T>& u, Buffers& buffers) {
    const int64_t m_stride = point_stride<T>(rows.count * range.count);
    T* const m = buffers.m.get(kPoints * m_stride);
    T* const corners = buffers.corners.get(4 * range.count);
    for (int64_t xi = 0; xi < kPoints; ++xi) {
      gemm<T>(u.points[xi], range.count, {v + xi * v_stride, range.count, 1}, {m + xi * m_stride, range.count, 1},
              false);
    }
    for (int64_t k = 0; k < rows.count; ++k) {
      const int64_t oc = g * og + rows.begin + k;
      T* plane = output + (n * q.out_channels + oc) * q.out_h * q.out_w;
      const T b = bias != nullptr ? bias[oc] : T(0);
      for_each_tile_row(blocks, range, [&](int64_t th, int64_t tw, int64_t tiles, int64_t offset) {
        // Straight into the output; an odd width or height leaves out
        // the overhanging column or row.
        const int64_t oh = 2 * th, ow = 2 * tw;
        T* row0 = plane + oh * q.out_w + ow;
        run_widest<winograd::OutputRow>(static_cast<const T*>(m + k * range.count + offset), m_stride, tiles, b,
                                        relu, corners, std::min(2 * tiles, q.out_w - ow), row0,
                                        oh + 1 < q.out_h ? row0 + q.out_w : nullptr);
      });
    }
  };
  // One unit (image, tile block) on one part of the output channels.
  const auto convolve = [&](int64_t unit, int64_t part, Buffers& buffers) {
    const int64_t n = unit / blocks.count;
    const ItemRange range = blocks[unit % blocks.count], rows = split.rows[part];
    const int64_t v_stride = point_stride<T>(cg * range.count);
    T* const v = buffers.v.get(kPoints * v_stride);
    for (int64_t g = 0; g < q.groups; ++g) {
      transform_inputs(input + (n * q.in_channels + g * cg) * q.in_h * q.in_w, cg, q, blocks, range, v, v_stride,
                       buffers.scratch);
      if (!split.per_thread_filters) {
        multiply(n, g, range, v, v_stride, rows, packed.parts[g * parts + part], buffers);
        continue;
      }
      const int64_t mr = PackedA<T>::panel_rows(), slice_rows = ceil_div(kSliceRows, mr) * mr;
      for (int64_t first = 0; first < rows.count; first += slice_rows) {
        const ItemRange slice{rows.begin + first, std::min(slice_rows, rows.count - first)};
        FilterPoints<T> u(slice.count, source.cols(),
                          buffers.filters.get(FilterPoints<T>::elements(slice.count, source.cols())));
        for (int64_t i = 0; i < u.points[0].panels(); ++i) u.pack_panel(source, g, slice, i);
        multiply(n, g, range, v, v_stride, slice, u, buffers);
      }
    }
  };
  const int64_t units = q.batch * blocks.count;
  if (parts > 1) {
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      Buffers buffers;
      for (int64_t part = begin; part < end; ++part)
        for (int64_t unit = 0; unit < units; ++unit) convolve(unit, part, buffers);
    });
    return;
  }
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    Buffers buffers;
    for (int64_t unit = begin; unit < end; ++unit) convolve(unit, 0, buffers);
  });
}

// E[xi][k][t]: the transformed 2x2 tiles of dY's `channels` planes (zeros
// past the output's edge) over `range`, read in place.
template <typename T>
void transform_grad_outputs(const T* planes, int64_t channels, const Geometry& q, const TileBlocks& blocks,
                            ItemRange range, T* e, int64_t e_stride, std::vector<T>& scratch) {
  const int64_t width = 2 * blocks.tiles_w;
  scratch.assign(5 * width, T(0));  // 4 rows for the transform, then a row of zeros
  const T* zeros = scratch.data() + 4 * width;
  for (int64_t k = 0; k < channels; ++k) {
    const T* plane = planes + k * q.out_h * q.out_w;
    for_each_tile_row(blocks, range, [&](int64_t th, int64_t tw, int64_t n, int64_t offset) {
      const T* row0 = plane + 2 * th * q.out_w + 2 * tw;
      const T* row1 = 2 * th + 1 < q.out_h ? row0 + q.out_w : zeros;
      winograd::transform_grad_output_row(row0, row1, n, std::min(2 * n, q.out_w - 2 * tw), scratch.data(),
                                          e + k * range.count + offset, e_stride);
    });
  }
}

}  // namespace

template <typename T>
void winograd_forward(const T* input, const T* weight, const T* bias, T* output, const Conv2dParams& p,
                      bool relu) {
  winograd_convolve(input, FilterSource<T>{weight, p, /*backward=*/false}, bias, output, forward_geometry(p), relu);
}

template <typename T>
void winograd_backward_input(const T* grad_output, const T* weight, T* grad_input, const Conv2dParams& p) {
  winograd_convolve(grad_output, FilterSource<T>{weight, p, /*backward=*/true}, static_cast<const T*>(nullptr),
                    grad_input, backward_input_geometry(p), /*relu=*/false);
}

template <typename T>
void winograd_backward_weight(const T* grad_output, const T* input, T* grad_weight, const Conv2dParams& p) {
  const Geometry q = forward_geometry(p);
  const int64_t cg = q.in_per_group(), og = q.out_per_group(), threads = at::get_num_threads();
  // M[g][xi][k][c], its points a cache line apart beyond their K x C: the
  // final transform reads all 16 together (point_stride).
  const int64_t filters = og * cg, sum_stride = point_stride<T>(filters), sums_numel = q.groups * kPoints * sum_stride;
  // Written whole before it is read (each part's or chunk's first unit
  // overwrites, sum_over_chunks zero-fills where there are no units): no
  // need to zero it, but for the padding, which sum_over_chunks adds up.
  const Scratch<T> sums(sums_numel);
  const auto zero_padding = [&](T* sum) {
    for (int64_t point = 0; point < q.groups * kPoints; ++point)
      std::fill(sum + point * sum_stride + filters, sum + (point + 1) * sum_stride, T(0));
  };
  // M[g][xi] rows `rows` (+)= E[xi] (those rows of dY x tiles) * V[xi]^T
  // (tiles x cg) over one unit (image, tile block) of `blocks`, into `sum`.
  const auto add_unit = [&](T* sum, const TileBlocks& blocks, int64_t unit, ItemRange rows, bool accumulate,
                            GrowingBuffer<T>& v_buffer, GrowingBuffer<T>& e_buffer, std::vector<T>& scratch) {
    const int64_t n = unit / blocks.count;
    const ItemRange range = blocks[unit % blocks.count];
    const int64_t v_stride = point_stride<T>(cg * range.count), e_stride = point_stride<T>(rows.count * range.count);
    T* const v = v_buffer.get(kPoints * v_stride);
    T* const e = e_buffer.get(kPoints * e_stride);
    for (int64_t g = 0; g < q.groups; ++g) {
      transform_inputs(input + (n * q.in_channels + g * cg) * q.in_h * q.in_w, cg, q, blocks, range, v, v_stride,
                       scratch);
      transform_grad_outputs(grad_output + (n * q.out_channels + g * og + rows.begin) * q.out_h * q.out_w, rows.count,
                             q, blocks, range, e, e_stride, scratch);
      for (int64_t xi = 0; xi < kPoints; ++xi) {
        gemm<T>(rows.count, cg, range.count, {e + xi * e_stride, range.count, 1}, {v + xi * v_stride, 1, range.count},
                {sum + (g * kPoints + xi) * sum_stride + rows.begin * cg, cg, 1}, accumulate);
      }
    }
  };
  // Few units for the threads (deep layers at batch 1: 512 @14 is one block
  // of 49 tiles): each thread takes whole GEMM tiles of M's rows and sums
  // every unit into them in order, repeating the input transform, where one
  // unit a thread made two whole M (16 x 512 x 512 floats, 16 MiB) to be
  // added afterwards. The order of the sums is one thread's either way.
  const TileBlocks whole = tile_blocks(q.out_h, q.out_w, q.batch, cg + og, /*threads=*/1);
  const Blocks row_parts{og, gemm_tile_rows<T>(), threads};
  const int64_t whole_units = q.batch * whole.count;
  if (threads > 1 && whole_units > 0 && whole_units < threads && row_parts.chunks() >= threads) {
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      GrowingBuffer<T> v_buffer, e_buffer;
      std::vector<T> scratch;
      for (int64_t part = begin; part < end; ++part) {
        for (int64_t unit = 0; unit < whole_units; ++unit) {
          add_unit(sums.get(), whole, unit, row_parts[part], unit > 0, v_buffer, e_buffer, scratch);
        }
      }
    });
  } else {
    // Units summed in chunks, one per thread.
    const TileBlocks blocks = tile_blocks(q.out_h, q.out_w, q.batch, cg + og);
    sum_over_chunks(q.batch * blocks.count, sums_numel, sums.get(), [&](T* sum, int64_t unit_begin, int64_t unit_end) {
      GrowingBuffer<T> v_buffer, e_buffer;
      std::vector<T> scratch;
      zero_padding(sum);
      for (int64_t unit = unit_begin; unit < unit_end; ++unit) {
        add_unit(sum, blocks, unit, {0, og}, unit != unit_begin, v_buffer, e_buffer, scratch);
      }
    });
  }
  for_each_filter_run(q.groups, filters, [&](int64_t g, int64_t first, int64_t count) {
    // Tap-major batches from the vectorised transform, scattered into dW's
    // filter-major taps here.
    T taps[9 * kFilterBatch];
    for (int64_t f0 = 0; f0 < count; f0 += kFilterBatch) {
      const int64_t batch = std::min(kFilterBatch, count - f0);
      run_widest<winograd::WeightGradients>(static_cast<const T*>(sums.get() + g * kPoints * sum_stride + first + f0),
                                            sum_stride, batch, static_cast<T*>(taps), kFilterBatch);
      T* dw = grad_weight + (g * filters + first + f0) * 9;
      for (int64_t f = 0; f < batch; ++f)
        for (int64_t t = 0; t < 9; ++t) dw[f * 9 + t] = taps[t * kFilterBatch + f];
    }
  });
}

#define FASTCONV_INSTANTIATE_WINOGRAD(T)                                                               \
  template void winograd_forward<T>(const T*, const T*, const T*, T*, const Conv2dParams&, bool);      \
  template void winograd_backward_input<T>(const T*, const T*, T*, const Conv2dParams&);               \
  template void winograd_backward_weight<T>(const T*, const T*, T*, const Conv2dParams&);

FASTCONV_INSTANTIATE_WINOGRAD(float)
FASTCONV_INSTANTIATE_WINOGRAD(double)

}  // namespace cpu
}  // namespace fastconv
