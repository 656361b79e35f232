// A test program made of named cases: CHECK counts failures, run_named_cases
// runs one case (its name the first argument), every default case (no
// argument) or prints the names (--list). Exit status 0 when every check held.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

inline int g_failures = 0;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                                 \
    }                                                                               \
  } while (0)

using NamedCases = std::vector<std::pair<std::string, std::function<void()>>>;

// `by_default(name)` says whether a run without arguments includes the case
// (cases meant to abort are run only by name).
inline int run_named_cases(int argc, char** argv, const NamedCases& cases,
                           const std::function<bool(const std::string&)>& by_default = nullptr) {
  const std::string only = argc > 1 ? argv[1] : "";
  if (only == "--list") {
    for (const auto& t : cases) std::printf("%s\n", t.first.c_str());
    return 0;
  }
  int ran = 0;
  for (const auto& t : cases) {
    if (only.empty() ? (by_default && !by_default(t.first)) : only != t.first) continue;
    const int before = g_failures;
    t.second();
    std::printf("%s %s\n", g_failures == before ? "PASS" : "FAIL", t.first.c_str());
    ++ran;
  }
  if (ran == 0) {
    std::fprintf(stderr, "no test named '%s'\n", only.c_str());
    return 2;
  }
  return g_failures == 0 ? 0 : 1;
}
