// Internal interface of the access counters (csrc/simt/access/access.h): what the
// compiler's entry points (tsan_entry_points.cpp) and the runtime (simt.cpp)
// tell the recorder (counter.cpp), and what the report reads back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "access.h"

namespace simt {
namespace access {

// One load or store of the program; counted only while a CUDA thread runs.
void record(const void* pc, const void* addr, unsigned size, bool store);

// The counters of one (kernel, PC, space, load or store), summed over all
// blocks and launches.
struct PcCounters : Counts {
  const void* kernel = nullptr;
  const char* kernel_name = "";
  const void* pc = nullptr;
  Space space = Space::Global;
  bool store = false;
};
std::vector<PcCounters> pc_counters();
void reset_counters();
// Writes the report when the program exits (once, however often called).
void report_at_exit();

}  // namespace access
}  // namespace simt

// The runtime's notifications, made only when FASTCONV_SIMT_CHECK has
// `access`. simt.cpp declares them weak: a program without this library (every
// build but the access one) has none, and the runtime knows it cannot count.
extern "C" {
// Before a launch, on the launching thread (its stack holds the arguments).
void simt_access_launch(const void* kernel, const char* name);
// On the worker thread, before a block's first thread runs: its size and its
// dynamic shared memory.
void simt_access_block_begin(unsigned threads, const void* dynamic_smem, size_t dynamic_bytes);
// A CUDA thread (linear index in the block) resumes on its fiber stack, or
// returns to the scheduler.
void simt_access_thread_resume(unsigned thread, const void* stack_lo, const void* stack_hi);
void simt_access_thread_yield();
// All threads of the block passed a barrier, or the block finished: the
// requests of the barrier interval are complete.
void simt_access_interval_end();
}
