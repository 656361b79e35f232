#include "streaming_stores.h"

#include <algorithm>
#include <string>

#include "../common/read_number_file.h"

namespace fastconv {
namespace cpu {
namespace {

// The largest cache of CPU 0 as Linux describes it in sysfs (the C library's
// sysconf reports all of a socket's L3 slices on some AMD CPUs, 12 times what
// one core can use); 32 MiB, a common L3 of one server CPU die, where sysfs
// says nothing.
int64_t last_level_cache_bytes() {
  static const int64_t bytes = [] {
    int64_t largest = 0;
    for (int index = 0; index < 8; ++index) {
      const std::string path = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size";
      unsigned long long kib = 0;
      char unit = 0;
      if (read_number_file(path.c_str(), kib, unit) && unit == 'K') {
        largest = std::max(largest, static_cast<int64_t>(kib) << 10);
      }
    }
    return largest > 0 ? largest : int64_t{32} << 20;
  }();
  return bytes;
}

}  // namespace

int64_t streaming_threshold_bytes() { return last_level_cache_bytes(); }

bool stream_output(int64_t bytes_touched, const void* output) {
#if defined(FASTCONV_CPU_X86)
  return bytes_touched > last_level_cache_bytes() && reinterpret_cast<uintptr_t>(output) % 64 == 0;
#else
  (void)bytes_touched;
  (void)output;
  return false;
#endif
}

void end_streaming_stores() {
#if defined(FASTCONV_CPU_X86)
  _mm_sfence();
#endif
}

}  // namespace cpu
}  // namespace fastconv
