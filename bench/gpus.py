"""The GPUs the performance model (bench/cuda_model.py) knows: one table of vendor figures.

Sources (NVIDIA's published figures; dense, i.e. without structured sparsity):
* H100 SXM5 80 GB: "NVIDIA H100 Tensor Core GPU" datasheet (FP32 67 TFLOPS, TF32 Tensor Core
  494.7 TFLOPS dense, BF16/FP16 989.4, HBM3 3.35 TB/s) and the "NVIDIA H100 Tensor Core GPU
  Architecture" whitepaper (132 SMs in the SXM5 product, 1980 MHz boost, 228 KB of shared
  memory per SM of which 227 KB per block, 64K 32-bit registers, 2048 threads and 32 blocks per
  SM); compute capability 9.0.
* H200 SXM 141 GB: "NVIDIA H200 Tensor Core GPU" datasheet (the H100 SXM5's compute: FP32 67
  TFLOPS, TF32 Tensor Core 494.7 TFLOPS dense, BF16/FP16 989.4; HBM3e 4.8 TB/s); the same
  GH100 chip, so the same SMs, clocks and per-SM limits as the H100 SXM5.
* A100 SXM4 80 GB: "NVIDIA A100 Tensor Core GPU" datasheet (FP32 19.5 TFLOPS, TF32 Tensor Core
  156 TFLOPS dense, BF16/FP16 312, HBM2e 2,039 GB/s) and the "NVIDIA A100 Tensor Core GPU
  Architecture" whitepaper (108 SMs, 1410 MHz boost, 164 KB of shared memory per SM of which
  163 KB per block, 64K registers, 2048 threads and 32 blocks per SM); compute capability 8.0.
* Both: the CUDA C++ Programming Guide's "Compute Capabilities" table (1 KB of shared memory
  reserved per block by the system; registers allocated per warp in units of 256) and the
  toolkit's cuda_occupancy.h, which bench/occupancy.cpp calls with these figures.

The FP32 figure is SMs x FP32 lanes per SM (128 on Hopper, 64 on Ampere GA100) x 2 (an FMA) x
boost clock: our kernels run on those lanes (no tensor cores); the tensor-core figures are what
cuDNN can reach with TF32 or half. Shared memory serves 128 bytes per clock per SM on both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict


@dataclass(frozen=True)
class Gpu:
    name: str
    arch: str                       # "90": the sm_XX the model compiles for
    compute_capability: str
    sms: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    fp32_lanes_per_sm: int
    regs_per_sm: int
    reg_alloc_unit: int             # registers, allocated per warp in units of this
    smem_per_sm: int                # bytes
    smem_per_block_optin: int       # bytes, the most one block may use (with the opt-in)
    smem_reserved_per_block: int    # bytes the system keeps per resident block
    dram_gbps: float
    fp32_tflops: float
    tf32_tensor_tflops: float
    fp16_tensor_tflops: float
    boost_mhz: int

    @property
    def max_warps_per_sm(self) -> int:
        return self.max_threads_per_sm // 32

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


GPUS: Dict[str, Gpu] = {
    "h100": Gpu("NVIDIA H100 SXM5 80GB", "90", "9.0", sms=132, max_threads_per_sm=2048, max_blocks_per_sm=32,
                fp32_lanes_per_sm=128, regs_per_sm=65536, reg_alloc_unit=256, smem_per_sm=228 * 1024, smem_per_block_optin=227 * 1024,
                smem_reserved_per_block=1024, dram_gbps=3350.0, fp32_tflops=66.9, tf32_tensor_tflops=494.7,
                fp16_tensor_tflops=989.4, boost_mhz=1980),
    "h200": Gpu("NVIDIA H200 SXM 141GB", "90", "9.0", sms=132, max_threads_per_sm=2048, max_blocks_per_sm=32,
                fp32_lanes_per_sm=128, regs_per_sm=65536, reg_alloc_unit=256, smem_per_sm=228 * 1024, smem_per_block_optin=227 * 1024,
                smem_reserved_per_block=1024, dram_gbps=4800.0, fp32_tflops=66.9, tf32_tensor_tflops=494.7,
                fp16_tensor_tflops=989.4, boost_mhz=1980),
    "a100": Gpu("NVIDIA A100 SXM4 80GB", "80", "8.0", sms=108, max_threads_per_sm=2048, max_blocks_per_sm=32,
                fp32_lanes_per_sm=64, regs_per_sm=65536, reg_alloc_unit=256, smem_per_sm=164 * 1024, smem_per_block_optin=163 * 1024,
                smem_reserved_per_block=1024, dram_gbps=2039.0, fp32_tflops=19.5, tf32_tensor_tflops=156.0,
                fp16_tensor_tflops=312.0, boost_mhz=1410),
}


def by_compute_capability(cc: str, name: str = "") -> str:
    """The table's key for a compute capability such as "9.0" (nvidia-smi's compute_cap): the
    GPU whose key ``name`` holds (nvidia-smi's "NVIDIA H200"), else the first of that capability."""
    matching = [key for key, gpu in GPUS.items() if gpu.compute_capability == cc]
    named = [key for key in matching if key in name.lower()]
    if named or matching:
        return (named or matching)[0]
    raise KeyError(f"no GPU of compute capability {cc} in bench/gpus.py (known: "
                   + ", ".join(f"{k} {g.compute_capability}" for k, g in GPUS.items()) + ")")
