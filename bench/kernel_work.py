"""Analytic work of each CUDA kernel launch, by kernel family: FLOPs, minimum DRAM bytes, the
output elements it could spread over threads, how full its tiles are, and what its inner loop
can reach of the FP32 peak. bench/README.md ("The GPU model") explains the formulas.

A pass of an op (say the im2col forward of one layer) is a recorded launch sequence; the work of
each launch follows from the layer's shape, the pass, and the launch's place in the sequence
(which chunk of images it serves). Two launcher rules are mirrored here, and checked against the
recorded sequence so that they cannot drift silently: the im2col chunking
(``im2col_chunk_images``, conv2d_common.cuh) and the direct weight gradient's slices
(``wgrad_slices``, conv2d_direct.cuh).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from .gpus import Gpu


class MirrorError(RuntimeError):
    """A launcher rule mirrored here no longer matches the launches the launcher made."""


@dataclass(frozen=True)
class Conv:
    """One convolution layer at one batch size (square stride, padding; dilation 1)."""

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: int = 1
    pad: int = 0
    groups: int = 1

    @property
    def p(self) -> int:
        return (self.h + 2 * self.pad - self.r) // self.stride + 1

    @property
    def q(self) -> int:
        return (self.w + 2 * self.pad - self.s) // self.stride + 1

    @property
    def pq(self) -> int:
        return self.p * self.q

    @property
    def cg(self) -> int:
        return self.c // self.groups

    @property
    def kg(self) -> int:
        return self.k // self.groups

    @property
    def crs_g(self) -> int:
        return self.cg * self.r * self.s

    @property
    def crs(self) -> int:
        return self.c * self.r * self.s

    @property
    def identity(self) -> bool:
        """im2col of a 1x1, stride-1, unpadded convolution is the input itself."""
        return self.r == 1 and self.s == 1 and self.stride == 1 and self.pad == 0

    @property
    def macs(self) -> int:
        return self.n * self.k * self.pq * self.crs_g


@dataclass(frozen=True)
class Work:
    flops: float
    bytes: float
    outputs: int                    # independent pieces of work the launch could spread over threads: output
                                    # elements, times the 1024-long slices a reduction could split into
    tile_efficiency: float = 1.0    # useful / computed FLOPs of the kernel's tiling
    items: Tuple[Tuple[int, int], ...] = ()  # a GEMM's work items in launch order, as (count, reduction
                                    # length) runs: the whole problems' tiles, then each split range's


def column_buffer_cap() -> int:
    """Mirrors column_buffer_cap (conv2d_common.cuh): 256 MiB or FASTCONV_COLUMN_BUFFER_BYTES."""
    value = int(os.environ.get("FASTCONV_COLUMN_BUFFER_BYTES", "0") or 0)
    return value if value > 0 else 256 << 20


def chunk_images(conv: Conv, elem: int) -> int:
    """Mirrors im2col_chunk_images: images per column buffer of ``elem``-byte elements."""
    per_image = conv.crs * conv.pq * elem
    return min(conv.n, max(1, column_buffer_cap() // per_image))


def wgrad_slices(conv: Conv) -> int:
    """Mirrors wgrad_slices: the direct weight gradient's split of the N*P*Q reduction."""
    tiles = conv.groups * math.ceil(conv.kg / 32) * math.ceil(conv.crs_g / 64)
    slices = min(math.ceil(512 / tiles), conv.n * conv.pq // 1024, 64, (2**31 - 1) // max(conv.pq, 1))
    return max(1, slices)


def _fill(useful: int, tile: int) -> float:
    return useful / (math.ceil(useful / tile) * tile)


def _template_ints(kernel: str, template: str) -> List[int]:
    m = re.search(template + r"<([0-9, ]+)>", kernel)
    return [int(v) for v in m.group(1).split(",")] if m else []


def outputs_per_thread(kernel: str) -> int:
    """Outputs one thread of an elementwise kernel produces in one step: a VEC-element pack of
    binary_map_kernel<T, VEC, Op> (ReLU), a Philox group of four of dropout_kernel, OUT windows of
    max_pool2d_2x2_kernel<T, OUT>; 1 for every other kernel. A launch whose threads all have their
    step has no more parallelism to spread, however few its blocks."""
    if kernel.startswith("dropout_kernel"):
        return 4
    for family in ("binary_map_kernel", "max_pool2d_2x2_kernel"):
        if kernel.startswith(family):
            m = re.match(family + r"<[^,<>]+, (\d+)", kernel)
            return int(m.group(1)) if m else 1
    return 1


def is_gemm(kernel: str) -> bool:
    """The im2col GEMMs: on CUDA cores (gemm_kernel) or tensor cores (gemm_tensor_core_kernel)."""
    return kernel.startswith("gemm_kernel") or kernel.startswith("gemm_tensor_core_kernel")


def is_tensor_core(kernel: str) -> bool:
    return kernel.startswith("gemm_tensor_core_kernel")


def gathers_columns(kernel: str) -> bool:
    """A GEMM (tensor-core or CUDA-core) that gathers its columns (the forward's
    Im2colGatherForward, the weight gradient's Im2colGatherWgrad; at stride 1 the input gradient's
    Im2colGatherForward over grad_output): it reads the input (or grad_output), with no im2col
    launch before it and no col2im after it."""
    return is_gemm(kernel) and "Im2colGather" in kernel


def gather_chunk_images(conv: Conv, pass_: str) -> int:
    """Mirrors the gathering GEMMs' chunks: the forward and input gradient take the batch
    (im2col_gather_chunk_images), the weight gradient as many images as keep images * P * Q below
    2^30 (im2col_wgrad_layout)."""
    return min(conv.n, max(1, 2**30 // max(conv.pq, 1))) if pass_ == "bwd_weight" else conv.n


def gemm_tile_efficiency(kernel: str, m: int, n: int, k: int) -> float:
    bm, bn, bk = _template_ints(kernel, "TensorCoreTile" if is_tensor_core(kernel) else "GemmTile")[:3]
    return _fill(m, bm) * _fill(n, bn) * _fill(k, bk)


MAX_CONV_BLOCKS = 1024  # kMaxConvBlocks (conv2d_common.cuh): a GEMM launch loops over more items
MIN_SPLIT_LEN, MAX_SPLITS, SPLIT_WAVES = 128, 1024, 2  # kMinSplitLen, kMaxSplits, kSplitWaves
SPLIT_ALIGN = 64  # kGemmSplitAlign


def _cuda_core_split_tiles(m: int, n: int, problems: int, fp32_lanes: int) -> int:
    """Mirrors gemm_tiles_per_split (gemm.cuh): the output tiles of the CUDA-core tile with the
    least padded area times its cost (ties: less area, then the earlier of large, wide, small)."""
    best = None
    for bm, bn, cost in ((128, 128, 4), (64, 256, 4), (64, 64, 8 if fp32_lanes >= 128 else 5)):
        items = problems * math.ceil(m / bm) * math.ceil(n / bn)
        key = (items * bm * bn * cost, items * bm * bn)
        if best is None or key < best[0]:
            best = (key, items)
    return best[1]


@dataclass(frozen=True)
class GemmSplit:
    """A GEMM's split (Im2colSplit): problems from ``whole`` on in ``splits`` reduction ranges."""
    splits: int = 1
    whole: int = 0


def split_len(k: int, splits: int) -> int:
    """Mirrors gemm_split_len: ranges of whole multiples of 64 indices (kGemmSplitAlign)."""
    return math.ceil(math.ceil(k / splits) / SPLIT_ALIGN) * SPLIT_ALIGN


def tail_finish(whole_tiles: int, ranges: int, k: int, range_time: int, resident: int) -> int:
    """Mirrors gemm_tail_finish: rounds of whole tiles, the free slots of their last round taking
    ranges meanwhile, then rounds of the remaining ranges; in reduction indices."""
    rounds = math.ceil(whole_tiles / resident)
    early = (rounds * resident - whole_tiles) * (k // range_time)
    return rounds * k + math.ceil(max(0, ranges - early) / resident) * range_time


def _tail_split(per_image: int, images: int, k: int, resident: int) -> GemmSplit:
    """Mirrors im2col_tail_split for a GEMM of ``per_image`` tiles an image on the launch's tile."""
    tiles, whole = per_image * images, resident // per_image
    if tiles >= SPLIT_WAVES * resident or whole < 1 or whole >= images:
        return GemmSplit()
    whole_tiles = whole * per_image
    split_tiles = tiles - whole_tiles
    best, best_finish = GemmSplit(), math.ceil(tiles / resident) * k
    for splits in range(max(2, math.ceil((SPLIT_WAVES * resident - whole_tiles) / split_tiles)), MAX_SPLITS + 1):
        length = split_len(k, splits)
        if length < MIN_SPLIT_LEN:
            break
        if math.ceil(k / length) < splits:
            continue
        finish = tail_finish(whole_tiles, split_tiles * splits, k, length + MIN_SPLIT_LEN, resident)
        if finish < best_finish:
            best, best_finish = GemmSplit(splits, whole), finish
    return best


def gemm_split_ranges(conv: Conv, pass_: str, images: int, sms: int, fp32_lanes: int, tensor_cores: bool,
                      elem: int = 4, tile: Tuple[int, int] = (64, 64)) -> GemmSplit:
    """Mirrors the im2col launchers' split-K (conv2d_im2col.cuh) for a chunk of ``images``: the
    weight gradient's always; the forward's and the gathering input gradient's under one wave of
    their tiles, and between one and two waves (on the launch's ``tile``, bm x bn) for the images
    after the first wave; ranges for two waves, none shorter than 128 indices."""
    c = conv
    blocks_per_sm = 1 if elem == 8 and not tensor_cores else 2  # gemm_blocks_per_sm
    if pass_ == "bwd_weight":
        m, n, k, problems = c.kg, c.crs_g, images * c.pq, c.groups
    elif pass_ == "fwd":
        m, n, k, problems = c.kg, c.pq, c.crs_g, images * c.groups
    else:
        m, n, k, problems = c.cg, c.h * c.w, c.kg * c.r * c.s, images * c.groups
    # im2col_split_tiles: the tensor-core GEMM's 64 x 64 tile, or the CUDA-core tile of a split problem.
    tiles = (problems * math.ceil(m / 64) * math.ceil(n / 64) if tensor_cores
             else _cuda_core_split_tiles(m, n, problems, fp32_lanes))
    resident = blocks_per_sm * sms
    if pass_ == "fwd" and images * c.k * c.pq >= 2**31:
        return GemmSplit()
    if pass_ != "bwd_weight" and tiles >= resident:
        if elem == 2:  # half and bfloat16 results keep every image whole
            return GemmSplit()
        per_image = c.groups * math.ceil(m / tile[0]) * math.ceil(n / tile[1])
        return _tail_split(per_image, images, k, resident)
    if k < 2 * MIN_SPLIT_LEN:
        return GemmSplit()
    splits = min(math.ceil(SPLIT_WAVES * resident / max(tiles, 1)), math.ceil(k / MIN_SPLIT_LEN), MAX_SPLITS)
    return GemmSplit(max(1, splits))


def gemm_tile(kernel: str) -> Tuple[int, int]:
    """(BM, BN) of a GEMM kernel's tile, from its name."""
    bm, bn = _template_ints(kernel, "TensorCoreTile" if is_tensor_core(kernel) else "GemmTile")[:2]
    return bm, bn


def gemm_items(split: GemmSplit, problems: int, groups: int, tiles: int, k: int) -> Tuple[Tuple[int, int], ...]:
    """A GEMM's work items in launch order as (count, reduction length) runs (gemm_work_item):
    the ``tiles`` tiles of each group of each whole problem over all of ``k``, then, problem by
    problem and group by group, those of each split range in turn (the last ones shorter, or
    empty)."""
    if split.splits <= 1:
        return ((problems * groups * tiles, k),)
    runs = [(split.whole * groups * tiles, k)] if split.whole else []
    length = split_len(k, split.splits)
    ranges = [(tiles, max(0, min(length, k - s * length))) for s in range(split.splits)]
    return tuple(runs + ranges * ((problems - split.whole) * groups))


def _check_split_blocks(kernel: str, blocks: Optional[int], items: Tuple[Tuple[int, int], ...]) -> None:
    """The launch's blocks are its tile's items under the mirrored split (below the grid cap)."""
    expected = sum(count for count, _ in items)
    if blocks is None or blocks >= MAX_CONV_BLOCKS and expected >= MAX_CONV_BLOCKS:
        return
    if blocks != expected:
        raise MirrorError(f"{kernel}: {blocks} blocks, but the mirrored split {items} gives {expected}")


def conv_pass_work(conv: Conv, pass_: str, kernels: Sequence[str], elem: int = 4,
                   blocks: Optional[Sequence[int]] = None,
                   split: Optional[Callable[[int, Tuple[int, int]], GemmSplit]] = None) -> List[Work]:
    """The work of each launch of one pass (``fwd``, ``bwd_input``, ``bwd_weight``, ``bwd_bias``)
    of a convolution, given the recorded kernels of that pass in order. ``split(images, tile)``:
    the split-K of the pass's GEMM on a chunk of that many images and its tile (gemm_split_ranges
    for the modelled GPU; none by default), checked against the launches' ``blocks`` where given.
    fp32 (``elem`` 4)."""
    acc = 8 if elem == 8 else 4
    c, flops = conv, 2.0 * conv.macs
    in_elems, out_elems, w_elems = c.n * c.c * c.h * c.w, c.n * c.k * c.pq, c.k * c.crs_g
    # A reduction over N*P*Q could be split into slices of 1024 (the direct weight gradient's shortest).
    splits = max(1, c.n * c.pq // 1024)
    works: List[Work] = []
    gathered = any(gathers_columns(k) for k in kernels)
    chunk = gather_chunk_images(c, pass_) if gathered else chunk_images(c, acc if pass_ == "bwd_input" else elem)
    done = 0  # images of the batch whose chunk has finished

    def images() -> int:
        return min(chunk, c.n - done)

    last = GemmSplit()  # of the last GEMM: the split its partials' pass adds
    last_images = 0
    for i, kernel in enumerate(kernels):
        n = images()
        share = n / c.n
        if kernel.startswith("im2col_kernel"):
            works.append(Work(0.0, elem * (share * in_elems + n * c.crs * c.pq), n * c.crs * c.pq))
        elif is_gemm(kernel):
            # Gathered columns are the input, read once from DRAM (the taps' reuses hit the caches).
            columns = share * in_elems if c.identity or gathers_columns(kernel) else n * c.crs * c.pq
            block_count = blocks[i] if blocks is not None else None
            last_images = n
            bm, bn = gemm_tile(kernel)

            def split_gemm(problems: int, rows: int, cols: int, k: int, per_problem_results: int):
                """The split, work items and result bytes of a GEMM of per-problem tiles."""
                sp = split(n, (bm, bn)) if split else GemmSplit()
                items = gemm_items(sp, problems, c.groups, math.ceil(rows / bm) * math.ceil(cols / bn), k)
                _check_split_blocks(kernel, block_count, items)
                # A split problem writes its ranges' partials, which the next pass reads back.
                split_problems = problems - sp.whole if sp.splits > 1 else 0
                written = (elem * (problems - split_problems) + acc * sp.splits * split_problems) * per_problem_results
                return sp, items, written

            if pass_ == "fwd":
                last, items, written = split_gemm(n, c.kg, c.pq, c.crs_g, c.k * c.pq)
                eff = gemm_tile_efficiency(kernel, c.kg, c.pq, c.crs_g)
                works.append(Work(flops * share, elem * (w_elems + columns + c.k) + written,
                                  int(share * out_elems), eff, items))
            elif pass_ == "bwd_input" and gathers_columns(kernel):
                # dX = W^T dY gathered: reads dY and the weights, writes dX; no column gradient.
                last, items, written = split_gemm(n, c.cg, c.h * c.w, c.kg * c.r * c.s, c.c * c.h * c.w)
                eff = gemm_tile_efficiency(kernel, c.cg, c.h * c.w, c.kg * c.r * c.s)
                works.append(Work(flops * share, elem * (w_elems + share * out_elems) + written,
                                  int(share * in_elems), eff, items))
            elif pass_ == "bwd_input":
                eff = gemm_tile_efficiency(kernel, c.crs_g, c.pq, c.kg)
                items = gemm_items(GemmSplit(), n, c.groups, math.ceil(c.crs_g / bm) * math.ceil(c.pq / bn), c.kg)
                works.append(Work(flops * share, elem * (w_elems + share * out_elems) + acc * n * c.crs * c.pq,
                                  n * c.crs * c.pq, eff, items))
            else:
                last, items, _ = split_gemm(1, c.kg, c.crs_g, n * c.pq, w_elems)
                eff = gemm_tile_efficiency(kernel, c.kg, c.crs_g, n * c.pq)
                # Later chunks read and add what they accumulate into (unsplit, the GEMM itself).
                dw = acc * w_elems * (last.splits if last.splits > 1 else 2 if done > 0 else 1)
                works.append(Work(flops * share, elem * (share * out_elems + columns) + dw, w_elems * splits, eff,
                                  items))
            if pass_ == "fwd" or pass_ == "bwd_weight" or gathers_columns(kernel):
                done += n
        elif kernel.startswith("col2im_kernel"):
            works.append(Work(float(n * c.crs * c.pq), acc * n * c.crs * c.pq + elem * share * in_elems,
                              int(share * in_elems)))
            done += n
        elif kernel.startswith("conv2d_direct_forward"):
            eff = direct_tile_efficiency(kernel, c.p, c.q, c.kg)
            works.append(Work(flops, elem * (in_elems + w_elems + c.k + out_elems), out_elems, eff))
        elif kernel.startswith("conv2d_direct_backward_input"):
            eff = direct_tile_efficiency(kernel, c.h, c.w, c.cg)
            works.append(Work(flops, elem * (out_elems + w_elems + in_elems), in_elems, eff))
        elif kernel.startswith("conv2d_direct_backward_weight"):
            slices = wgrad_slices(c)
            if slices > 1 and not any(k.startswith("conv2d_reduce_partials") for k in kernels):
                raise MirrorError(f"wgrad_slices gives {slices} slices for {c}, but no partials were reduced")
            eff = _fill(c.kg, 32) * _fill(c.crs_g, 64)
            written = acc * slices * w_elems if slices > 1 else elem * w_elems
            works.append(Work(flops, elem * (out_elems + in_elems) + written, w_elems * splits, eff))
        elif kernel.startswith("conv2d_reduce_forward_partials"):
            # The split images' ranges, added with the bias (and ReLU) into their output.
            n_out = (last_images - last.whole) * c.k * c.pq
            works.append(Work(float(last.splits * n_out), acc * last.splits * n_out + elem * (n_out + c.k), n_out))
            last = GemmSplit()
        elif kernel.startswith("conv2d_reduce_partials"):
            # Sums of the direct weight gradient's slices, or of a split GEMM's ranges (the split-K
            # of the im2col weight gradient and of the gathering input gradient's split images);
            # the bias gradient's ranges are counted as one read (see README).
            n = (c.k if pass_ == "bwd_bias" else (last_images - last.whole) * c.c * c.h * c.w if pass_ == "bwd_input"
                 else w_elems)
            slices = wgrad_slices(c) if any(k.startswith("conv2d_direct") for k in kernels) else \
                last.splits if pass_ != "bwd_bias" else 1
            works.append(Work(float((slices - 1) * n), acc * slices * n + elem * n, n))
            last = GemmSplit()  # consumed: a later pass (the fp32 dW accumulator's conversion) adds one
        elif kernel.startswith("conv2d_backward_bias"):
            works.append(Work(float(out_elems), elem * (out_elems + c.k), c.k * splits))
        else:
            raise ValueError(f"no work formula for kernel {kernel!r} in a convolution pass")
    expected = math.ceil(c.n / chunk)
    gemms = sum(is_gemm(k) for k in kernels)
    if gemms and gemms != expected:
        raise MirrorError(f"{pass_} of {c}: {gemms} GEMM launches, but im2col_chunk_images gives {expected} chunks")
    return works


def direct_tile_efficiency(kernel: str, rows: int, cols: int, channels: int) -> float:
    th, tw, _ppt, slots, cpt = _template_ints(kernel, "DirectTile") or (1, 1, 1, 1, 1)
    return _fill(rows, th) * _fill(cols, tw) * _fill(channels, slots * cpt)


def elementwise_work(op: str, pass_: str, n_in: int, n_out: int, elem: int = 4) -> Work:
    """Max pooling, ReLU and dropout: the bytes an ideal kernel reads and writes (bench/README.md,
    "Work"), one operation per output element."""
    if op == "max_pool2d":
        if pass_ == "fwd":
            return Work(float(n_out * 4), elem * n_in + (elem + 8) * n_out, n_out)
        return Work(float(n_in), (elem + 8) * n_out + elem * n_in, n_in)
    if op == "relu":
        return Work(float(n_in), (2 if pass_ == "fwd" else 3) * elem * n_in, n_in)
    if op == "dropout":
        return Work(float(n_in), 2 * elem * n_in, n_in)
    raise ValueError(f"unknown op {op!r}")


def inner_loop_ceiling(kernel: str, gpu: Gpu, stride: int = 1) -> Optional[float]:
    """The share of the FP32 peak a compute kernel's inner loop can issue, from its instruction
    mix per step of one thread: ``fma`` FMAs, ``lds`` shared-memory wavefronts (128 bytes per
    clock per SM: a 32-bit load of a warp is one, a 128-bit load four, a broadcast one), ``ldi``
    load instructions. An SM retires lanes/32 warp FMAs, one wavefront and four instructions per
    clock; the slowest of the three sets the pace. None for memory-bound families."""
    if is_tensor_core(kernel):
        return tensor_core_ceiling(kernel, gpu)
    fma_per_clock = gpu.fp32_lanes_per_sm / 32
    if kernel.startswith("gemm_kernel"):
        _bm, _bn, _bk, tm, tn = _template_ints(kernel, "GemmTile")
        fma, lds, ldi = tm * tn, tm + tn, (tm + tn) // 4       # 128-bit loads of A and B per k
    elif kernel.startswith("conv2d_direct_forward_kernel"):
        ppt, cpt = _template_ints(kernel, "DirectTile")[2], _template_ints(kernel, "DirectTile")[4]
        fma, lds, ldi = ppt * cpt, ppt * stride + cpt, ppt + cpt  # per tap: inputs (strided), weights
    elif kernel.startswith("conv2d_direct_backward_input_kernel"):
        cpt = _template_ints(kernel, "DirectTile")[4]
        fma, lds, ldi = cpt, 1 + cpt, 1 + cpt                   # per output channel: dY, weights
    elif kernel.startswith("conv2d_direct_backward_weight_kernel"):
        fma, lds, ldi = 8, 6, 6                                 # 2 x 4 tile: 2 dY, 4 columns per pixel
    else:
        return None
    fma_clocks = fma / fma_per_clock
    return fma_clocks / max(fma_clocks, lds, (fma + ldi) / 4)


def tensor_peak_tflops(kernel: str, gpu: Gpu) -> float:
    """The dense tensor-core peak a tensor-core GEMM runs against: TF32 for float operands,
    FP16/BF16 for 16-bit ones."""
    return gpu.tf32_tensor_tflops if kernel.startswith("gemm_tensor_core_kernel<float") else gpu.fp16_tensor_tflops


def tensor_core_ceiling(kernel: str, gpu: Gpu) -> float:
    """The share of the tensor-core peak the mma.sync loop can reach, shared memory permitting.
    Per warp and mma k-step of a WM x WN warp tile: (WM/16) x (WN/8) mma of 16 x 8 x kMma MACs,
    fed by fragment loads, conflict-free (the rows are padded): one ldmatrix .x4 for each 16-row
    A fragment and one .x4 for each pair of 8-column B fragments, served in 4 wavefronts of 8
    16-byte rows each, 2 a B fragment (the same wavefronts 32-bit loads took; ldmatrix saves
    instructions, not shared-memory bandwidth). kMma is 8 for tf32 and 16 for 16-bit operands (the same words
    then hold twice the elements)."""
    bm, bn, _bk, warps_m, warps_n = _template_ints(kernel, "TensorCoreTile")[:5]
    wm, wn = bm // warps_m, bn // warps_n
    k_mma = 8 if kernel.startswith("gemm_tensor_core_kernel<float") else 16
    macs = (wm // 16) * (wn // 8) * 16 * 8 * k_mma
    wavefronts = (wm // 16) * 4 + (wn // 8) * 2
    peak_macs_per_clock = tensor_peak_tflops(kernel, gpu) * 1e12 / (2 * gpu.sms * gpu.boost_mhz * 1e6)
    return min(1.0, macs / wavefronts / peak_macs_per_clock)
