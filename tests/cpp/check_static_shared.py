"""Checks that every static shared array of the CUDA kernels in a sanitizer
build lies in one of the TLS sections the SIMT runtime refills and reports as
shared memory (simt.h's __shared__): GCC drops a section attribute it cannot
apply without a word, and the kernels' arrays then pass for global memory.

    check_static_shared.py PROGRAM...

A kernel's __shared__ variable is a function-local thread_local (symbol
_ZZ...) of a function in namespace fastconv. Prints the count per program.
"""

import subprocess
import sys

SECTIONS = {"simt_shared", "simt_shared_template"}


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout


def section_names(program):
    """Section index -> name, from 'readelf -S' lines such as '  [23] simt_shared PROGBITS ...'."""
    names = {}
    for line in readelf("-S", program).splitlines():
        line = line.strip()
        if line.startswith("[") and "]" in line:
            index, rest = line[1:].split("]", 1)
            fields = rest.split()
            if index.strip().isdigit() and fields:
                names[index.strip()] = fields[0]
    return names


def kernel_statics(program):
    """(section index, mangled name) of the thread-local statics of functions in namespace fastconv."""
    found = set()  # a program linked with -rdynamic lists its symbols twice (.dynsym, .symtab)
    for line in readelf("-s", program).splitlines():
        fields = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(fields) >= 8 and fields[3] == "TLS" and fields[7].startswith("_ZZN8fastconv"):
            found.add((fields[6], fields[7]))
    return sorted(found)


def main(programs):
    failed = False
    for program in programs:
        names = section_names(program)
        statics = kernel_statics(program)
        outside = [symbol for index, symbol in statics if names.get(index) not in SECTIONS]
        print(f"{program}: {len(statics)} static shared variables, {len(outside)} outside {sorted(SECTIONS)}")
        if not statics:
            print(f"FAIL {program}: no static shared variable of a kernel found")
            failed = True
        if outside:
            demangled = subprocess.run(["c++filt"], input="\n".join(outside), capture_output=True, text=True).stdout
            for name in demangled.splitlines():
                print(f"FAIL {program}: {name} is not in a static shared memory section")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
