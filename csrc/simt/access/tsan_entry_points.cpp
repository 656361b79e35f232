// Every function GCC's -fsanitize=thread instrumentation calls, defined for
// the access counters (csrc/simt/access/access.h) in place of ThreadSanitizer's
// runtime: a program compiled with -fsanitize=thread and linked with this file
// instead of libtsan reports each load and store of its CUDA threads to the
// counters, with the instruction after the call as the PC. Atomics and fences
// do what they name (without counting). The list is GCC 12's
// (gcc/sanitizer.def, BUILT_IN_TSAN_*); the link fails if a compiler emits one
// that is missing here, which is the point: nothing of libtsan may fill in.
// This file itself is compiled without instrumentation.
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "recorder.h"

#define SIMT_PC __builtin_return_address(0)

using simt_u128 = unsigned __int128;

// 16-byte atomics would need libatomic (or -mcx16); nothing here uses them,
// so one lock keeps them correct without another library.
namespace {
std::mutex g_atomic128_lock;
// Replaces *a with update(*a) and returns the old value.
template <class Update>
simt_u128 locked_update(volatile simt_u128* a, Update update) {
  std::lock_guard<std::mutex> lk(g_atomic128_lock);
  const simt_u128 old = *a;
  *a = update(old);
  return old;
}
int locked_compare_exchange(volatile simt_u128* a, simt_u128* expected, simt_u128 desired) {
  std::lock_guard<std::mutex> lk(g_atomic128_lock);
  if (*a == *expected) {
    *a = desired;
    return 1;
  }
  *expected = *a;
  return 0;
}
}  // namespace

extern "C" {

// --------------------------------------------------------- plain accesses
#define SIMT_TSAN_ACCESS(size)                                                                    \
  void __tsan_read##size(void* addr) { simt::access::record(SIMT_PC, addr, size, false); }       \
  void __tsan_write##size(void* addr) { simt::access::record(SIMT_PC, addr, size, true); }        \
  void __tsan_volatile_read##size(void* addr) { simt::access::record(SIMT_PC, addr, size, false); } \
  void __tsan_volatile_write##size(void* addr) { simt::access::record(SIMT_PC, addr, size, true); }
SIMT_TSAN_ACCESS(1)
SIMT_TSAN_ACCESS(2)
SIMT_TSAN_ACCESS(4)
SIMT_TSAN_ACCESS(8)
SIMT_TSAN_ACCESS(16)
#undef SIMT_TSAN_ACCESS

#define SIMT_TSAN_UNALIGNED(size)                                                                   \
  void __tsan_unaligned_read##size(void* addr) { simt::access::record(SIMT_PC, addr, size, false); } \
  void __tsan_unaligned_write##size(void* addr) { simt::access::record(SIMT_PC, addr, size, true); }
SIMT_TSAN_UNALIGNED(2)
SIMT_TSAN_UNALIGNED(4)
SIMT_TSAN_UNALIGNED(8)
SIMT_TSAN_UNALIGNED(16)
#undef SIMT_TSAN_UNALIGNED

// Aggregate copies and other accesses of a size known at run time.
void __tsan_read_range(void* addr, size_t size) {
  simt::access::record(SIMT_PC, addr, static_cast<unsigned>(size), false);
}
void __tsan_write_range(void* addr, size_t size) {
  simt::access::record(SIMT_PC, addr, static_cast<unsigned>(size), true);
}

// -------------------------------------------------------- bookkeeping calls
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}

// ------------------------------------------------------------------ atomics
// GCC passes its own memory-order numbers; sequential consistency is at least
// as strong as any of them.
#define SIMT_TSAN_ATOMIC(bits, T)                                                                   \
  T __tsan_atomic##bits##_load(const volatile T* a, int) {                                          \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                    \
  }                                                                                                 \
  void __tsan_atomic##bits##_store(volatile T* a, T v, int) {                                       \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                       \
  }                                                                                                 \
  T __tsan_atomic##bits##_exchange(volatile T* a, T v, int) {                                       \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                             \
  }                                                                                                 \
  T __tsan_atomic##bits##_fetch_add(volatile T* a, T v, int) {                                      \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                              \
  }                                                                                                 \
  T __tsan_atomic##bits##_fetch_sub(volatile T* a, T v, int) {                                      \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                              \
  }                                                                                                 \
  T __tsan_atomic##bits##_fetch_and(volatile T* a, T v, int) {                                      \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                              \
  }                                                                                                 \
  T __tsan_atomic##bits##_fetch_or(volatile T* a, T v, int) {                                       \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                               \
  }                                                                                                 \
  T __tsan_atomic##bits##_fetch_xor(volatile T* a, T v, int) {                                      \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                              \
  }                                                                                                 \
  T __tsan_atomic##bits##_fetch_nand(volatile T* a, T v, int) {                                     \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                             \
  }                                                                                                 \
  int __tsan_atomic##bits##_compare_exchange_strong(volatile T* a, T* expected, T desired, int,     \
                                                    int) {                                          \
    return __atomic_compare_exchange_n(a, expected, desired, false, __ATOMIC_SEQ_CST,               \
                                       __ATOMIC_SEQ_CST);                                           \
  }                                                                                                 \
  int __tsan_atomic##bits##_compare_exchange_weak(volatile T* a, T* expected, T desired, int,       \
                                                  int) {                                            \
    return __atomic_compare_exchange_n(a, expected, desired, true, __ATOMIC_SEQ_CST,                \
                                       __ATOMIC_SEQ_CST);                                           \
  }
SIMT_TSAN_ATOMIC(8, uint8_t)
SIMT_TSAN_ATOMIC(16, uint16_t)
SIMT_TSAN_ATOMIC(32, uint32_t)
SIMT_TSAN_ATOMIC(64, uint64_t)
#undef SIMT_TSAN_ATOMIC

simt_u128 __tsan_atomic128_load(const volatile simt_u128* a, int) {
  std::lock_guard<std::mutex> lk(g_atomic128_lock);
  return *a;
}
void __tsan_atomic128_store(volatile simt_u128* a, simt_u128 v, int) {
  locked_update(a, [&](simt_u128) { return v; });
}
#define SIMT_TSAN_ATOMIC128(name, update)                                   \
  simt_u128 __tsan_atomic128_##name(volatile simt_u128* a, simt_u128 v, int) { \
    return locked_update(a, [&]([[maybe_unused]] simt_u128 old) { return update; }); \
  }
SIMT_TSAN_ATOMIC128(exchange, v)
SIMT_TSAN_ATOMIC128(fetch_add, old + v)
SIMT_TSAN_ATOMIC128(fetch_sub, old - v)
SIMT_TSAN_ATOMIC128(fetch_and, old & v)
SIMT_TSAN_ATOMIC128(fetch_or, old | v)
SIMT_TSAN_ATOMIC128(fetch_xor, old ^ v)
SIMT_TSAN_ATOMIC128(fetch_nand, ~(old & v))
#undef SIMT_TSAN_ATOMIC128
int __tsan_atomic128_compare_exchange_strong(volatile simt_u128* a, simt_u128* e, simt_u128 d, int,
                                             int) {
  return locked_compare_exchange(a, e, d);
}
int __tsan_atomic128_compare_exchange_weak(volatile simt_u128* a, simt_u128* e, simt_u128 d, int,
                                           int) {
  return locked_compare_exchange(a, e, d);
}

void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

}  // extern "C"
