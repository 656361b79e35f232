// The access counters' report: PCs resolved to source lines after the run
// (addr2line, once per module), summed per line, printed as a table or JSON.
#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "recorder.h"

namespace simt {
namespace access {
namespace {

struct Source {
  std::string file = "?";
  int line = 0;
};

// "/a/b/file.cuh:123 (discriminator 2)" -> {"/a/b/file.cuh", 123}.
Source parse_location(const std::string& text) {
  Source s;
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || text.compare(0, 2, "??") == 0) return s;
  s.file = text.substr(0, colon);
  s.line = std::atoi(text.c_str() + colon + 1);
  return s;
}

// The frame an access belongs to: the innermost one outside the SIMT runtime's
// own header (whose __ldg and shuffles are the kernel's line, not theirs).
Source pick_frame(const std::vector<Source>& frames) {
  for (const Source& f : frames) {
    const size_t n = f.file.size();
    if (f.line > 0 && !(n >= 11 && f.file.compare(n - 11, 11, "simt/simt.h") == 0)) return f;
  }
  return frames.empty() ? Source{} : frames.front();
}

// addr2line -i on module offsets; the looked-up address is pc - 1, inside the
// call to the entry point that recorded the access.
void symbolize_module(const std::string& module, const std::vector<std::pair<const void*, uintptr_t>>& pcs,
                      std::map<const void*, Source>& out) {
  char in_path[] = "/tmp/simt_access_XXXXXX";
  const int fd = mkstemp(in_path);
  if (fd < 0) return;
  close(fd);
  const std::string out_path = std::string(in_path) + ".out";
  {
    std::ofstream in(in_path);
    for (const auto& pc : pcs) in << std::hex << "0x" << pc.second - 1 << "\n";
  }
  const std::string cmd = "addr2line -i -a -e '" + module + "' < '" + in_path + "' > '" + out_path +
                          "' 2>/dev/null";
  if (std::system(cmd.c_str()) == 0) {
    std::ifstream result(out_path);
    std::string text;
    size_t at = 0;
    std::vector<Source> frames;
    bool started = false;
    auto flush = [&] {
      if (started && at <= pcs.size() && at > 0) out[pcs[at - 1].first] = pick_frame(frames);
      frames.clear();
    };
    while (std::getline(result, text)) {
      if (text.compare(0, 2, "0x") == 0) {
        flush();
        started = true;
        ++at;
      } else {
        frames.push_back(parse_location(text));
      }
    }
    flush();
  }
  std::remove(in_path);
  std::remove(out_path.c_str());
}

// This program's file (/proc/self/exe would name addr2line's own).
std::string program_path() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("/proc/self/exe");
}

std::map<const void*, Source> symbolize(const std::vector<PcCounters>& counters) {
  std::map<std::string, std::vector<std::pair<const void*, uintptr_t>>> by_module;
  std::map<const void*, bool> seen;
  for (const PcCounters& c : counters) {
    if (!seen.emplace(c.pc, true).second) continue;
    Dl_info info;
    link_map* map = nullptr;
    if (!dladdr1(c.pc, &info, reinterpret_cast<void**>(&map), RTLD_DL_LINKMAP) || !map) continue;
    // The main program has an empty name in the link map.
    const std::string module = map->l_name && map->l_name[0] ? map->l_name : program_path();
    by_module[module].emplace_back(c.pc, reinterpret_cast<uintptr_t>(c.pc) - map->l_addr);
  }
  std::map<const void*, Source> out;
  for (const auto& [module, pcs] : by_module) symbolize_module(module, pcs, out);
  return out;
}

const char* space_name(Space s) { return s == Space::Global ? "global" : "shared"; }

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string basename_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::vector<LineCounters> lines() {
  const std::vector<PcCounters> counters = pc_counters();
  const std::map<const void*, Source> sources = symbolize(counters);
  using Key = std::tuple<std::string, std::string, int, Space, bool>;
  std::map<Key, LineCounters> by_line;
  for (const PcCounters& c : counters) {
    const auto it = sources.find(c.pc);
    const Source src = it == sources.end() ? Source{} : it->second;
    LineCounters& l = by_line[Key{c.kernel_name, src.file, src.line, c.space, c.store}];
    if (l.requests == 0) {
      l.kernel = c.kernel_name;
      l.file = src.file;
      l.line = src.line;
      l.space = c.space;
      l.store = c.store;
    }
    l.add(c);
  }
  std::vector<LineCounters> out;
  for (auto& entry : by_line) out.push_back(std::move(entry.second));
  return out;
}

void reset() { reset_counters(); }

void print_table(std::FILE* out, const std::vector<LineCounters>& lines) {
  std::fprintf(out,
               "simt access counters: per source line, the access width, warp requests, and per "
               "request global 32-byte sectors (4 for coalesced 4-byte accesses) or shared "
               "bank-conflict ways (1 is conflict-free)\n");
  const std::string* kernel = nullptr;
  for (const LineCounters& l : lines) {
    if (!kernel || *kernel != l.kernel) {
      kernel = &l.kernel;
      std::fprintf(out, "kernel %s\n", l.kernel.c_str());
    }
    const double req = static_cast<double>(l.requests);
    const std::string where = basename_of(l.file) + ":" + std::to_string(l.line);
    const int width = l.accesses ? static_cast<int>(l.bytes / l.accesses) : 0;
    std::fprintf(out, "  %-28s %s %-5s %2d B %10llu requests ", where.c_str(), space_name(l.space),
                 l.store ? "store" : "load", width, static_cast<unsigned long long>(l.requests));
    if (l.space == Space::Global)
      std::fprintf(out, "%7.2f sectors/request\n", l.sectors / req);
    else
      std::fprintf(out, "%7.2f ways/request (worst %llu)\n", l.ways / req,
                   static_cast<unsigned long long>(l.max_ways));
  }
}

bool write_json(const char* path, const std::vector<LineCounters>& lines) {
  std::ofstream out(path);
  out << "{\"lines\": [";
  for (size_t i = 0; i < lines.size(); ++i) {
    const LineCounters& l = lines[i];
    out << (i ? ",\n  " : "\n  ") << "{\"kernel\": " << json_string(l.kernel)
        << ", \"file\": " << json_string(l.file) << ", \"line\": " << l.line
        << ", \"space\": \"" << space_name(l.space) << "\", \"op\": \""
        << (l.store ? "store" : "load") << "\", \"requests\": " << l.requests
        << ", \"accesses\": " << l.accesses << ", \"bytes\": " << l.bytes
        << ", \"sectors\": " << l.sectors
        << ", \"ways\": " << l.ways << ", \"max_ways\": " << l.max_ways << "}";
  }
  out << "\n]}\n";
  return static_cast<bool>(out);
}

}  // namespace access
}  // namespace simt

namespace simt {
namespace access {
namespace {
// JSON to FASTCONV_SIMT_ACCESS_JSON when set, a table on stderr otherwise.
void report() {
  const std::vector<LineCounters> counted = lines();
  if (const char* path = std::getenv("FASTCONV_SIMT_ACCESS_JSON")) {
    if (!write_json(path, counted))
      std::fprintf(stderr, "simt: cannot write the access counters to %s\n", path);
    return;
  }
  print_table(stderr, counted);
}
}  // namespace

void report_at_exit() {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(report); });
}

}  // namespace access
}  // namespace simt
