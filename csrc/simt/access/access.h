// Memory-access counters of the SIMT runtime (FASTCONV_SIMT_CHECK=access):
// how well a CUDA kernel would use memory on a GPU, per kernel and source line.
//
// How: the kernels and the program are compiled with -fsanitize=thread, which
// makes GCC call __tsan_read4(addr), __tsan_write8(addr), ... before every load
// and store, but linked with the simt_access library (csrc/simt/
// access/tsan_entry_points.cpp) instead of ThreadSanitizer's runtime: each call is
// recorded with its return address as the PC, when a CUDA thread runs.
//
// A warp request is the n-th execution of one PC by the lanes of one warp
// within one barrier interval (lanes run one after another as fibers, so they
// are paired by (warp, PC, occurrence)). Per request:
// - global memory: sectors = distinct 32-byte segments its lanes touch
//   (4 for 32 coalesced 4-byte loads, 32 when every lane is in its own segment);
// - shared memory (the static __shared__ sections and the dynamic buffer):
//   ways = the largest number of distinct 4-byte words the request touches in
//   one of the 32 banks (bank = word % 32; lanes reading the same word are a
//   broadcast and count once). Accesses wider than 4 bytes are served as the
//   hardware does, in phases of 128 bytes: 8-byte accesses per half-warp
//   (lanes 0-15, 16-31), 16-byte (and wider) accesses per quarter-warp; a
//   request's ways is the worst of its phases (1 is conflict-free).
// Stack (local variables), kernel arguments and the built-in variables
// (threadIdx, ...) are not memory requests and are not counted; nor are
// atomics or memcpy/memset calls (no kernel uses them for data).
// What is counted is what the host compiler emits: a whole-struct copy of a
// float4 or Pack is one 16-byte access, but a vector whose fields are read one
// by one may become 4-byte accesses (nvcc would emit one vector access), and
// global sectors depend on the buffers' alignment (cudaMalloc's is 256 bytes;
// a host allocation's may be 16, which adds sectors).
//
// The counters are reported at exit: a table on stderr, or JSON in the file
// named by FASTCONV_SIMT_ACCESS_JSON. Programs may also read them here.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace simt {
namespace access {

enum class Space : uint8_t { Global, Shared };

struct Counts {
  uint64_t requests = 0;  // warp requests
  uint64_t accesses = 0;  // lane accesses (requests x active lanes)
  uint64_t bytes = 0;     // bytes of the lane accesses (bytes / accesses: the access width)
  uint64_t sectors = 0;   // global: 32-byte sectors over all requests
  uint64_t ways = 0;      // shared: conflict ways summed over requests
  uint64_t max_ways = 0;  // shared: the worst request

  void add(const Counts& o) {
    requests += o.requests;
    accesses += o.accesses;
    bytes += o.bytes;
    sectors += o.sectors;
    ways += o.ways;
    max_ways = max_ways > o.max_ways ? max_ways : o.max_ways;
  }
};

// The counters of one kernel's accesses at one source line, in one memory
// space, loads or stores (the PCs of one line, e.g. an unrolled loop's copies,
// are summed; each PC is still its own request).
struct LineCounters : Counts {
  std::string kernel;  // the kernel's full name, as launches report it
  std::string file;    // source of the access ("?" when it cannot be resolved)
  int line = 0;
  Space space = Space::Global;
  bool store = false;
};

// Every line counted so far, PCs resolved to file:line, sorted by kernel,
// file, line. Empty unless the program is an access build with the check on.
std::vector<LineCounters> lines();
// Forgets the counters (tests measure one kernel at a time).
void reset();
// The report written at exit.
void print_table(std::FILE* out, const std::vector<LineCounters>& lines);
bool write_json(const char* path, const std::vector<LineCounters>& lines);

}  // namespace access
}  // namespace simt
