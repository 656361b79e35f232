// The access counters' recorder (see access.h for the rules): per OS thread,
// the accesses of the running block's CUDA threads in the current barrier
// interval; at the interval's end they are paired into warp requests and
// counted per (kernel, PC, space, load or store).
#include <pthread.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "recorder.h"
#include "../simt.h"
#include "../static_shared.h"

namespace simt {
namespace access {
namespace {

constexpr unsigned kWarp = 32;
constexpr unsigned kBanks = 32;
constexpr unsigned kSectorShift = 5;  // 32-byte sectors
constexpr unsigned kWordShift = 2;    // 4-byte banks

struct Record {
  const void* pc;
  uintptr_t addr;
  unsigned size;
  Space space;
  bool store;
};

struct Range {
  uintptr_t lo = 0, bytes = 0;
  bool holds(uintptr_t a) const { return a - lo < bytes; }
  static Range of(const void* p, size_t n) { return Range{reinterpret_cast<uintptr_t>(p), n}; }
};

// The launch being run; written by the launching thread before the workers
// start (the runtime's pool hands the job over under a mutex).
const void* g_kernel = nullptr;
const char* g_kernel_name = "";
Range g_launcher_stack;  // the kernel arguments live there

struct CounterKey {
  const void* kernel;
  const void* pc;
  Space space;
  bool store;
  bool operator==(const CounterKey& o) const {
    return kernel == o.kernel && pc == o.pc && space == o.space && store == o.store;
  }
};
struct CounterKeyHash {
  size_t operator()(const CounterKey& k) const {
    return std::hash<const void*>()(k.pc) * 31 + std::hash<const void*>()(k.kernel) +
           static_cast<size_t>(k.space) * 2 + k.store;
  }
};
using CounterMap = std::unordered_map<CounterKey, PcCounters, CounterKeyHash>;

// Every worker's counters; merged when read. Never destroyed: the report
// runs at exit, when worker threads may still hold theirs.
std::mutex g_tables_mutex;
std::vector<CounterMap*>& tables() {
  static auto* all = new std::vector<CounterMap*>;
  return *all;
}

// One lane's part of a warp request.
struct LaneAccess {
  uintptr_t addr;
  unsigned size, lane;
};

// A request being assembled: the lane accesses of (PC, occurrence, space).
struct Request {
  const void* pc;
  Space space;
  bool store;
  std::vector<LaneAccess> lanes;
};

struct RequestKey {
  const void* pc;
  uint32_t occurrence;
  Space space;
  bool operator==(const RequestKey& o) const {
    return pc == o.pc && occurrence == o.occurrence && space == o.space;
  }
};
struct RequestKeyHash {
  size_t operator()(const RequestKey& k) const {
    return std::hash<const void*>()(k.pc) * 131 + k.occurrence * 2 + static_cast<size_t>(k.space);
  }
};

// Per OS thread: the block it runs and its counters.
struct Recorder {
  std::vector<std::vector<Record>> threads;  // by linear thread index
  unsigned block_threads = 0;
  // This OS thread's copy of the static __shared__ variables (static_shared.h).
  simt::detail::StaticShared static_smem;
  bool static_smem_known = false;
  Range dynamic_smem;
  Range builtins[5];  // threadIdx, blockIdx, blockDim, gridDim, the dynamic smem pointer
  CounterMap* counters = nullptr;
  // Scratch of interval_end, kept to reuse its memory.
  std::unordered_map<RequestKey, unsigned, RequestKeyHash> request_index;
  std::vector<Request> requests;
  std::unordered_map<const void*, uint32_t> occurrences;
  std::vector<uintptr_t> scratch;
  std::vector<LaneAccess> lanes;
};

// The running CUDA thread's record and stack; null outside CUDA threads, so
// host code pays one thread-local load per access.
struct Running {
  std::vector<Record>* records;
  Recorder* recorder;
  Range stack;
};
thread_local Running t_running_storage;
thread_local Running* t_running __attribute__((tls_model("initial-exec"))) = nullptr;

Recorder& this_recorder() {
  thread_local Recorder* r = nullptr;
  if (!r) {
    r = new Recorder;  // leaked on purpose: its counters outlive the thread
    r->counters = new CounterMap;
    std::lock_guard<std::mutex> lk(g_tables_mutex);
    tables().push_back(r->counters);
  }
  return *r;
}

// This thread's stack (for a launching thread: where its kernel arguments are).
Range thread_stack() {
  thread_local Range stack;
  if (!stack.bytes) {
    pthread_attr_t attr;
    void* lo = nullptr;
    size_t bytes = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &lo, &bytes);
      pthread_attr_destroy(&attr);
    }
    stack = Range::of(lo, bytes);
  }
  return stack;
}

// Distinct 32-byte segments the request touches.
uint64_t sectors_of(const std::vector<LaneAccess>& lanes, std::vector<uintptr_t>& segs) {
  segs.clear();
  for (const LaneAccess& a : lanes)
    for (uintptr_t s = a.addr >> kSectorShift; s <= (a.addr + a.size - 1) >> kSectorShift; ++s)
      segs.push_back(s);
  // Lanes usually go up in address: then sorting is a check.
  if (!std::is_sorted(segs.begin(), segs.end())) std::sort(segs.begin(), segs.end());
  return static_cast<uint64_t>(std::unique(segs.begin(), segs.end()) - segs.begin());
}

// Bank-conflict ways: phases of 128 bytes (all 32 lanes for accesses of up to
// 4 bytes, half-warps for 8 bytes, quarter-warps above), in each the most
// distinct words one bank serves; the worst phase.
uint64_t ways_of(const std::vector<LaneAccess>& lanes, std::vector<uintptr_t>& words) {
  unsigned widest = 0;
  for (const LaneAccess& a : lanes) widest = std::max(widest, a.size);
  const unsigned lanes_per_phase = widest <= 4 ? 32 : widest <= 8 ? 16 : 8;
  uint64_t worst = 0;
  for (unsigned phase = 0; phase < kWarp / lanes_per_phase; ++phase) {
    words.clear();
    for (const LaneAccess& a : lanes) {
      if (a.lane / lanes_per_phase != phase) continue;
      for (uintptr_t w = a.addr >> kWordShift; w <= (a.addr + a.size - 1) >> kWordShift; ++w)
        words.push_back(w);
    }
    if (!std::is_sorted(words.begin(), words.end())) std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    unsigned per_bank[kBanks] = {};
    for (uintptr_t w : words) worst = std::max<uint64_t>(worst, ++per_bank[w % kBanks]);
  }
  return worst;
}

void count(Recorder& rec, const void* pc, Space space, bool store,
           const std::vector<LaneAccess>& lanes) {
  PcCounters& c = (*rec.counters)[CounterKey{g_kernel, pc, space, store}];
  if (!c.pc) {
    c.kernel = g_kernel;
    c.kernel_name = g_kernel_name;
    c.pc = pc;
    c.space = space;
    c.store = store;
  }
  ++c.requests;
  c.accesses += lanes.size();
  for (const LaneAccess& a : lanes) c.bytes += a.size;
  if (space == Space::Global) {
    c.sectors += sectors_of(lanes, rec.scratch);
  } else {
    const uint64_t ways = ways_of(lanes, rec.scratch);
    c.ways += ways;
    c.max_ways = std::max(c.max_ways, ways);
  }
}

bool same_sequence(const std::vector<Record>& a, const std::vector<Record>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].pc != b[i].pc || a[i].space != b[i].space) return false;
  return true;
}

// The general pairing: lane accesses by (PC, occurrence, space).
void count_diverged_warp(Recorder& rec, unsigned first, unsigned last) {
  rec.request_index.clear();
  size_t used = 0;
  for (unsigned t = first; t < last; ++t) {
    rec.occurrences.clear();
    for (const Record& a : rec.threads[t]) {
      const uint32_t n = rec.occurrences[a.pc]++;
      auto [it, fresh] = rec.request_index.try_emplace(RequestKey{a.pc, n, a.space}, unsigned(used));
      if (fresh) {
        if (used == rec.requests.size()) rec.requests.emplace_back();
        Request& r = rec.requests[used++];  // reused with its capacity
        r.pc = a.pc;
        r.space = a.space;
        r.store = a.store;
        r.lanes.clear();
      }
      rec.requests[it->second].lanes.push_back(LaneAccess{a.addr, a.size, t - first});
    }
  }
  for (size_t i = 0; i < used; ++i) {
    const Request& r = rec.requests[i];
    count(rec, r.pc, r.space, r.store, r.lanes);
  }
}

// Pairs the interval's accesses of one warp into requests and counts them.
// Lanes usually run the same sequence of PCs; then the i-th accesses of the
// lanes are one request, and no pairing index is needed.
void count_warp(Recorder& rec, unsigned first, unsigned last) {
  unsigned reference = last;
  bool uniform = true;
  for (unsigned t = first; t < last && uniform; ++t) {
    if (rec.threads[t].empty()) continue;
    if (reference == last) reference = t;
    else uniform = same_sequence(rec.threads[t], rec.threads[reference]);
  }
  if (reference == last) return;
  if (!uniform) {
    count_diverged_warp(rec, first, last);
  } else {
    std::vector<LaneAccess>& lanes = rec.lanes;
    const std::vector<Record>& ref = rec.threads[reference];
    for (size_t i = 0; i < ref.size(); ++i) {
      lanes.clear();
      for (unsigned t = reference; t < last; ++t)
        if (!rec.threads[t].empty()) {
          const Record& a = rec.threads[t][i];
          lanes.push_back(LaneAccess{a.addr, a.size, t - first});
        }
      count(rec, ref[i].pc, ref[i].space, ref[i].store, lanes);
    }
  }
  for (unsigned t = first; t < last; ++t) rec.threads[t].clear();
}

}  // namespace

void record(const void* pc, const void* addr, unsigned size, bool store) {
  Running* run = t_running;
  if (__builtin_expect(run == nullptr, 1) || size == 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  const Recorder& rec = *run->recorder;
  Space space = Space::Global;
  if (rec.dynamic_smem.holds(a) || rec.static_smem.holds(addr)) {
    space = Space::Shared;
  } else if (run->stack.holds(a) || g_launcher_stack.holds(a)) {
    return;  // registers and local memory on a GPU, kernel parameters
  } else {
    for (const Range& b : rec.builtins)
      if (b.holds(a)) return;  // special registers on a GPU
  }
  run->records->push_back(Record{pc, a, size, space, store});
}

std::vector<PcCounters> pc_counters() {
  std::unordered_map<CounterKey, PcCounters, CounterKeyHash> merged;
  std::lock_guard<std::mutex> lk(g_tables_mutex);
  for (const CounterMap* table : tables())
    for (const auto& [key, c] : *table) {
      auto [it, fresh] = merged.try_emplace(key, c);
      if (!fresh) it->second.add(c);
    }
  std::vector<PcCounters> out;
  out.reserve(merged.size());
  for (const auto& entry : merged) out.push_back(entry.second);
  return out;
}

void reset_counters() {
  std::lock_guard<std::mutex> lk(g_tables_mutex);
  for (CounterMap* table : tables()) table->clear();
}

}  // namespace access
}  // namespace simt

using simt::access::Range;

extern "C" void simt_access_launch(const void* kernel, const char* name) {
  simt::access::g_kernel = kernel;
  simt::access::g_kernel_name = name;
  simt::access::g_launcher_stack = simt::access::thread_stack();
  simt::access::report_at_exit();
}

extern "C" void simt_access_block_begin(unsigned threads, const void* dynamic_smem,
                                        size_t dynamic_bytes) {
  simt::access::Recorder& rec = simt::access::this_recorder();
  if (rec.threads.size() < threads) rec.threads.resize(threads);
  rec.block_threads = threads;
  if (!rec.static_smem_known) {
    rec.static_smem_known = true;
    rec.static_smem = simt::detail::this_thread_static_shared();
  }
  rec.dynamic_smem = Range::of(dynamic_smem, dynamic_bytes);
  rec.builtins[0] = Range::of(&threadIdx, sizeof threadIdx);
  rec.builtins[1] = Range::of(&blockIdx, sizeof blockIdx);
  rec.builtins[2] = Range::of(&blockDim, sizeof blockDim);
  rec.builtins[3] = Range::of(&gridDim, sizeof gridDim);
  rec.builtins[4] = Range::of(&simt::detail::dyn_smem, sizeof simt::detail::dyn_smem);
}

extern "C" void simt_access_thread_resume(unsigned thread, const void* stack_lo,
                                          const void* stack_hi) {
  simt::access::Recorder& rec = simt::access::this_recorder();
  simt::access::Running& run = simt::access::t_running_storage;
  run.records = &rec.threads[thread];
  run.recorder = &rec;
  run.stack = Range::of(stack_lo, static_cast<const char*>(stack_hi) -
                                      static_cast<const char*>(stack_lo));
  simt::access::t_running = &run;
}

extern "C" void simt_access_thread_yield() { simt::access::t_running = nullptr; }

extern "C" void simt_access_interval_end() {
  simt::access::Recorder& rec = simt::access::this_recorder();
  for (unsigned first = 0; first < rec.block_threads; first += simt::access::kWarp)
    simt::access::count_warp(rec, first,
                             std::min(first + simt::access::kWarp, rec.block_threads));
}
