// Reading the number a small system file starts with (sysfs cache sizes,
// cgroup memory limits). Host only, torch-free.
//
// C stdio rather than iostreams: an extension built by the system's GCC and
// loaded beside a torch wheel built by another can resolve the iostream
// locale facets inconsistently, and extracting a number through std::ifstream
// then crashes inside the extension (seen with torch 2.11 and GCC 13).
#pragma once

#include <cstdio>

namespace fastconv {

// The unsigned number at the start of the file at `path` and the character
// right after it ('\0' at the end of the file). False where the file cannot
// be read or does not start with a number (cgroup's "max").
inline bool read_number_file(const char* path, unsigned long long& value, char& next) {
  std::FILE* file = std::fopen(path, "r");
  if (file == nullptr) return false;
  next = '\0';
  const int read = std::fscanf(file, "%llu%c", &value, &next);
  std::fclose(file);
  return read >= 1;
}

}  // namespace fastconv
