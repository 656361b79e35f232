// CPU runtime behind simt.h: fibers for CUDA threads, a per-block cooperative
// scheduler with barrier/warp-collective rendezvous, and a worker pool that
// runs blocks in parallel.
#include "simt.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
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

namespace simt {
namespace {

constexpr size_t kStackBytes = 128 * 1024;  // lazily committed; guard page below
constexpr unsigned kMaxThreads = 1024;
constexpr size_t kMaxDynamicSmem = 227 * 1024;

// ------------------------------------------------------------- configuration
std::atomic<int> g_order{static_cast<int>(Order::Forward)};
std::atomic<uint64_t> g_seed{0};
std::atomic<int> g_workers{0};
std::atomic<const char*> g_kernel{nullptr};
std::once_flag g_env_once;
thread_local cudaError_t t_last_error = cudaSuccess;

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
  });
}

[[noreturn]] void fatal(const char* what) {
  const char* k = g_kernel.load();
  std::fprintf(stderr, "simt: %s (kernel '%s')\n", what, k ? k : "");
  std::abort();
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
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
  // Pending barrier: call site.
  const char* file = nullptr;
  int line = 0;
#if !defined(__x86_64__)
  ucontext_t ctx;
#endif
};

struct Warp {
  unsigned live = 0;     // lanes that exist and have not returned
  unsigned waiting = 0;  // lanes waiting at a collective
};

struct Job {
  const char* name;
  dim3 grid, block;
  size_t smem;
  unsigned threads;
  uint64_t blocks;
  detail::KernelBody body;
  const void* ctx;
  Order order;
  uint64_t seed;
  std::atomic<uint64_t> next{0};
};

// Per OS thread state; one block runs on it at a time.
struct Worker {
  std::vector<Fiber> fibers;
  std::vector<char*> stack_maps;
  std::vector<Warp> warps;
  std::vector<unsigned> order;
  unsigned char* smem = nullptr;
  size_t smem_cap = 0;
  const Job* job = nullptr;
  Fiber* cur = nullptr;
#if defined(__x86_64__)
  void* sched_sp = nullptr;
#else
  ucontext_t sched_ctx;
#endif
  // Block state.
  uint3 block_idx{0, 0, 0};
  unsigned ready = 0, live = 0;
  unsigned at_barrier = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  bool bar_mismatch = false;
  int bar_count = 0, bar_result = 0;
  uint64_t rng = 0;

  ~Worker() {
    for (char* m : stack_maps) munmap(m, kStackBytes + page_size());
    std::free(smem);
  }
  static size_t page_size() {
    static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p;
  }

  void reserve(const Job& j) {
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
    if (smem_cap < j.smem) {
      std::free(smem);
      smem_cap = (j.smem + 63) & ~size_t(63);
      smem = static_cast<unsigned char*>(std::aligned_alloc(64, smem_cap));
      if (!smem) fatal("cannot allocate dynamic shared memory");
    }
  }
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

// Worker of the calling fiber; aborts when called outside a kernel.
Worker& fiber_worker(const char* what) {
  Worker* w = t_worker;
  if (!w || !w->cur) {
    std::fprintf(stderr, "simt: %s called outside a kernel launch\n", what);
    std::abort();
  }
  return *w;
}

void fiber_entry(Fiber* f) {
  Worker* w = t_worker;
  try {
    w->job->body(w->job->ctx);
  } catch (...) {
    fatal("exception escaped from a kernel thread");
  }
  f->state = State::Done;
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

inline void resume(Worker& w, Fiber& f) {
  w.cur = &f;
  threadIdx = f.tid;
#if defined(__x86_64__)
  simt_ctx_switch(&w.sched_sp, f.sp);
#else
  swapcontext(&w.sched_ctx, &f.ctx);
#endif
  w.cur = nullptr;
}

inline void yield(Worker& w, Fiber& f) {
#if defined(__x86_64__)
  simt_ctx_switch(&f.sp, w.sched_sp);
#else
  swapcontext(&f.ctx, &w.sched_ctx);
#endif
}

// ------------------------------------------------------------ warp rendezvous
uint64_t lane_result(const Fiber* lanes, unsigned group, unsigned vote, unsigned lane) {
  const Fiber& f = lanes[lane];
  const unsigned mine = f.mask & group;
  switch (f.op) {
    case detail::kBallot: return vote & mine;
    case detail::kAny: return (vote & mine) != 0;
    case detail::kAll: return (vote & mine) == mine;
    case detail::kSync: return 0;
    default: break;
  }
  unsigned width = static_cast<unsigned>(f.width);
  if (width == 0 || width > 32 || (width & (width - 1))) width = 32;
  const unsigned seg = lane & ~(width - 1), sub = lane & (width - 1);
  const unsigned a = static_cast<unsigned>(f.arg);
  unsigned src = lane;
  switch (f.op) {
    case detail::kShflIdx: src = seg + (a & (width - 1)); break;
    case detail::kShflUp: src = sub >= a ? lane - a : lane; break;
    case detail::kShflDown: src = (a < width && sub + a < width) ? lane + a : lane; break;
    case detail::kShflXor: src = lane ^ a; if (src >= seg + width) src = lane; break;
  }
  // A lane that has returned or is not in the group contributes the caller's value.
  if (src >= 32 || !((group >> src) & 1u)) return f.value;
  return lanes[src].value;
}

void resolve_group(Worker& w, unsigned warp, unsigned group) {
  Fiber* lanes = &w.fibers[warp * 32];
  unsigned vote = 0;
  for (unsigned g = group; g; g &= g - 1) {
    const unsigned l = __builtin_ctz(g);
    if (lanes[l].value) vote |= 1u << l;
  }
  for (unsigned g = group; g; g &= g - 1) {
    const unsigned l = __builtin_ctz(g);
    lanes[l].result = lane_result(lanes, group, vote, l);
  }
  for (unsigned g = group; g; g &= g - 1) lanes[__builtin_ctz(g)].state = State::Ready;
  w.warps[warp].waiting &= ~group;
  w.ready += __builtin_popcount(group);
}

// A lane's collective completes once every live lane of its mask waits at one.
bool try_lane(Worker& w, unsigned warp, unsigned lane) {
  Warp& wp = w.warps[warp];
  const unsigned group = (w.fibers[warp * 32 + lane].mask | (1u << lane)) & wp.live;
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
  uint3 warp_first{0, 0, 0};
  const unsigned n = w.job->threads;
  for (unsigned i = 0; i < n; ++i) {
    const Fiber& f = w.fibers[i];
    if (f.state == State::AtWarp) {
      if (at_warp++ == 0) warp_first = f.tid;
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
                 "complete (first thread (%u,%u,%u))", sites.empty() ? "" : ";", at_warp,
                 w.live, warp_first.x, warp_first.y, warp_first.z);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::abort();
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
  detail::dyn_smem = w.smem;
  // Shared memory starts out as garbage on a GPU; NaN bytes make reads of
  // never-written dynamic shared memory visible in results.
  if (job.smem) std::memset(w.smem, 0xff, job.smem);

  const unsigned n = job.threads;
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    f.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    start_fiber(w, f);
  }
  for (unsigned k = 0; k < w.warps.size(); ++k) {
    const unsigned lanes = std::min(32u, n - k * 32);
    w.warps[k].live = lanes == 32 ? ~0u : (1u << lanes) - 1;
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
          w.warps[warp].live &= ~(1u << lane);
          if (w.warps[warp].waiting) try_warp(w, warp);  // it may have been the last one missing
        } else if (f.state == State::AtWarp) {
          try_lane(w, warp, lane);
        }
      }
      continue;
    }
    // Nobody can run. Lanes with mismatched masks are only resolved here.
    bool progressed = false;
    for (unsigned k = 0; k < w.warps.size(); ++k)
      if (w.warps[k].waiting) progressed |= try_warp(w, k);
    if (progressed) continue;
    if (w.at_barrier != w.live || w.bar_mismatch) report_divergence(w);
    // Everyone alive waits at the same __syncthreads(): next barrier round.
    for (unsigned i = 0; i < n; ++i)
      if (w.fibers[i].state == State::AtBarrier) w.fibers[i].state = State::Ready;
    w.ready = w.at_barrier;
    w.at_barrier = 0;
    w.bar_result = w.bar_count;
    w.bar_count = 0;
    w.bar_mismatch = false;
    if (job.order == Order::Shuffled) make_order(w, n);
  }
}

void run_blocks(const Job& job) {
  Worker& w = this_worker();
  w.reserve(job);
  for (;;) {
    const uint64_t b = const_cast<Job&>(job).next.fetch_add(1, std::memory_order_relaxed);
    if (b >= job.blocks) break;
    run_block(w, b);
  }
  w.job = nullptr;
}

// ---------------------------------------------------------------- worker pool
// Helper threads sleep until a launch publishes a job; the launching thread
// runs blocks too. Never destroyed: detached helpers may still be waiting at exit.
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
      run_blocks(*j);
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
    run_blocks(j);
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

bool valid_config(dim3 grid, dim3 block, size_t smem) {
  if (!block.x || !block.y || !block.z || !grid.x || !grid.y || !grid.z) return false;
  if (block.x > 1024 || block.y > 1024 || block.z > 64) return false;
  if (uint64_t(block.x) * block.y * block.z > kMaxThreads) return false;
  if (grid.x > unsigned(INT_MAX) || grid.y > 65535 || grid.z > 65535) return false;
  return smem <= kMaxDynamicSmem;
}

}  // namespace

// ------------------------------------------------------------------ public API
void set_order(Order o, uint64_t s) {
  read_env();
  g_order = static_cast<int>(o);
  g_seed = s;
}
Order order() {
  read_env();
  return static_cast<Order>(g_order.load());
}
uint64_t seed() {
  read_env();
  return g_seed.load();
}
void set_num_workers(int n) {
  read_env();
  g_workers = n > 0 ? n : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}
int num_workers() {
  read_env();
  return g_workers.load();
}
const char* current_kernel() {
  const char* k = g_kernel.load();
  return k ? k : "";
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
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

namespace detail {

void launch(const char* name, dim3 grid, dim3 block, size_t smem, KernelBody body,
            const void* ctx) {
  read_env();
  if (!valid_config(grid, block, smem)) {
    t_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (t_worker && t_worker->cur) fatal("kernel launch from inside a kernel is not supported");
  Pool& p = pool();
  std::lock_guard<std::mutex> lk(p.launch_mutex);
  Job job;
  job.name = name;
  job.grid = grid;
  job.block = block;
  job.smem = smem;
  job.threads = block.x * block.y * block.z;
  job.blocks = uint64_t(grid.x) * grid.y * grid.z;
  job.body = body;
  job.ctx = ctx;
  job.order = static_cast<Order>(g_order.load());
  job.seed = g_seed.load();
  const uint64_t workers = std::max(1, g_workers.load());
  g_kernel = name;
  // Dim3 globals belong to the launching thread too (it runs blocks); keep
  // its host-side view unchanged after the launch.
  const uint3 saved_t = threadIdx, saved_b = blockIdx;
  const dim3 saved_bd = blockDim, saved_gd = gridDim;
  unsigned char* saved_smem = dyn_smem;
  p.run(job, static_cast<unsigned>(std::min(workers, job.blocks) - 1));
  threadIdx = saved_t;
  blockIdx = saved_b;
  blockDim = saved_bd;
  gridDim = saved_gd;
  dyn_smem = saved_smem;
  g_kernel = nullptr;
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
  yield(w, f);
  return w.bar_result;
}

uint64_t warp_op(int op, unsigned mask, uint64_t value, int arg, int width) {
  Worker& w = fiber_worker("a warp collective");
  Fiber& f = *w.cur;
  const unsigned idx = static_cast<unsigned>(&f - w.fibers.data());
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.state = State::AtWarp;
  w.warps[idx / 32].waiting |= 1u << (idx % 32);
  yield(w, f);
  return f.result;
}

}  // namespace detail
}  // namespace simt
