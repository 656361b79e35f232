// CPU ReLU. The forward works in 64-element blocks, computing each block's
// outputs and its keep word (bit j set when !(x_j <= 0): the elements whose
// gradient torch's threshold_backward passes, NaN included), and stores the
// word when the caller keeps the mask for backward (keep_bits.h). Backward
// from a stored mask selects the gradient by those words; backward from the
// output (other layouts, the other backends' path) is a plain select.
// Outputs larger than the last-level cache are written with streaming stores
// (streaming_stores.h).
#include "relu.h"

#include "isa_loops.h"
#include "keep_bits.h"
#include "parallel.h"
#include "streaming_stores.h"

namespace fastconv {
namespace cpu {
namespace {

// A branch-free select, so the compiler vectorises it (run_widest compiles it
// for AVX-512 or AVX2 where the CPU has it).
template <typename T>
struct ReluBackward {
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const T* output, T* grad_input, int64_t begin,
                                       int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // Both loads unconditional: a load inside the select would stop GCC from vectorising.
      const T grad = grad_output[i];
      const T out = output[i];
      grad_input[i] = out <= T(0) ? T(0) : grad;
    }
  }
};

// One 64-element block per ISA: forward(in, out) returns the keep word;
// backward(grad, word, grad_in). The output keeps x unless x < 0, so -0.0 and
// NaN pass through, as in torch. The portable steps also take the element
// count, for the tensor's last block.
template <CpuIsa>
struct Steps;

template <>
struct Steps<CpuIsa::kBaseline> {
  template <bool, typename T>
  static uint64_t forward(const T* in, T* out, int64_t count = kKeepBlock) {
    uint64_t word = 0;
    for (int64_t j = 0; j < count; ++j) {
      const T x = in[j];
      out[j] = x < T(0) ? T(0) : x;
      word |= static_cast<uint64_t>(!(x <= T(0))) << j;
    }
    return word;
  }

  template <bool, typename T>
  static void backward(const T* grad, uint64_t word, T* grad_in, int64_t count = kKeepBlock) {
    for (int64_t j = 0; j < count; ++j) grad_in[j] = (word >> j) & 1 ? grad[j] : T(0);
  }
};

#if defined(FASTCONV_CPU_X86)

// NLE_UQ ("not <=", true for NaN) is the keep test.
template <>
struct Steps<CpuIsa::kAvx512> {
  template <bool kStream, typename T>
  FASTCONV_TARGET_AVX512 static uint64_t forward(const T* in, T* out) {
    // The keep masks are joined in mask registers (kunpack), one move to a
    // general register per block.
    if constexpr (sizeof(T) == 4) {
      const __m512 zero = _mm512_setzero_ps();
      __mmask16 keep[4];
      for (int q = 0; q < 4; ++q) {
        const __m512 x = _mm512_loadu_ps(in + 16 * q);
        store_vector<kStream>(out + 16 * q, _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ), zero));
        keep[q] = _mm512_cmp_ps_mask(x, zero, _CMP_NLE_UQ);
      }
      return _cvtmask64_u64(_mm512_kunpackd(_mm512_kunpackw(keep[3], keep[2]), _mm512_kunpackw(keep[1], keep[0])));
    } else {
      const __m512d zero = _mm512_setzero_pd();
      __mmask8 keep[8];
      for (int q = 0; q < 8; ++q) {
        const __m512d x = _mm512_loadu_pd(in + 8 * q);
        store_vector<kStream>(out + 8 * q, _mm512_mask_mov_pd(x, _mm512_cmp_pd_mask(x, zero, _CMP_LT_OQ), zero));
        keep[q] = _mm512_cmp_pd_mask(x, zero, _CMP_NLE_UQ);
      }
      const __mmask32 low = _mm512_kunpackw(_mm512_kunpackb(keep[3], keep[2]), _mm512_kunpackb(keep[1], keep[0]));
      const __mmask32 high = _mm512_kunpackw(_mm512_kunpackb(keep[7], keep[6]), _mm512_kunpackb(keep[5], keep[4]));
      return _cvtmask64_u64(_mm512_kunpackd(high, low));
    }
  }

  template <bool kStream, typename T>
  FASTCONV_TARGET_AVX512 static void backward(const T* grad, uint64_t word, T* grad_in) {
    if constexpr (sizeof(T) == 4) {
      for (int q = 0; q < 4; ++q) {
        const __mmask16 keep = static_cast<__mmask16>(word >> (16 * q));
        store_vector<kStream>(grad_in + 16 * q, _mm512_maskz_mov_ps(keep, _mm512_loadu_ps(grad + 16 * q)));
      }
    } else {
      for (int q = 0; q < 8; ++q) {
        const __mmask8 keep = static_cast<__mmask8>(word >> (8 * q));
        store_vector<kStream>(grad_in + 8 * q, _mm512_maskz_mov_pd(keep, _mm512_loadu_pd(grad + 8 * q)));
      }
    }
  }
};

template <>
struct Steps<CpuIsa::kAvx2> {
  template <bool kStream, typename T>
  FASTCONV_TARGET_AVX2 static uint64_t forward(const T* in, T* out) {
    uint64_t word = 0;
    if constexpr (sizeof(T) == 4) {
      const __m256 zero = _mm256_setzero_ps();
      for (int q = 0; q < 8; ++q) {
        const __m256 x = _mm256_loadu_ps(in + 8 * q);
        store_vector<kStream>(out + 8 * q, _mm256_andnot_ps(_mm256_cmp_ps(x, zero, _CMP_LT_OQ), x));
        word |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(x, zero, _CMP_NLE_UQ))) << (8 * q);
      }
    } else {
      const __m256d zero = _mm256_setzero_pd();
      for (int q = 0; q < 16; ++q) {
        const __m256d x = _mm256_loadu_pd(in + 4 * q);
        store_vector<kStream>(out + 4 * q, _mm256_andnot_pd(_mm256_cmp_pd(x, zero, _CMP_LT_OQ), x));
        word |= static_cast<uint64_t>(_mm256_movemask_pd(_mm256_cmp_pd(x, zero, _CMP_NLE_UQ))) << (4 * q);
      }
    }
    return word;
  }

  template <bool kStream, typename T>
  FASTCONV_TARGET_AVX2 static void backward(const T* grad, uint64_t word, T* grad_in) {
    if constexpr (sizeof(T) == 4) {
      for (int q = 0; q < 8; ++q) {
        const __m256 g = _mm256_loadu_ps(grad + 8 * q);
        store_vector<kStream>(grad_in + 8 * q, _mm256_and_ps(keep_lanes_ps(word >> (8 * q)), g));
      }
    } else {
      for (int q = 0; q < 16; ++q) {
        const __m256d g = _mm256_loadu_pd(grad + 4 * q);
        store_vector<kStream>(grad_in + 4 * q, _mm256_and_pd(keep_lanes_pd(word >> (4 * q)), g));
      }
    }
  }
};

#endif  // FASTCONV_CPU_X86

// Blocks [begin, end); keep_bits may be null (nothing recorded).
template <CpuIsa isa>
struct ForwardBlocks {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* input, T* output, uint8_t* keep_bits, int64_t n, bool stream,
                                       int64_t begin, int64_t end) {
    with_stores(stream, [&](auto streamed) FASTCONV_LAMBDA_INLINE {
      for_each_keep_block(
          n, begin, end,
          [&](int64_t b) FASTCONV_LAMBDA_INLINE {
            const uint64_t word = Steps<isa>::template forward<streamed.value>(input + kKeepBlock * b,
                                                                               output + kKeepBlock * b);
            if (keep_bits) store_keep_word(keep_bits + 8 * b, word, 8);
          },
          [&](int64_t b, int64_t count) FASTCONV_LAMBDA_INLINE {
            const uint64_t word =
                Steps<CpuIsa::kBaseline>::forward<false>(input + kKeepBlock * b, output + kKeepBlock * b, count);
            if (keep_bits) store_keep_word(keep_bits + 8 * b, word, keep_bits_bytes(count));
          });
    });
  }
};

template <CpuIsa isa>
struct BackwardFromMaskBlocks {
  template <typename T>
  static FASTCONV_LOOP_INLINE void run(const T* grad_output, const uint8_t* keep_bits, T* grad_input, int64_t n,
                                       bool stream, int64_t begin, int64_t end) {
    with_stores(stream, [&](auto streamed) FASTCONV_LAMBDA_INLINE {
      for_each_keep_block(
          n, begin, end,
          [&](int64_t b) FASTCONV_LAMBDA_INLINE {
            Steps<isa>::template backward<streamed.value>(
                grad_output + kKeepBlock * b, load_keep_word(keep_bits + 8 * b, 8), grad_input + kKeepBlock * b);
          },
          [&](int64_t b, int64_t count) FASTCONV_LAMBDA_INLINE {
            Steps<CpuIsa::kBaseline>::backward<false>(grad_output + kKeepBlock * b,
                                                      load_keep_word(keep_bits + 8 * b, keep_bits_bytes(count)),
                                                      grad_input + kKeepBlock * b, count);
          });
    });
  }
};

// Bytes a one-input, one-output kernel over n elements reads and writes.
template <typename T>
int64_t streamed_bytes(int64_t n) {
  return 2 * n * static_cast<int64_t>(sizeof(T));
}

template <typename T>
void forward_blocks(const T* input, T* output, uint8_t* keep_bits, int64_t n) {
  // In place, the loads have brought each output line in already: nothing to skip.
  const bool stream = input != output && stream_output(streamed_bytes<T>(n), output);
  parallel_chunks(keep_blocks(n), kElementwiseGrain / kKeepBlock, [&](int64_t begin, int64_t end) {
    run_widest_isa<ForwardBlocks>(input, output, keep_bits, n, stream, begin, end);
  });
}

}  // namespace

template <typename T>
void relu_forward(Target, const T* input, T* output, int64_t n) {
  forward_blocks<T>(input, output, nullptr, n);
}

template <typename T>
void relu_backward(Target, const T* grad_output, const T* output, T* grad_input, int64_t n) {
  parallel_chunks(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    run_widest<ReluBackward<T>>(grad_output, output, grad_input, begin, end);
  });
}

template <typename T>
void relu_forward_storing_mask(Target, const T* input, T* output, uint8_t* keep_bits, int64_t n) {
  forward_blocks<T>(input, output, keep_bits, n);
}

template <typename T>
void relu_backward_from_mask(Target, const T* grad_output, const uint8_t* keep_bits, T* grad_input, int64_t n) {
  const bool stream = stream_output(streamed_bytes<T>(n), grad_input);
  parallel_chunks(keep_blocks(n), kElementwiseGrain / kKeepBlock, [&](int64_t begin, int64_t end) {
    run_widest_isa<BackwardFromMaskBlocks>(grad_output, keep_bits, grad_input, n, stream, begin, end);
  });
}

template void relu_forward<float>(Target, const float*, float*, int64_t);
template void relu_forward<double>(Target, const double*, double*, int64_t);
template void relu_backward<float>(Target, const float*, const float*, float*, int64_t);
template void relu_backward<double>(Target, const double*, const double*, double*, int64_t);
template void relu_forward_storing_mask<float>(Target, const float*, float*, uint8_t*, int64_t);
template void relu_forward_storing_mask<double>(Target, const double*, double*, uint8_t*, int64_t);
template void relu_backward_from_mask<float>(Target, const float*, const uint8_t*, float*, int64_t);
template void relu_backward_from_mask<double>(Target, const double*, const uint8_t*, double*, int64_t);

}  // namespace cpu
}  // namespace fastconv
