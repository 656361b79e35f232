// CPU runtime behind simt.h: fibers for CUDA threads, a per-block cooperative
// scheduler with barrier/warp-collective rendezvous, and a worker pool that
// runs blocks in parallel.
#include "simt.h"
#include "access/recorder.h"
#include "static_shared.h"

#include "../common/dtypes.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ------------------------------------------------------------ context switch
#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores the stack
// pointer to *save_sp, switches to load_sp and restores from there. Everything
// else is caller-saved under the SysV ABI, so this is a complete switch for a
// call site. Much cheaper than swapcontext, which also makes a signal-mask
// syscall on every switch.
extern "C" void simt_ctx_switch(void** save_sp, void* load_sp)
    __attribute__((visibility("hidden")));
// First entry of a fresh fiber: r12 holds the argument, r13 the function.
extern "C" void simt_ctx_trampoline() __attribute__((visibility("hidden")));
asm(R"(
  .text
  .globl simt_ctx_switch
  .hidden simt_ctx_switch
  .type simt_ctx_switch, @function
  .p2align 4
simt_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_ctx_switch, .-simt_ctx_switch

  .globl simt_ctx_trampoline
  .hidden simt_ctx_trampoline
  .type simt_ctx_trampoline, @function
  .p2align 4
simt_ctx_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size simt_ctx_trampoline, .-simt_ctx_trampoline
)");
#endif


// ------------------------------------------------------- sanitizer interfaces
// The runtime itself is compiled without sanitizer flags (its scheduler reads
// and writes fiber state that the sanitizers must not see as the kernel's
// accesses). It finds the sanitizer of a -fsanitize=thread or =address
// program through these weak symbols, which are null in a plain build.
extern "C" {
// ThreadSanitizer: fibers, happens-before annotations, report access.
void* __tsan_get_current_fiber() __attribute__((weak));
void* __tsan_create_fiber(unsigned flags) __attribute__((weak));
void __tsan_switch_to_fiber(void* fiber, unsigned flags) __attribute__((weak));
void __tsan_set_fiber_name(void* fiber, const char* name) __attribute__((weak));
void __tsan_acquire(void* addr) __attribute__((weak));
void __tsan_release(void* addr) __attribute__((weak));
void __tsan_ignore_thread_begin() __attribute__((weak));
void __tsan_ignore_thread_end() __attribute__((weak));
int __tsan_get_report_data(void* report, const char** description, int* count, int* stack_count,
                           int* mop_count, int* loc_count, int* mutex_count, int* thread_count,
                           int* unique_tid_count, void** sleep_trace, size_t trace_size)
    __attribute__((weak));
int __tsan_get_report_mop(void* report, size_t idx, int* tid, void** addr, int* size, int* write,
                          int* atomic, void** trace, size_t trace_size) __attribute__((weak));
int __tsan_get_report_thread(void* report, size_t idx, int* tid, uint64_t* os_id, int* running,
                             const char** name, int* parent_tid, void** trace,
                             size_t trace_size) __attribute__((weak));
// AddressSanitizer: stack switches.
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size)
    __attribute__((weak));
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                     size_t* size_old) __attribute__((weak));
void __asan_handle_no_return() __attribute__((weak));
void __asan_poison_memory_region(void const volatile* addr, size_t size) __attribute__((weak));
// Both.
void __sanitizer_set_death_callback(void (*callback)()) __attribute__((weak));
void __sanitizer_symbolize_pc(void* pc, const char* fmt, char* out, size_t size)
    __attribute__((weak));
// Access counters: linked only into access builds (access/recorder.h).
#pragma weak simt_access_launch
#pragma weak simt_access_block_begin
#pragma weak simt_access_thread_resume
#pragma weak simt_access_thread_yield
#pragma weak simt_access_interval_end
}

// The kernel sections of __launch_bounds__ (simt.h): simt_lb_0001 ... simt_lb_1024.
#define SIMT_LB_(a, b, c, d)                                                          \
  extern "C" char __start_simt_lb_##a##b##c##d[] __attribute__((weak, visibility("hidden"))); \
  extern "C" char __stop_simt_lb_##a##b##c##d[] __attribute__((weak, visibility("hidden")));
#define SIMT_LB_D_(a, b, c)                                                              \
  SIMT_LB_(a, b, c, 0) SIMT_LB_(a, b, c, 1) SIMT_LB_(a, b, c, 2) SIMT_LB_(a, b, c, 3)  \
  SIMT_LB_(a, b, c, 4) SIMT_LB_(a, b, c, 5) SIMT_LB_(a, b, c, 6) SIMT_LB_(a, b, c, 7)  \
  SIMT_LB_(a, b, c, 8) SIMT_LB_(a, b, c, 9)
#define SIMT_LB_C_(a, b)                                                                 \
  SIMT_LB_D_(a, b, 0) SIMT_LB_D_(a, b, 1) SIMT_LB_D_(a, b, 2) SIMT_LB_D_(a, b, 3)       \
  SIMT_LB_D_(a, b, 4) SIMT_LB_D_(a, b, 5) SIMT_LB_D_(a, b, 6) SIMT_LB_D_(a, b, 7)       \
  SIMT_LB_D_(a, b, 8) SIMT_LB_D_(a, b, 9)
#define SIMT_LB_B_(a)                                                                    \
  SIMT_LB_C_(a, 0) SIMT_LB_C_(a, 1) SIMT_LB_C_(a, 2) SIMT_LB_C_(a, 3) SIMT_LB_C_(a, 4)  \
  SIMT_LB_C_(a, 5) SIMT_LB_C_(a, 6) SIMT_LB_C_(a, 7) SIMT_LB_C_(a, 8) SIMT_LB_C_(a, 9)
SIMT_LB_B_(0)
SIMT_LB_D_(1, 0, 0) SIMT_LB_D_(1, 0, 1) SIMT_LB_(1, 0, 2, 0) SIMT_LB_(1, 0, 2, 1)
SIMT_LB_(1, 0, 2, 2) SIMT_LB_(1, 0, 2, 3) SIMT_LB_(1, 0, 2, 4)
#undef SIMT_LB_

namespace {
struct BoundsRange {
  const char* begin;
  const char* end;
  int threads;
};
// Every simt_lb_NNNN section of this module, then keeps the non-empty ones.
std::vector<BoundsRange> bounds_ranges() {
  std::vector<BoundsRange> all;
#define SIMT_LB_(a, b, c, d)                                                        \
  all.push_back({__start_simt_lb_##a##b##c##d, __stop_simt_lb_##a##b##c##d,         \
                 ((a)*1000 + (b)*100 + (c)*10 + (d))});
  SIMT_LB_B_(0)
  SIMT_LB_D_(1, 0, 0) SIMT_LB_D_(1, 0, 1) SIMT_LB_(1, 0, 2, 0) SIMT_LB_(1, 0, 2, 1)
  SIMT_LB_(1, 0, 2, 2) SIMT_LB_(1, 0, 2, 3) SIMT_LB_(1, 0, 2, 4)
#undef SIMT_LB_
  std::vector<BoundsRange> used;
  for (const BoundsRange& r : all)
    if (r.begin && r.end && r.begin != r.end) used.push_back(r);
  return used;
}
}  // namespace
#undef SIMT_LB_B_
#undef SIMT_LB_C_
#undef SIMT_LB_D_

namespace simt {
namespace {

constexpr size_t kStackBytes = 128 * 1024;  // lazily committed; guard page below
constexpr unsigned kMaxThreads = 1024;
// Shared memory per block: 48 KiB without opting in, at most 227 KiB with
// cudaFuncSetAttribute (an H100's sharedMemPerBlockOptin).
constexpr size_t kDefaultSmem = 48 * 1024;
constexpr size_t kMaxSmemOptIn = 227 * 1024;
// Garbage that shared memory holds at a block's start: NaN for floats and
// doubles, -1 for integers, so reads of never-written shared memory show.
constexpr int kSmemPattern = 0xff;

// ------------------------------------------------------------- configuration
std::atomic<int> g_order{static_cast<int>(Order::Forward)};
std::atomic<uint64_t> g_seed{0};
std::atomic<int> g_workers{0};
std::atomic<bool> g_recording{false};
std::atomic<bool> g_dry_run{false};
constexpr int kDefaultMultiprocessors = 132;  // an H100 SXM
std::atomic<int> g_env_sms{kDefaultMultiprocessors};
std::atomic<int> g_sms{kDefaultMultiprocessors};
constexpr int kDefaultComputeCapability = 90;  // an H100
std::atomic<int> g_env_cc{kDefaultComputeCapability};
std::atomic<int> g_cc{kDefaultComputeCapability};
std::once_flag g_env_once;
thread_local cudaError_t t_last_error = cudaSuccess;

// What the program was built with (weak symbols present) and what
// FASTCONV_SIMT_CHECK asks for; checks default to everything the build has.
enum : unsigned { kTsan = 1, kAsan = 2, kCounters = 4, kRace = 8, kMemory = 16, kAccess = 32 };
unsigned g_san = 0;
const char* g_check_error = nullptr;

unsigned detect_sanitizers() {
  unsigned s = 0;
  if (&__tsan_create_fiber && &__tsan_switch_to_fiber && &__tsan_acquire) s |= kTsan;
  if (&__sanitizer_start_switch_fiber && &__asan_poison_memory_region) s |= kAsan;
  if (&simt_access_launch) s |= kCounters;
  return s;
}

void read_checks() {
  const unsigned built = detect_sanitizers();
  unsigned want = (built & kTsan ? unsigned(kRace) : 0u) | (built & kAsan ? unsigned(kMemory) : 0u) |
                  (built & kCounters ? unsigned(kAccess) : 0u);
  if (const char* s = std::getenv("FASTCONV_SIMT_CHECK")) {
    want = 0;
    std::string list(s);
    size_t at = 0;
    while (at <= list.size()) {
      size_t end = list.find(',', at);
      if (end == std::string::npos) end = list.size();
      const std::string item = list.substr(at, end - at);
      if (item == "race") want |= kRace;
      else if (item == "memory") want |= kMemory;
      else if (item == "access") want |= kAccess;
      else if (!item.empty() && item != "none")
        std::fprintf(stderr, "simt: ignoring '%s' in FASTCONV_SIMT_CHECK (want race,memory,access)\n",
                     item.c_str());
      at = end + 1;
    }
  }
  if ((want & kRace) && !(built & kTsan))
    g_check_error = "FASTCONV_SIMT_CHECK=race needs a ThreadSanitizer build "
                    "(compile and link the kernels and the program with -fsanitize=thread)";
  else if ((want & kMemory) && !(built & kAsan))
    g_check_error = "FASTCONV_SIMT_CHECK=memory needs an AddressSanitizer build "
                    "(compile and link with -fsanitize=address,alignment,bounds)";
  else if ((want & kAccess) && !(built & kCounters))
    g_check_error = "FASTCONV_SIMT_CHECK=access needs an access build (compile the kernels and the "
                    "program with -fsanitize=thread, link them with simt_access, not libtsan)";
  else if ((built & kCounters) && (built & kTsan))
    g_check_error = "the access counters and ThreadSanitizer's runtime are linked into one program "
                    "(link simt_access without -fsanitize=thread)";
  g_san = built | want;
}

void install_report_hooks();

void read_env() {
  std::call_once(g_env_once, [] {
    if (const char* s = std::getenv("FASTCONV_SIMT_ORDER")) {
      if (!std::strcmp(s, "forward")) g_order = static_cast<int>(Order::Forward);
      else if (!std::strcmp(s, "reversed")) g_order = static_cast<int>(Order::Reversed);
      else if (!std::strcmp(s, "shuffled")) g_order = static_cast<int>(Order::Shuffled);
      else std::fprintf(stderr, "simt: ignoring FASTCONV_SIMT_ORDER=%s (want forward|reversed|shuffled)\n", s);
    }
    if (const char* s = std::getenv("FASTCONV_SIMT_SEED")) g_seed = std::strtoull(s, nullptr, 0);
    int workers = 0;
    if (const char* s = std::getenv("FASTCONV_SIMT_WORKERS")) workers = std::atoi(s);
    if (workers <= 0) workers = static_cast<int>(std::thread::hardware_concurrency());
    g_workers = std::max(workers, 1);
    if (const char* s = std::getenv("FASTCONV_SIMT_DRY_RUN"); s && std::atoi(s) != 0) g_dry_run = true;
    if (const char* s = std::getenv("FASTCONV_SIMT_SM_COUNT")) {
      const int sms = std::atoi(s);
      if (sms > 0) g_env_sms = sms;
      else std::fprintf(stderr, "simt: ignoring FASTCONV_SIMT_SM_COUNT=%s (want a positive count)\n", s);
    }
    g_sms = g_env_sms.load();
    if (const char* s = std::getenv("FASTCONV_SIMT_ARCH"); s && *s) {
      const int cc = std::atoi(s);
      if (cc >= 10) g_env_cc = cc;
      else std::fprintf(stderr, "simt: ignoring FASTCONV_SIMT_ARCH=%s (want a compute capability such as 75)\n", s);
    }
    g_cc = g_env_cc.load();
    read_checks();
    install_report_hooks();
  });
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// ------------------------------------------------------------- kernel names
// A launch knows its kernel's address and the expression it was written as
// (often a variable: `kernel`). Sanitizer builds symbolize the address; a
// plain build tries the dynamic symbol table, which names exported kernels
// only (the Python extension hides its symbols, so there the message names
// the launch expression and its file:line), then falls back to the expression.
struct KernelName {
  std::string full;   // fastconv::simt::gemm_kernel<float, float, ...>
  std::string brief;  // gemm_kernel
};

// "void ns::k<A, B>(int*, float)" -> "ns::k<A, B>".
std::string strip_signature(std::string s) {
  if (!s.empty() && s.back() == ')') {
    int depth = 0;
    for (size_t i = s.size(); i-- > 0;) {
      if (s[i] == ')') ++depth;
      else if (s[i] == '(' && --depth == 0) {
        s.resize(i);
        break;
      }
    }
  }
  if (s.rfind("void ", 0) == 0) s.erase(0, 5);
  return s;
}

std::string brief_name(const std::string& full) {
  std::string s = full;
  const size_t angle = s.find('<');
  if (angle != std::string::npos) s.resize(angle);
  const size_t colon = s.rfind("::");
  if (colon != std::string::npos) s.erase(0, colon + 2);
  return s;
}

const KernelName& kernel_name(const void* kernel, const char* written) {
  static std::mutex m;
  static std::unordered_map<const void*, KernelName>* names =
      new std::unordered_map<const void*, KernelName>;
  std::lock_guard<std::mutex> lk(m);
  auto it = names->find(kernel);
  if (it != names->end()) return it->second;
  std::string full;
  if (&__sanitizer_symbolize_pc) {
    char buf[1024] = "";
    // The symbolizer looks up pc - 1 (a return address): pass the entry + 1.
    __sanitizer_symbolize_pc(const_cast<char*>(static_cast<const char*>(kernel)) + 1, "%f", buf,
                             sizeof buf);
    if (buf[0] && std::strcmp(buf, "??") != 0) full = buf;
  }
  if (full.empty()) {
    Dl_info info;
    if (dladdr(kernel, &info) && info.dli_sname && info.dli_saddr == kernel) {
      int status = 0;
      char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
      full = demangled ? demangled : info.dli_sname;
      std::free(demangled);
    }
  }
  full = full.empty() ? std::string(written) : strip_signature(full);
  KernelName n{full, brief_name(full)};
  if (n.brief.empty()) n.brief = full;
  return names->emplace(kernel, std::move(n)).first->second;
}

// -------------------------------------------------------------------- fibers
enum class State : uint8_t { Ready, AtBarrier, AtWarp, Done };

struct Fiber {
  void* sp = nullptr;
  char* stack_top = nullptr;  // 16-byte aligned
  uint3 tid{0, 0, 0};
  State state = State::Done;
  // Pending warp collective: arguments in, per-lane result out. The result is
  // written before any lane of the group resumes.
  int op = 0, arg = 0, width = 32;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  const detail::Site* site = nullptr;
  // Pending barrier: call site.
  const char* file = nullptr;
  int line = 0;
  // Sanitizer state: the TSan fiber of this slot, the parity of the sync
  // object it released into at its pending barrier or collective, the
  // objects to acquire when it resumes, and ASan's fake-stack handle.
  void* tsan = nullptr;
  uint8_t parity = 0;
  uint8_t acquire = 0;
  void* asan_fake = nullptr;
#if !defined(__x86_64__)
  ucontext_t ctx;
#endif
};

struct Warp {
  unsigned exists = 0;   // lanes the block has
  unsigned live = 0;     // lanes that exist and have not returned
  unsigned waiting = 0;  // lanes waiting at a collective
  // Happens-before objects of the race checker: a lane releases into
  // sync[round & 1] when it arrives at a collective and acquires it when
  // the collective completes. Two objects alternate so that a lane that
  // already ran on to the next collective does not publish its later writes
  // to a lane that has not resumed yet (that would hide races).
  uint64_t round = 0;
  char sync[2] = {0, 0};
};

struct Job {
  const char* name;       // full kernel name, for messages
  const char* brief;      // short kernel name, for fiber names
  const detail::Site* site;
  dim3 grid, block;
  size_t smem;
  unsigned threads;
  uint64_t blocks;
  detail::KernelBody body;
  const void* ctx;
  Order order;
  uint64_t seed;
  unsigned san;
  unsigned stride;  // > 0: worker i runs blocks i, i + stride, ... (race checker)
  std::atomic<uint64_t> next{0};
};

// The race checker's launch-wide happens-before objects: the host's writes
// before a launch reach every CUDA thread; every CUDA thread's writes reach
// the host after it.
char g_launch_begin, g_launch_end;

// Per OS thread state; one block runs on it at a time.
struct Worker {
  std::vector<Fiber> fibers;
  std::vector<char*> stack_maps;
  std::vector<Warp> warps;
  std::vector<unsigned> order;
  unsigned char* smem = nullptr;
  size_t smem_cap = 0;
  // Under the memory checker: dynamic shared memory allocated to the
  // launch's exact size (ASan reports the first byte past it).
  unsigned char* exact_smem = nullptr;
  // This thread's copy of the static shared memory (sanitizer builds).
  detail::StaticShared static_smem;
  bool static_smem_known = false;
  const Job* job = nullptr;
  Fiber* cur = nullptr;
#if defined(__x86_64__)
  void* sched_sp = nullptr;
#else
  ucontext_t sched_ctx;
#endif
  // Sanitizer state of the scheduler: its TSan thread and its stack (for
  // ASan's switch annotations). For the race checker, the scheduler releases
  // block_start once a block's shared memory is ready, and the blocks that
  // run one after another on this worker are ordered: block k's threads
  // acquire block_order[(k - 1) & 1] and release into block_order[k & 1]
  // (one object would also order the threads of block k among themselves).
  void* tsan_sched = nullptr;
  void* asan_fake = nullptr;
  const void* sched_stack = nullptr;
  size_t sched_stack_bytes = 0;
  char block_start = 0;
  char block_order[2] = {0, 0};
  uint64_t blocks_run = 0;
  // Block state.
  uint3 block_idx{0, 0, 0};
  unsigned ready = 0, live = 0;
  unsigned at_barrier = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  bool bar_mismatch = false;
  int bar_count = 0, bar_result = 0;
  uint64_t bar_round = 0;
  char bar_sync[2] = {0, 0};
  uint64_t rng = 0;

  ~Worker() {
    for (char* m : stack_maps) munmap(m, kStackBytes + page_size());
    std::free(smem);
    std::free(exact_smem);
  }
  static size_t page_size() {
    static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p;
  }

  void reserve(const Job& j);
};

// Plain pointer for the hot path (no TLS init wrapper); the owner frees it at
// thread exit.
thread_local Worker* t_worker = nullptr;
thread_local std::unique_ptr<Worker> t_worker_owner;

Worker& this_worker() {
  if (!t_worker) {
    t_worker_owner = std::make_unique<Worker>();
    t_worker = t_worker_owner.get();
  }
  return *t_worker;
}

// "kernel 'k' block (1,0,0) thread (5,0,0)" for the fiber running on this
// OS thread, or just the kernel when called from the scheduler.
std::string where_now() {
  char buf[512];
  const Worker* w = t_worker;
  if (!w || !w->job) return "";
  const uint3 b = w->block_idx;
  if (w->cur) {
    const uint3 t = w->cur->tid;
    std::snprintf(buf, sizeof buf, "kernel '%s' block (%u,%u,%u) thread (%u,%u,%u)", w->job->name,
                  b.x, b.y, b.z, t.x, t.y, t.z);
  } else {
    std::snprintf(buf, sizeof buf, "kernel '%s' block (%u,%u,%u)", w->job->name, b.x, b.y, b.z);
  }
  return buf;
}

[[noreturn]] void fatal(const char* fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const std::string where = where_now();
  std::fprintf(stderr, "simt: %s%s%s\n", msg, where.empty() ? "" : " in ", where.c_str());
  std::fflush(stderr);
  std::abort();
}

// Worker of the calling fiber; aborts when called outside a kernel.
Worker& fiber_worker(const char* what) {
  Worker* w = t_worker;
  if (!w || !w->cur) {
    std::fprintf(stderr, "simt: %s called outside a kernel launch\n", what);
    std::abort();
  }
  return *w;
}

void Worker::reserve(const Job& j) {
  job = &j;
  while (fibers.size() < j.threads) {
    // Stacks are mapped once and reused by every later block; pages are
    // committed only when touched.
    const size_t guard = page_size();
    void* m = mmap(nullptr, kStackBytes + guard, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) fatal("cannot map a fiber stack");
    mprotect(m, guard, PROT_NONE);  // overflow faults instead of corrupting a neighbour
    stack_maps.push_back(static_cast<char*>(m));
    fibers.emplace_back();
    fibers.back().stack_top = static_cast<char*>(m) + guard + kStackBytes;
  }
  warps.resize((j.threads + 31) / 32);
  order.resize(j.threads);
  if (j.san & kTsan) {
    if (!tsan_sched) tsan_sched = __tsan_get_current_fiber();
    for (unsigned i = 0; i < j.threads; ++i)
      if (!fibers[i].tsan) fibers[i].tsan = __tsan_create_fiber(0);
  }
  if (j.san & kMemory) {
    std::free(exact_smem);
    exact_smem = static_cast<unsigned char*>(std::malloc(j.smem));
    if (!exact_smem && j.smem) fatal("cannot allocate dynamic shared memory");
  } else if (smem_cap < j.smem) {
    std::free(smem);
    smem_cap = (j.smem + 63) & ~size_t(63);
    smem = static_cast<unsigned char*>(std::aligned_alloc(64, smem_cap));
    if (!smem) fatal("cannot allocate dynamic shared memory");
  }
  if (!static_smem_known) {
    static_smem_known = true;
    static_smem = detail::this_thread_static_shared();
  }
}

// ------------------------------------------------------------ context switch
// The sanitizers must know about every switch: ASan which stack is current,
// TSan which CUDA thread (fiber) runs. Race checking switches without
// synchronization (flag 1): only barriers, collectives and the launch order
// CUDA threads; otherwise (a TSan build with the race check off) every switch
// synchronizes and TSan sees no race between the threads of a block.
inline unsigned tsan_switch_flags(const Job& j) { return j.san & kRace ? 1u : 0u; }

inline void tsan_acquire(const Job& j, void* addr) {
  if (j.san & kRace) __tsan_acquire(addr);
}
inline void tsan_release(const Job& j, void* addr) {
  if (j.san & kRace) __tsan_release(addr);
}

void fiber_entry(Fiber* f) {
  Worker* w = t_worker;
  const Job& job = *w->job;
  if (job.san & kAsan) __sanitizer_finish_switch_fiber(nullptr, &w->sched_stack, &w->sched_stack_bytes);
  tsan_acquire(job, &g_launch_begin);
  tsan_acquire(job, &w->block_start);
  tsan_acquire(job, &w->block_order[(w->blocks_run - 1) & 1]);
  try {
    job.body(job.ctx);
  } catch (...) {
    fatal("exception escaped from a kernel thread");
  }
  f->state = State::Done;
  tsan_release(job, &g_launch_end);
  tsan_release(job, &w->block_order[w->blocks_run & 1]);
  if (job.san & kTsan) __tsan_switch_to_fiber(w->tsan_sched, tsan_switch_flags(job));
  if (job.san & kAsan) {
    // This stack is abandoned, not unwound: clear its frames' redzones now,
    // and let ASan drop the fiber's fake stack (nullptr).
    __asan_handle_no_return();
    __sanitizer_start_switch_fiber(nullptr, w->sched_stack, w->sched_stack_bytes);
  }
#if defined(__x86_64__)
  simt_ctx_switch(&f->sp, w->sched_sp);
#else
  swapcontext(&f->ctx, &w->sched_ctx);
#endif
  __builtin_unreachable();
}

#if !defined(__x86_64__)
void fiber_entry_ucontext() { fiber_entry(t_worker->cur); }
#endif

void start_fiber(Worker& w, Fiber& f) {
#if defined(__x86_64__)
  // Initial frame popped by simt_ctx_switch: r15 r14 r13 r12 rbx rbp, then the
  // return address (trampoline). After the ret, rsp = top - 16, aligned, so the
  // trampoline's call sees the ABI-required alignment.
  void** sp = reinterpret_cast<void**>(f.stack_top - 72);
  sp[2] = reinterpret_cast<void*>(&fiber_entry);  // r13
  sp[3] = &f;                                     // r12
  sp[6] = reinterpret_cast<void*>(&simt_ctx_trampoline);
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack_top - kStackBytes;
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, fiber_entry_ucontext, 0);
#endif
  (void)w;
  f.state = State::Ready;
}

// Sanitizer builds annotate every switch; the plain path pays one
// predictable branch on a flag that is fixed before the first launch.
__attribute__((noinline)) void resume_annotated(Worker& w, Fiber& f) {
  if (g_san & kAccess)
    simt_access_thread_resume(static_cast<unsigned>(&f - w.fibers.data()),
                              f.stack_top - kStackBytes, f.stack_top);
  if (g_san & kTsan) __tsan_switch_to_fiber(f.tsan, tsan_switch_flags(*w.job));
  if (g_san & kAsan)
    __sanitizer_start_switch_fiber(&w.asan_fake, f.stack_top - kStackBytes, kStackBytes);
#if defined(__x86_64__)
  simt_ctx_switch(&w.sched_sp, f.sp);
#else
  swapcontext(&w.sched_ctx, &f.ctx);
#endif
  if (g_san & kAsan) __sanitizer_finish_switch_fiber(w.asan_fake, nullptr, nullptr);
  if (g_san & kAccess) simt_access_thread_yield();
}

__attribute__((noinline)) void yield_annotated(Worker& w, Fiber& f) {
  if (g_san & kTsan) __tsan_switch_to_fiber(w.tsan_sched, tsan_switch_flags(*w.job));
  if (g_san & kAsan) __sanitizer_start_switch_fiber(&f.asan_fake, w.sched_stack, w.sched_stack_bytes);
#if defined(__x86_64__)
  simt_ctx_switch(&f.sp, w.sched_sp);
#else
  swapcontext(&f.ctx, &w.sched_ctx);
#endif
  if (g_san & kAsan) __sanitizer_finish_switch_fiber(f.asan_fake, &w.sched_stack, &w.sched_stack_bytes);
}

inline void resume(Worker& w, Fiber& f) {
  w.cur = &f;
  threadIdx = f.tid;
  if (__builtin_expect(g_san != 0, 0)) {
    resume_annotated(w, f);
  } else {
#if defined(__x86_64__)
    simt_ctx_switch(&w.sched_sp, f.sp);
#else
    swapcontext(&w.sched_ctx, &f.ctx);
#endif
  }
  w.cur = nullptr;
}

inline void yield(Worker& w, Fiber& f) {
  if (__builtin_expect(g_san != 0, 0)) {
    yield_annotated(w, f);
  } else {
#if defined(__x86_64__)
    simt_ctx_switch(&f.sp, w.sched_sp);
#else
    swapcontext(&f.ctx, &w.sched_ctx);
#endif
  }
}

// ------------------------------------------------------------ warp rendezvous
const char* op_name(int op) {
  switch (op) {
    case detail::kSync: return "__syncwarp";
    case detail::kShflIdx: return "__shfl_sync";
    case detail::kShflUp: return "__shfl_up_sync";
    case detail::kShflDown: return "__shfl_down_sync";
    case detail::kShflXor: return "__shfl_xor_sync";
    case detail::kBallot: return "__ballot_sync";
    case detail::kAny: return "__any_sync";
    case detail::kAll: return "__all_sync";
  }
  return "a warp collective";
}

// "__shfl_sync(mask 0xffffffff, width 32) at file:line"; an mma or ldmatrix
// is named by its instruction (the shape), which its site carries.
std::string describe_collective(const Fiber& f) {
  char buf[512];
  const bool instruction = f.op == detail::kMma || f.op == detail::kLdmatrix;
  const char* name = instruction && f.site ? f.site->text : op_name(f.op);
  std::snprintf(buf, sizeof buf, "%s(mask 0x%08x, width %d) at %s:%d", name, f.mask, f.width,
                f.site ? f.site->file : "?", f.site ? f.site->line : 0);
  return buf;
}

bool same_collective(const Fiber& a, const Fiber& b) {
  return a.op == b.op && a.mask == b.mask && a.width == b.width && a.arg == b.arg && a.site && b.site &&
         a.site->line == b.site->line &&
         (a.site->file == b.site->file || !std::strcmp(a.site->file, b.site->file));
}

// Lanes are numbered within their warp; threads as (x,y,z) for messages.
[[noreturn]] void collective_error(Worker& w, unsigned warp, unsigned lane, const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const Fiber& f = w.fibers[warp * 32 + lane];
  const uint3 b = w.block_idx, t = f.tid;
  std::fprintf(stderr,
               "simt: invalid warp collective in kernel '%s' block (%u,%u,%u) warp %u: lane %u "
               "(thread (%u,%u,%u)) at %s: %s\n",
               w.job->name, b.x, b.y, b.z, warp, lane, t.x, t.y, t.z, describe_collective(f).c_str(),
               msg);
  std::fflush(stderr);
  std::abort();
}

uint64_t lane_result(Worker& w, unsigned warp, unsigned group, unsigned vote, unsigned lane) {
  const Fiber* lanes = &w.fibers[warp * 32];
  const Fiber& f = lanes[lane];
  switch (f.op) {
    case detail::kBallot: return vote;
    case detail::kAny: return vote != 0;
    case detail::kAll: return vote == group;
    case detail::kSync: return 0;
    case detail::kMma: return 0;  // D went to the lane's registers (mma_resolve)
    case detail::kLdmatrix: return 0;  // the words went to the lane's registers (ldmatrix_resolve)
    default: break;
  }
  unsigned width = static_cast<unsigned>(f.width);
  if (width == 0 || width > 32 || (width & (width - 1)))
    collective_error(w, warp, lane, "width must be a power of two from 1 to 32");
  const unsigned seg = lane & ~(width - 1), sub = lane & (width - 1);
  const unsigned a = static_cast<unsigned>(f.arg);
  unsigned src = lane;
  switch (f.op) {
    case detail::kShflIdx: src = seg + (a & (width - 1)); break;
    case detail::kShflUp: src = sub >= a ? lane - a : lane; break;
    case detail::kShflDown: src = (a < width && sub + a < width) ? lane + a : lane; break;
    case detail::kShflXor: src = lane ^ a; if (src >= seg + width || src < seg) src = lane; break;
  }
  // A source outside the caller's segment gives the caller's own value (as
  // on a GPU); one inside it that does not take part is undefined on a GPU.
  if (!((group >> src) & 1u)) {
    const unsigned exists = w.warps[warp].exists;
    collective_error(w, warp, lane, "reads lane %u, which %s", src,
                     !((exists >> src) & 1u) ? "does not exist (the block ends before it)"
                                             : "is not in the mask");
  }
  return lanes[src].value;
}

// The matrix multiply of a completed mma.sync (simt.h gives the fragment
// layouts): every lane's `value` points at its MmaRegisters.
float mma_input(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void mma_resolve(Fiber* lanes) {
  const auto shape = static_cast<MmaShape>(lanes[0].arg);
  const bool tf32 = shape == MmaShape::kM16N8K8Tf32;
  const int K = tf32 ? 8 : 16;
  double a[16][16], b[16][8], c[16][8];
  // One 16-bit element of a register pair: the smaller k in the low half.
  auto element = [&](uint32_t reg, int half) {
    const uint16_t bits = static_cast<uint16_t>(reg >> (16 * half));
    return shape == MmaShape::kM16N8K16F16 ? fastconv::half_bits_to_float(bits)
                                            : fastconv::bfloat16_bits_to_float(bits);
  };
  for (int l = 0; l < 32; ++l) {
    const auto& r = *reinterpret_cast<const MmaRegisters*>(lanes[l].value);
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      if (tf32) {
        a[g + 8 * (i % 2)][t + 4 * (i / 2)] = mma_input(r.a[i] & ~0x1fffu);  // low 13 bits ignored
      } else {
        for (int h = 0; h < 2; ++h) a[g + 8 * (i % 2)][2 * t + 8 * (i / 2) + h] = element(r.a[i], h);
      }
      c[g + 8 * (i / 2)][2 * t + i % 2] = r.c[i];
    }
    for (int i = 0; i < 2; ++i) {
      if (tf32) {
        b[t + 4 * i][g] = mma_input(r.b[i] & ~0x1fffu);
      } else {
        for (int h = 0; h < 2; ++h) b[2 * t + 8 * i + h][g] = element(r.b[i], h);
      }
    }
  }
  for (int l = 0; l < 32; ++l) {
    auto& r = *reinterpret_cast<MmaRegisters*>(lanes[l].value);
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      const int m = g + 8 * (i / 2), n = 2 * t + i % 2;
      double sum = c[m][n];
      for (int k = 0; k < K; ++k) sum += a[m][k] * b[k][n];
      r.d[i] = static_cast<float>(sum);
    }
  }
}

// The words of a completed ldmatrix: every lane's `value` points at its
// LdmatrixLane; lane l takes word l % 4 of row l / 4 of each matrix j, which
// lane 8 j + l / 4 read. Transposed (kLdmatrixTrans in the collective's
// arg), it takes element l / 4 of rows 2 (l % 4) and 2 (l % 4) + 1, which
// lanes 8 j + 2 (l % 4) and the next one read.
struct LdmatrixLane {
  const LdmatrixRow* row;
  uint32_t* out;
};
constexpr int kLdmatrixTrans = 0x100;  // beside the matrix count in Fiber::arg

uint16_t ldmatrix_element(const Fiber* lanes, int row_lane, int column) {
  const uint32_t word = reinterpret_cast<const LdmatrixLane*>(lanes[row_lane].value)->row->words[column / 2];
  return static_cast<uint16_t>(column % 2 ? word >> 16 : word);
}

void ldmatrix_resolve(Fiber* lanes) {
  const int matrices = lanes[0].arg & 0xff;
  const bool trans = lanes[0].arg & kLdmatrixTrans;
  for (int l = 0; l < 32; ++l) {
    const auto& dst = *reinterpret_cast<const LdmatrixLane*>(lanes[l].value);
    for (int j = 0; j < matrices; ++j) {
      if (trans) {
        const int first = 8 * j + 2 * (l % 4);
        dst.out[j] = ldmatrix_element(lanes, first, l / 4) | uint32_t(ldmatrix_element(lanes, first + 1, l / 4)) << 16;
      } else {
        dst.out[j] = reinterpret_cast<const LdmatrixLane*>(lanes[8 * j + l / 4].value)->row->words[l % 4];
      }
    }
  }
}

void resolve_group(Worker& w, unsigned warp, unsigned group) {
  Fiber* lanes = &w.fibers[warp * 32];
  Warp& wp = w.warps[warp];
  const unsigned first = __builtin_ctz(group);
  unsigned vote = 0, parities = 0;
  for (unsigned g = group; g; g &= g - 1) {
    const unsigned l = __builtin_ctz(g);
    if (!same_collective(lanes[l], lanes[first]))
      collective_error(w, warp, l, "lane %u of its mask waits at a different collective: %s", first,
                       describe_collective(lanes[first]).c_str());
    if (lanes[l].value) vote |= 1u << l;
    parities |= 1u << lanes[l].parity;
  }
  if (lanes[first].op == detail::kMma) mma_resolve(lanes);
  if (lanes[first].op == detail::kLdmatrix) ldmatrix_resolve(lanes);
  for (unsigned g = group; g; g &= g - 1) {
    const unsigned l = __builtin_ctz(g);
    lanes[l].result = lane_result(w, warp, group, vote & lanes[l].mask, l);
  }
  for (unsigned g = group; g; g &= g - 1) {
    Fiber& f = lanes[__builtin_ctz(g)];
    f.state = State::Ready;
    f.acquire = static_cast<uint8_t>(parities);
  }
  wp.waiting &= ~group;
  ++wp.round;
  w.ready += __builtin_popcount(group);
}

// A collective completes once every lane of its mask that exists waits at it.
bool try_lane(Worker& w, unsigned warp, unsigned lane) {
  Warp& wp = w.warps[warp];
  const unsigned group = w.fibers[warp * 32 + lane].mask & wp.exists;
  if (group & ~wp.waiting) return false;
  resolve_group(w, warp, group);
  return true;
}

bool try_warp(Worker& w, unsigned warp) {
  bool any = false;
  for (unsigned p = w.warps[warp].waiting; p; p &= p - 1) {
    const unsigned lane = __builtin_ctz(p);
    if ((w.warps[warp].waiting >> lane) & 1u) any |= try_lane(w, warp, lane);
  }
  return any;
}

// A lane returned from the kernel: lanes waiting for it can never complete.
void lane_exited(Worker& w, unsigned warp, unsigned lane) {
  Warp& wp = w.warps[warp];
  wp.live &= ~(1u << lane);
  for (unsigned p = wp.waiting; p; p &= p - 1) {
    const unsigned l = __builtin_ctz(p);
    if ((w.fibers[warp * 32 + l].mask >> lane) & 1u)
      collective_error(w, warp, l, "lane %u of its mask returned from the kernel without reaching it",
                       lane);
  }
}

// ------------------------------------------------------------ block schedule
void make_order(Worker& w, unsigned n) {
  switch (w.job->order) {
    case Order::Forward:
      for (unsigned i = 0; i < n; ++i) w.order[i] = i;
      break;
    case Order::Reversed:
      for (unsigned i = 0; i < n; ++i) w.order[i] = n - 1 - i;
      break;
    case Order::Shuffled:
      for (unsigned i = 0; i < n; ++i) w.order[i] = i;
      for (unsigned i = n - 1; i > 0; --i)
        std::swap(w.order[i], w.order[splitmix64(w.rng) % (i + 1)]);
      break;
  }
}

[[noreturn]] void report_divergence(Worker& w) {
  struct Site { const char* file; int line; unsigned count; uint3 first; };
  std::vector<Site> sites;
  unsigned at_warp = 0;
  const Fiber* warp_first = nullptr;
  const unsigned n = w.job->threads;
  for (unsigned i = 0; i < n; ++i) {
    const Fiber& f = w.fibers[i];
    if (f.state == State::AtWarp) {
      if (at_warp++ == 0) warp_first = &f;
    } else if (f.state == State::AtBarrier) {
      auto it = std::find_if(sites.begin(), sites.end(), [&](const Site& s) {
        return s.line == f.line && (s.file == f.file || !std::strcmp(s.file, f.file));
      });
      if (it == sites.end()) sites.push_back({f.file, f.line, 1, f.tid});
      else ++it->count;
    }
  }
  const uint3 b = w.block_idx;
  std::fprintf(stderr, "simt: divergent __syncthreads() in kernel '%s' block (%u,%u,%u):",
               w.job->name, b.x, b.y, b.z);
  for (size_t i = 0; i < sites.size(); ++i)
    std::fprintf(stderr, "%s %u of %u live threads wait at %s:%d (first thread (%u,%u,%u))",
                 i ? ";" : "", sites[i].count, w.live, sites[i].file, sites[i].line,
                 sites[i].first.x, sites[i].first.y, sites[i].first.z);
  if (at_warp)
    std::fprintf(stderr, "%s %u of %u live threads wait at a warp collective that cannot "
                 "complete (first thread (%u,%u,%u) at %s)", sites.empty() ? "" : ";", at_warp,
                 w.live, warp_first->tid.x, warp_first->tid.y, warp_first->tid.z,
                 describe_collective(*warp_first).c_str());
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::abort();
}

// The block's shared memory as a GPU hands it over: garbage. The race
// checker must not see the scheduler's fill as an access racing with the
// previous block's threads (the block-order object orders the threads).
void fill_shared_memory(Worker& w) {
  const Job& job = *w.job;
  const bool ignore = job.san & kTsan;
  if (ignore) __tsan_ignore_thread_begin();
  if (job.smem) std::memset(detail::dyn_smem, kSmemPattern, job.smem);
  if (job.san & kMemory)
    for (const detail::StaticShared::Range& r : w.static_smem.sections)
      if (r.bytes) std::memset(r.begin, kSmemPattern, r.bytes);
  if (ignore) __tsan_ignore_thread_end();
  if (job.san & kRace) __tsan_release(&w.block_start);
}

void name_fibers(Worker& w) {
  char name[128];
  const uint3 b = w.block_idx;
  for (unsigned i = 0; i < w.job->threads; ++i) {
    const uint3 t = w.fibers[i].tid;
    // TSan keeps 63 characters: the coordinates first, the kernel after.
    std::snprintf(name, sizeof name, "block (%u,%u,%u) thread (%u,%u,%u) of %s", b.x, b.y, b.z, t.x,
                  t.y, t.z, w.job->brief);
    __tsan_set_fiber_name(w.fibers[i].tsan, name);
  }
}

void run_block(Worker& w, uint64_t linear) {
  const Job& job = *w.job;
  const dim3 g = job.grid, bd = job.block;
  w.block_idx = uint3{static_cast<unsigned>(linear % g.x),
                      static_cast<unsigned>((linear / g.x) % g.y),
                      static_cast<unsigned>(linear / (uint64_t(g.x) * g.y))};
  blockIdx = w.block_idx;
  blockDim = bd;
  gridDim = g;
  detail::dyn_smem = job.san & kMemory ? w.exact_smem : w.smem;
  ++w.blocks_run;
  fill_shared_memory(w);

  const unsigned n = job.threads;
  if (job.san & kAccess)
    simt_access_block_begin(n, detail::dyn_smem, job.smem);
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    f.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    start_fiber(w, f);
  }
  if (job.san & kRace) name_fibers(w);
  for (unsigned k = 0; k < w.warps.size(); ++k) {
    const unsigned lanes = std::min(32u, n - k * 32);
    w.warps[k].exists = w.warps[k].live = lanes == 32 ? ~0u : (1u << lanes) - 1;
    w.warps[k].waiting = 0;
  }
  w.ready = w.live = n;
  w.at_barrier = 0;
  w.bar_mismatch = false;
  w.bar_count = w.bar_result = 0;
  w.rng = job.seed ^ (linear * 0xd1b54a32d192ed03ull);
  make_order(w, n);

  while (w.live > 0) {
    if (w.ready > 0) {
      for (unsigned idx : w.order) {
        if (w.ready == 0) break;
        Fiber& f = w.fibers[idx];
        if (f.state != State::Ready) continue;
        --w.ready;
        resume(w, f);
        const unsigned warp = idx / 32, lane = idx % 32;
        if (f.state == State::Done) {
          --w.live;
          lane_exited(w, warp, lane);
        } else if (f.state == State::AtWarp) {
          try_lane(w, warp, lane);
        }
      }
      continue;
    }
    // Nobody can run. Lanes whose group completed out of order are resolved here.
    bool progressed = false;
    for (unsigned k = 0; k < w.warps.size(); ++k)
      if (w.warps[k].waiting) progressed |= try_warp(w, k);
    if (progressed) continue;
    if (w.at_barrier != w.live || w.bar_mismatch) report_divergence(w);
    // Everyone alive waits at the same __syncthreads(): next barrier round.
    if (job.san & kAccess) simt_access_interval_end();
    for (unsigned i = 0; i < n; ++i)
      if (w.fibers[i].state == State::AtBarrier) w.fibers[i].state = State::Ready;
    w.ready = w.at_barrier;
    w.at_barrier = 0;
    w.bar_result = w.bar_count;
    w.bar_count = 0;
    w.bar_mismatch = false;
    ++w.bar_round;
    if (job.order == Order::Shuffled) make_order(w, n);
  }
  if (job.san & kAccess) simt_access_interval_end();
}

void run_blocks(const Job& job, unsigned index) {
  Worker& w = this_worker();
  w.reserve(job);
  if (job.stride) {
    for (uint64_t b = index; b < job.blocks; b += job.stride) run_block(w, b);
  } else {
    for (;;) {
      const uint64_t b = const_cast<Job&>(job).next.fetch_add(1, std::memory_order_relaxed);
      if (b >= job.blocks) break;
      run_block(w, b);
    }
  }
  w.job = nullptr;
}

// ---------------------------------------------------------------- worker pool
// Helper threads sleep until a launch publishes a job; the launching thread
// runs blocks too (as worker 0). Never destroyed: detached helpers may still
// be waiting at exit.
struct Pool {
  std::mutex launch_mutex;  // one launch at a time
  std::mutex m;
  std::condition_variable wake, done;
  std::vector<std::thread> threads;
  const Job* job = nullptr;
  uint64_t generation = 0;
  unsigned helpers = 0, pending = 0;

  void helper_main(unsigned index) {
    uint64_t seen = 0;
    for (;;) {
      const Job* j;
      {
        std::unique_lock<std::mutex> lk(m);
        wake.wait(lk, [&] { return generation != seen; });
        seen = generation;
        if (index >= helpers) continue;
        j = job;
      }
      run_blocks(*j, index + 1);
      std::lock_guard<std::mutex> lk(m);
      if (--pending == 0) done.notify_all();
    }
  }

  void run(const Job& j, unsigned want_helpers) {
    if (want_helpers > 0) {
      std::lock_guard<std::mutex> lk(m);
      while (threads.size() < want_helpers) {
        threads.emplace_back([this, i = unsigned(threads.size())] { helper_main(i); });
        threads.back().detach();
      }
      job = &j;
      helpers = pending = want_helpers;
      ++generation;
      wake.notify_all();
    }
    run_blocks(j, 0);
    if (want_helpers > 0) {
      std::unique_lock<std::mutex> lk(m);
      done.wait(lk, [&] { return pending == 0; });
      job = nullptr;
    }
  }
};

Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

bool valid_config(dim3 grid, dim3 block) {
  if (!block.x || !block.y || !block.z || !grid.x || !grid.y || !grid.z) return false;
  if (block.x > 1024 || block.y > 1024 || block.z > 64) return false;
  if (uint64_t(block.x) * block.y * block.z > kMaxThreads) return false;
  return !(grid.x > unsigned(INT_MAX) || grid.y > 65535 || grid.z > 65535);
}

// ------------------------------------------------------------ launch rules
// __launch_bounds__ of a kernel (1024 without one), from its code's section.
int max_threads_of(const void* kernel) {
  static const std::vector<BoundsRange> ranges = bounds_ranges();
  const char* at = static_cast<const char*>(kernel);
  for (const BoundsRange& r : ranges)
    if (at >= r.begin && at < r.end) return r.threads;
  return static_cast<int>(kMaxThreads);
}

std::mutex g_attr_mutex;
std::unordered_map<const void*, int>& max_dynamic_smem() {
  static auto* m = new std::unordered_map<const void*, int>;
  return *m;
}

size_t smem_limit_of(const void* kernel) {
  std::lock_guard<std::mutex> lk(g_attr_mutex);
  auto it = max_dynamic_smem().find(kernel);
  return it == max_dynamic_smem().end() ? kDefaultSmem : static_cast<size_t>(it->second);
}

// A GPU rejects the launch and the error is sticky until read; the message
// says why, which a GPU does not.
void reject(cudaError_t e, const detail::Site& site, const char* kernel, const char* fmt, ...) {
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "simt: launch of kernel '%s' at %s:%d rejected (%s): %s\n", kernel, site.file,
               site.line, error_string(e), why);
  t_last_error = e;
}

// ------------------------------------------------------------ report hooks
}  // namespace

// Sanitizer reports name source lines; this adds the CUDA thread and kernel.
void on_sanitizer_death() {
  const std::string where = where_now();
  if (!where.empty()) {
    std::fprintf(stderr, "simt: sanitizer report from %s (launched at %s:%d)\n", where.c_str(),
                 t_worker->job->site->file, t_worker->job->site->line);
    std::fflush(stderr);
  }
}

}  // namespace simt

// UBSan (a runtime of its own beside ASan's) reports through this hook.
extern "C" void __ubsan_on_report() { simt::on_sanitizer_death(); }

namespace simt {
namespace {

void install_report_hooks() {
  if (&__sanitizer_set_death_callback && (g_san & (kTsan | kAsan)))
    __sanitizer_set_death_callback(on_sanitizer_death);
}

// "static shared memory", "dynamic shared memory" or "global memory".
const char* memory_space(const Worker* w, const void* addr) {
  const unsigned char* a = static_cast<const unsigned char*>(addr);
  if (w && w->static_smem.holds(a)) return "static shared memory";
  if (w && w->job && detail::dyn_smem && a >= detail::dyn_smem && a < detail::dyn_smem + w->job->smem)
    return "dynamic shared memory";
  return "global memory";
}

// The innermost inlined frame outside this runtime's own header (whose __ldg
// and ldmatrix reads are the kernel's, not its own): the sanitizer writes one
// frame per inlining level, each ending in a NUL, and an empty one last.
std::string source_of(void* pc) {
  char buf[2048] = "";
  if (pc && &__sanitizer_symbolize_pc) __sanitizer_symbolize_pc(pc, "%s:%l", buf, sizeof buf);
  if (!buf[0]) return "?";
  for (const char* frame = buf; *frame && frame < buf + sizeof buf; frame += std::strlen(frame) + 1)
    if (!std::strstr(frame, "simt/simt.h:")) return frame;
  return buf;
}

}  // namespace
}  // namespace simt

// ThreadSanitizer calls this after printing each report; a one-line summary
// follows it: the kernel, both accesses' CUDA threads and source lines, the
// address and whether it is shared or global memory.
extern "C" void __tsan_on_report(void* report) {
  using namespace simt;
  const Worker* w = t_worker;
  if (!w || !w->job || !&__tsan_get_report_data) return;
  const char* description = nullptr;
  int count = 0, stacks = 0, mops = 0, locs = 0, mutexes = 0, threads = 0, tids = 0;
  void* sleep = nullptr;
  if (!__tsan_get_report_data(report, &description, &count, &stacks, &mops, &locs, &mutexes,
                              &threads, &tids, &sleep, 1) ||
      !description || std::strcmp(description, "data-race") || mops < 2)
    return;
  std::string access[2];
  void* addr0 = nullptr;
  for (int i = 0; i < 2; ++i) {
    int tid = -1, size = 0, write = 0, atomic = 0;
    void* addr = nullptr;
    void* trace[4] = {};
    __tsan_get_report_mop(report, i, &tid, &addr, &size, &write, &atomic, trace, 4);
    if (i == 0) addr0 = addr;
    const char* name = "another thread";
    for (int t = 0; t < threads; ++t) {
      int ttid = -1, running = 0, parent = 0;
      uint64_t os_id = 0;
      const char* tname = nullptr;
      void* ttrace[1] = {};
      __tsan_get_report_thread(report, t, &ttid, &os_id, &running, &tname, &parent, ttrace, 1);
      if (ttid == tid && tname && tname[0]) name = tname;
    }
    char buf[768];
    std::snprintf(buf, sizeof buf, "%s%s of %d bytes by %s at %s", i ? "previous " : "",
                  write ? "write" : "read", size, name, source_of(trace[0]).c_str());
    access[i] = buf;
  }
  std::fprintf(stderr, "simt: race checker: data race in kernel '%s' on %s at %p: %s; %s\n",
               w->job->name, memory_space(w, addr0), addr0, access[0].c_str(), access[1].c_str());
  std::fflush(stderr);
}

namespace simt {
namespace {

// Launches per kernel; written under the pool's launch mutex, read under it too.
// Never destroyed, like the runtime's other registries: a launch during static destruction
// must still find it.
std::unordered_map<const void*, KernelLaunches>& launch_table() {
  static auto* table = new std::unordered_map<const void*, KernelLaunches>();
  return *table;
}

void count_launch(const void* kernel, const std::string& name) {
  auto [it, fresh] = launch_table().try_emplace(kernel, KernelLaunches{kernel, name, 0});
  ++it->second.launches;
}

// Recorded launches; written and taken under the pool's launch mutex.
std::vector<LaunchRecord>& launch_records() {
  static auto* records = new std::vector<LaunchRecord>();
  return *records;
}

}  // namespace

// ------------------------------------------------------------------ public API
void set_order(Order o, uint64_t s) {
  read_env();
  g_order = static_cast<int>(o);
  g_seed = s;
}
void set_num_workers(int n) {
  read_env();
  g_workers = n > 0 ? n : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}
void set_recording(bool on) {
  read_env();
  g_recording = on;
}
void set_dry_run(bool on) {
  read_env();
  g_dry_run = on;
}
bool dry_run() {
  read_env();
  return g_dry_run.load();
}
std::vector<LaunchRecord> take_recorded_launches() {
  std::lock_guard<std::mutex> lk(pool().launch_mutex);
  std::vector<LaunchRecord> out;
  out.swap(launch_records());
  return out;
}
std::vector<KernelLaunches> launch_counts() {
  std::lock_guard<std::mutex> lk(pool().launch_mutex);
  std::vector<KernelLaunches> out;
  for (const auto& entry : launch_table()) out.push_back(entry.second);
  return out;
}
int num_workers() {
  read_env();
  return g_workers.load();
}
void set_multiprocessor_count(int n) {
  read_env();
  g_sms = n > 0 ? n : g_env_sms.load();
}
int multiprocessor_count() {
  read_env();
  return g_sms.load();
}
bool set_compute_capability(int cc) {
  read_env();
  if (cc > 0 && cc < 10) return false;  // not major * 10 + minor
  g_cc = cc > 0 ? cc : g_env_cc.load();
  return true;
}
int compute_capability() {
  read_env();
  return g_cc.load();
}
Order order() {
  read_env();
  return static_cast<Order>(g_order.load());
}
uint64_t seed() {
  read_env();
  return g_seed.load();
}

cudaError_t get_last_error(bool clear) {
  const cudaError_t e = t_last_error;
  if (clear) t_last_error = cudaSuccess;
  return e;
}

const char* error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

namespace detail {

cudaError_t set_max_dynamic_smem(const void* kernel, int bytes) {
  if (bytes < 0 || static_cast<size_t>(bytes) > kMaxSmemOptIn) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lk(g_attr_mutex);
  max_dynamic_smem()[kernel] = bytes;
  return cudaSuccess;
}

void launch(const Site& site, const void* kernel, dim3 grid, dim3 block, size_t smem,
            KernelBody body, const void* ctx) {
  read_env();
  if (g_check_error) {
    std::fprintf(stderr, "simt: %s\n", g_check_error);
    std::abort();
  }
  if (t_worker && t_worker->cur) fatal("kernel launch from inside a kernel is not supported");
  const KernelName& name = kernel_name(kernel, site.text);
  if (!valid_config(grid, block)) {
    reject(cudaErrorInvalidConfiguration, site, name.full.c_str(),
           "grid (%u,%u,%u), block (%u,%u,%u)", grid.x, grid.y, grid.z, block.x, block.y, block.z);
    return;
  }
  const unsigned threads = block.x * block.y * block.z;
  const int bound = max_threads_of(kernel);
  if (threads > static_cast<unsigned>(bound)) {
    reject(cudaErrorLaunchOutOfResources, site, name.full.c_str(),
           "%u threads per block exceed the kernel's __launch_bounds__(%d)", threads, bound);
    return;
  }
  const size_t smem_limit = smem_limit_of(kernel);
  if (smem > smem_limit) {
    if (smem_limit == kDefaultSmem && smem <= kMaxSmemOptIn)
      reject(cudaErrorInvalidValue, site, name.full.c_str(),
             "%zu bytes of dynamic shared memory exceed 48 KiB without the opt-in "
             "cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)",
             smem);
    else
      reject(cudaErrorInvalidValue, site, name.full.c_str(),
             "%zu bytes of dynamic shared memory exceed the kernel's limit of %zu bytes", smem,
             smem_limit);
    return;
  }
  Pool& p = pool();
  std::lock_guard<std::mutex> lk(p.launch_mutex);
  const bool dry = g_dry_run.load();
  if (dry || g_recording.load()) launch_records().push_back({kernel, name.full, grid, block, smem});
  if (dry) return;
  count_launch(kernel, name.full);
  if (g_san & kAccess) simt_access_launch(kernel, name.full.c_str());
  Job job;
  job.name = name.full.c_str();
  job.brief = name.brief.c_str();
  job.site = &site;
  job.grid = grid;
  job.block = block;
  job.smem = smem;
  job.threads = threads;
  job.blocks = uint64_t(grid.x) * grid.y * grid.z;
  job.body = body;
  job.ctx = ctx;
  job.order = static_cast<Order>(g_order.load());
  job.seed = g_seed.load();
  job.san = g_san;
  uint64_t workers = std::max(1, g_workers.load());
  job.stride = 0;
  if (job.san & kRace) {
    // Blocks that follow each other on one worker are ordered for the race
    // checker (they reuse its shared memory and stacks); dealing blocks out
    // in turn to at least two workers keeps neighbouring blocks unordered,
    // so races between them show.
    workers = std::max<uint64_t>(workers, 2);
    job.stride = static_cast<unsigned>(std::min(workers, job.blocks));
  }
  // Dim3 globals belong to the launching thread too (it runs blocks); keep
  // its host-side view unchanged after the launch.
  const uint3 saved_t = threadIdx, saved_b = blockIdx;
  const dim3 saved_bd = blockDim, saved_gd = gridDim;
  unsigned char* saved_smem = dyn_smem;
  if (job.san & kRace) __tsan_release(&g_launch_begin);
  p.run(job, static_cast<unsigned>(std::min(workers, job.blocks) - 1));
  if (job.san & kRace) __tsan_acquire(&g_launch_end);
  threadIdx = saved_t;
  blockIdx = saved_b;
  blockDim = saved_bd;
  gridDim = saved_gd;
  dyn_smem = saved_smem;
}

void syncthreads(const char* file, int line) { syncthreads_count(file, line, 0); }

int syncthreads_count(const char* file, int line, int pred) {
  Worker& w = fiber_worker("__syncthreads()");
  Fiber& f = *w.cur;
  f.file = file;
  f.line = line;
  if (w.at_barrier == 0) {
    w.bar_file = file;
    w.bar_line = line;
  } else if (line != w.bar_line || (file != w.bar_file && std::strcmp(file, w.bar_file))) {
    w.bar_mismatch = true;
  }
  ++w.at_barrier;
  w.bar_count += pred != 0;
  f.state = State::AtBarrier;
  if (__builtin_expect(g_san & kRace, 0)) {
    // This round's object (see Warp::sync for the parity).
    void* round = &w.bar_sync[w.bar_round & 1];
    __tsan_release(round);
    yield(w, f);
    __tsan_acquire(round);
  } else {
    yield(w, f);
  }
  return w.bar_result;
}

uint64_t warp_op(const Site& site, int op, unsigned mask, uint64_t value, int arg, int width) {
  Worker& w = fiber_worker("a warp collective");
  Fiber& f = *w.cur;
  const unsigned idx = static_cast<unsigned>(&f - w.fibers.data());
  const unsigned warp = idx / 32, lane = idx % 32;
  Warp& wp = w.warps[warp];
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.site = &site;
  if (!((mask >> lane) & 1u))
    collective_error(w, warp, lane, "the calling lane is not in its own mask");
  if (const unsigned gone = mask & wp.exists & ~wp.live)
    collective_error(w, warp, lane, "the mask names lanes that returned from the kernel (0x%08x)",
                     gone);
  if ((op == kMma || op == kLdmatrix) && wp.exists != ~0u)
    collective_error(w, warp, lane, "%s needs all 32 lanes of a warp, but the block ends at lane %d",
                     op == kMma ? "mma.sync" : "ldmatrix", __builtin_popcount(wp.exists));
  f.state = State::AtWarp;
  f.parity = static_cast<uint8_t>(wp.round & 1);
  wp.waiting |= 1u << lane;
  if (__builtin_expect(g_san & kRace, 0)) {
    __tsan_release(&wp.sync[f.parity]);
    yield(w, f);
    // The collective completed: acquire what every lane of it released (they
    // may have arrived in different rounds of this warp's parity).
    for (unsigned p = 0; p < 2; ++p)
      if ((f.acquire >> p) & 1u) __tsan_acquire(&w.warps[warp].sync[p]);
  } else {
    yield(w, f);
  }
  return f.result;
}

// The lane's registers travel by address: the runtime fills in D before the
// lane resumes (its stack frame lives until then).
void mma_sync(const Site& site, MmaShape shape, MmaRegisters& lane) {
  warp_op(site, kMma, 0xffffffffu, reinterpret_cast<uintptr_t>(&lane), static_cast<int>(shape), 32);
}

// Before the lane reads its row: the collective's fields are filled in so
// that an abort names the instruction. Whether an address is in shared
// memory is known for the dynamic buffer always, for static __shared__
// variables only where the kernels were compiled with a sanitizer (their
// sections, static_shared.h); elsewhere a static address is taken on trust.
bool ldmatrix_reads_row(const Site& site, int matrices, bool trans, const void* row) {
  Worker& w = fiber_worker("ldmatrix");
  Fiber& f = *w.cur;
  const unsigned idx = static_cast<unsigned>(&f - w.fibers.data());
  const unsigned warp = idx / 32, lane = idx % 32;
  if (lane >= 8u * static_cast<unsigned>(matrices)) return false;
  f.op = kLdmatrix;
  f.mask = 0xffffffffu;
  f.width = 32;
  f.arg = matrices | (trans ? kLdmatrixTrans : 0);
  f.site = &site;
  if (reinterpret_cast<uintptr_t>(row) % 16)
    collective_error(w, warp, lane, "the row address %p (row %u of matrix %u) is not 16-byte aligned", row,
                     lane % 8, lane / 8);
  const bool sections_known = g_san & (kTsan | kAsan | kCounters);
  if (sections_known && !std::strcmp(memory_space(&w, row), "global memory"))
    collective_error(w, warp, lane, "the row address %p (row %u of matrix %u) is not in shared memory", row,
                     lane % 8, lane / 8);
  return true;
}

// The lane's row and registers travel by address, as mma's do.
void ldmatrix_sync(const Site& site, int matrices, bool trans, const LdmatrixRow& row, uint32_t* out) {
  LdmatrixLane lane{&row, out};
  warp_op(site, kLdmatrix, 0xffffffffu, reinterpret_cast<uintptr_t>(&lane), matrices | (trans ? kLdmatrixTrans : 0), 32);
}

}  // namespace detail
}  // namespace simt
