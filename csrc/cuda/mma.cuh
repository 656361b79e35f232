// Warp-level matrix multiply-accumulate on tensor cores (PTX mma.sync), for
// the tensor-core GEMM (gemm_tensor_core.cuh). Torch-free.
//
//   mma_m16n8k16(acc, a, b)  16x8 += 16x16 (f16 or bf16, by the element type) * 16x8, fp32 accumulators
//   mma_m16n8k8_tf32(acc, a, b)  16x8 += 16x8 (tf32) * 8x8, fp32 accumulators
//   ldmatrix_x4(r, row), ldmatrix_x2(r, row)  four or two 8x8 matrices of
//       16-bit elements from shared memory, one register each (an A
//       fragment, or the B fragments of two mma tiles, gemm_tensor_core.cuh;
//       .x2 is one B fragment; layout in csrc/simt/simt.h)
//   ldmatrix_x4_trans(r, row)  the same, each matrix transposed: fragments
//       of tiles stored with k along their rows
//
// Every lane of the warp passes its registers in PTX's fragment layouts
// (written out in csrc/simt/simt.h, which emulates the instruction): A as 4
// and B as 2 32-bit registers (two 16-bit elements each, or one tf32), C/D
// as 4 floats. Under nvcc these are inline PTX for sm_80 and newer (ldmatrix:
// sm_75); compiled for an older arch they trap, and the op layer never selects
// them there (GemmMath, gemm.cuh). On the SIMT runtime they are strict warp
// collectives that name the caller's line in their messages.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common.cuh"

#if !defined(__CUDACC__)
#include <source_location>
#endif

namespace fastconv {
namespace SIMT_KERNEL_NS {

struct MmaFragA {
  uint32_t r[4];
};
struct MmaFragB {
  uint32_t r[2];
};

// fp32 -> tf32 with cvt.rna (round to nearest, ties away from zero), kept as
// an fp32 bit pattern with the low 13 bits zero. The mma itself would only
// truncate; rounding first halves the error and makes the GPU and the SIMT
// runtime agree bit for bit on the operands.
__device__ __forceinline__ uint32_t to_tf32(float v) {
#if defined(__CUDACC__)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t out;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(out) : "f"(v));
  return out;
#else
  return __float_as_uint(v);  // never run: tensor-core kernels are not selected before sm_80
#endif
#else
  return ::simt::cvt_rna_tf32(v);
#endif
}

#if defined(__CUDACC__)

// One mma.sync of the given "shape.row.col.f32.atype.btype.f32" on the fp32
// accumulators in place (D = C), A in 4 and B in 2 32-bit registers.
#define FASTCONV_MMA_SYNC(instruction, acc, a, b)                                                  \
  asm volatile("mma.sync.aligned." instruction " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};" \
               : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])                            \
               : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]))

template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&acc)[4], const MmaFragA& a, const MmaFragB& b) {
  static_assert(sizeof(T) == 2, "m16n8k16 takes f16 or bf16 operands");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, bfloat16_t>) {
    FASTCONV_MMA_SYNC("m16n8k16.row.col.f32.bf16.bf16.f32", acc, a, b);
  } else {
    FASTCONV_MMA_SYNC("m16n8k16.row.col.f32.f16.f16.f32", acc, a, b);
  }
#else
  __trap();
#endif
}

__device__ __forceinline__ void mma_m16n8k8_tf32(float (&acc)[4], const MmaFragA& a, const MmaFragB& b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  FASTCONV_MMA_SYNC("m16n8k8.row.col.f32.tf32.tf32.f32", acc, a, b);
#else
  __trap();
#endif
}

#undef FASTCONV_MMA_SYNC

// Lane 8 j + i gives the address of row i of matrix j (16-byte aligned, in
// shared memory); register j receives word lane % 4 of row lane / 4 of it.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  __trap();
#endif
}

// The same four matrices, each transposed: register j receives element
// lane / 4 of rows 2 (lane % 4) and 2 (lane % 4) + 1 of matrix j (an A or B
// fragment of a tile stored with k along its rows).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  __trap();
#endif
}

// Only lanes 0-15's addresses are read.
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(address));
#else
  __trap();
#endif
}

#else  // the SIMT runtime

__device__ __forceinline__ void mma_collective(float (&acc)[4], const MmaFragA& a, const MmaFragB& b,
                                               ::simt::MmaShape shape, const char* instruction,
                                               const std::source_location& at) {
  ::simt::MmaRegisters regs;
  for (int i = 0; i < 4; ++i) regs.a[i] = a.r[i], regs.c[i] = acc[i];
  for (int i = 0; i < 2; ++i) regs.b[i] = b.r[i];
  ::simt::detail::mma_sync(::simt::detail::Site{instruction, at.file_name(), static_cast<int>(at.line())},
                           shape, regs);
  for (int i = 0; i < 4; ++i) acc[i] = regs.d[i];
}

// The caller's location is a defaulted argument, so that the runtime's
// rendezvous and messages are about the kernel's call site, not this header.
template <typename T>
inline void mma_m16n8k16(float (&acc)[4], const MmaFragA& a, const MmaFragB& b,
                         const std::source_location& at = std::source_location::current()) {
  static_assert(sizeof(T) == 2, "m16n8k16 takes f16 or bf16 operands");
  if constexpr (std::is_same_v<T, bfloat16_t>) {
    mma_collective(acc, a, b, ::simt::MmaShape::kM16N8K16Bf16, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
                   at);
  } else {
    mma_collective(acc, a, b, ::simt::MmaShape::kM16N8K16F16, "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
                   at);
  }
}

inline void mma_m16n8k8_tf32(float (&acc)[4], const MmaFragA& a, const MmaFragB& b,
                             const std::source_location& at = std::source_location::current()) {
  mma_collective(acc, a, b, ::simt::MmaShape::kM16N8K8Tf32, "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", at);
}

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row,
                        const std::source_location& at = std::source_location::current()) {
  ::simt::ldmatrix(::simt::detail::Site{"ldmatrix.sync.aligned.m8n8.x4.shared.b16", at.file_name(),
                                        static_cast<int>(at.line())},
                   row, r);
}

inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row,
                              const std::source_location& at = std::source_location::current()) {
  ::simt::ldmatrix<4, true>(::simt::detail::Site{"ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", at.file_name(),
                                                 static_cast<int>(at.line())},
                            row, r);
}

inline void ldmatrix_x2(uint32_t (&r)[2], const void* row,
                        const std::source_location& at = std::source_location::current()) {
  ::simt::ldmatrix(::simt::detail::Site{"ldmatrix.sync.aligned.m8n8.x2.shared.b16", at.file_name(),
                                        static_cast<int>(at.line())},
                   row, r);
}

#endif

}  // namespace SIMT_KERNEL_NS
}  // namespace fastconv
