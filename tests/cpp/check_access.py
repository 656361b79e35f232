"""Runs an access build of a program (FASTCONV_SIMT_CHECK=access) and checks
its counters: lists each kernel's worst shared-memory and global-memory lines,
and fails when a shared-memory line has requests with more bank-conflict ways
than allowed, unless an --allow entry names that kernel and line.

    check_access.py --max-shared-ways 2 [--allow FILE] -- PROGRAM [ARGS...]

Each line of the allow file (# comments) is 'KERNEL|SOURCE TEXT': a kernel's
short name (every dtype and tile of it) and the text of its source line
(stripped), so that it survives edits elsewhere in the file. An entry that
matches no offending line fails too: remove it once the kernel is fixed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def brief(kernel):
    """'fastconv::simt::k<float, X>' -> 'k'."""
    name = kernel.split("<", 1)[0]
    return name.rsplit("::", 1)[-1]


def source_text(path, line, cache={}):
    if path not in cache:
        try:
            with open(path, encoding="utf-8") as f:
                cache[path] = f.read().splitlines()
        except OSError:
            cache[path] = []
    lines = cache[path]
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def where(entry):
    return f"{os.path.basename(entry['file'])}:{entry['line']}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-shared-ways", type=int, required=True)
    parser.add_argument("--allow", help="file of 'KERNEL|SOURCE TEXT' lines")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    allowed = set()
    if args.allow:
        with open(args.allow, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    kernel, text = line.split("|", 1)
                    allowed.add((kernel.strip(), text.strip()))

    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "access.json")
        env = dict(os.environ, FASTCONV_SIMT_CHECK="access", FASTCONV_SIMT_ACCESS_JSON=report)
        run = subprocess.run(command, env=env)
        if run.returncode != 0:
            print(f"{' '.join(command)} exited {run.returncode}")
            return 1
        with open(report, encoding="utf-8") as f:
            lines = json.load(f)["lines"]

    kernels = {}
    for entry in lines:
        kernels.setdefault(entry["kernel"], []).append(entry)
    print(f"{len(kernels)} kernels, {len(lines)} lines counted; per kernel its worst lines "
          "(shared: worst request's ways, mean ways; global: sectors per request)")
    violations, used = [], set()
    for kernel in sorted(kernels):
        entries = kernels[kernel]
        shared = [e for e in entries if e["space"] == "shared"]
        glob = [e for e in entries if e["space"] == "global"]
        print(kernel)
        if shared:
            worst = max(shared, key=lambda e: (e["max_ways"], e["ways"] / e["requests"]))
            print(f"  shared {worst['op']:5} {where(worst):28} worst {worst['max_ways']:2}-way, "
                  f"mean {worst['ways'] / worst['requests']:.2f} over {worst['requests']} requests")
        if glob:
            worst = max(glob, key=lambda e: e["sectors"] / e["requests"])
            print(f"  global {worst['op']:5} {where(worst):28} {worst['sectors'] / worst['requests']:.2f} "
                  f"sectors/request over {worst['requests']} requests of {worst['bytes'] // worst['accesses']}-byte accesses")
        for e in shared:
            if e["max_ways"] <= args.max_shared_ways:
                continue
            key = (brief(kernel), source_text(e["file"], e["line"]))
            if key in allowed:
                used.add(key)
                print(f"  allowed: {e['op']} at {where(e)}: {e['max_ways']}-way ({key[1]})")
            else:
                violations.append(f"{kernel}: shared {e['op']} at {where(e)}: {e['max_ways']}-way "
                                  f"bank conflicts (limit {args.max_shared_ways}): {key[1]}")
    stale = sorted(allowed - used)
    for v in violations:
        print("FAIL " + v)
    for kernel, text in stale:
        print(f"FAIL allowed '{kernel}|{text}' has no line over {args.max_shared_ways}-way any more: "
              "remove it from the allow list")
    return 1 if violations or stale else 0


if __name__ == "__main__":
    sys.exit(main())
