// The TLS sections of simt.h's __shared__ variables (static_shared.h): the
// linker's __start_/__stop_ symbols give a section's place in the module's TLS
// image, and each OS thread's copy is at the same offset in its TLS block.
#include "static_shared.h"

#include <link.h>

#include <cstdint>

extern "C" {
extern char __start_simt_shared[] __attribute__((weak, visibility("hidden")));
extern char __stop_simt_shared[] __attribute__((weak, visibility("hidden")));
extern char __start_simt_shared_template[] __attribute__((weak, visibility("hidden")));
extern char __stop_simt_shared_template[] __attribute__((weak, visibility("hidden")));
// ld.so: this thread's address of a TLS offset in a module.
struct SimtTlsIndex {
  unsigned long module, offset;
};
void* __tls_get_addr(SimtTlsIndex* index);
}

namespace simt {
namespace detail {
namespace {

struct Section {
  SimtTlsIndex index{0, 0};
  size_t bytes = 0;
};

// The module and offset of the TLS image bytes [begin, end); none when the
// section is absent (weak symbols left null) or empty.
Section locate(const char* begin, const char* end) {
  Section s;
  if (!begin || end <= begin) return s;
  struct Probe {
    uintptr_t start;
    Section* out;
  } probe{reinterpret_cast<uintptr_t>(begin), &s};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* p = static_cast<Probe*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_TLS) continue;
          const uintptr_t image = info->dlpi_addr + ph.p_vaddr;
          if (p->start < image || p->start >= image + ph.p_memsz) continue;
          p->out->index.module = info->dlpi_tls_modid;
          p->out->index.offset = p->start - image;
          return 1;
        }
        return 0;
      },
      &probe);
  if (s.index.module) s.bytes = static_cast<size_t>(end - begin);
  return s;
}

}  // namespace

StaticShared this_thread_static_shared() {
  static const Section sections[2] = {locate(__start_simt_shared, __stop_simt_shared),
                                      locate(__start_simt_shared_template,
                                             __stop_simt_shared_template)};
  StaticShared out;
  for (int i = 0; i < 2; ++i) {
    if (!sections[i].bytes) continue;
    out.sections[i].begin = static_cast<unsigned char*>(
        __tls_get_addr(const_cast<SimtTlsIndex*>(&sections[i].index)));
    out.sections[i].bytes = sections[i].bytes;
  }
  return out;
}

}  // namespace detail
}  // namespace simt
