#!/usr/bin/env bash
# The one command for measuring the CPU kernels on a machine kind, run on that machine
# while it is otherwise idle (a build or a test run beside a benchmark skews it), from a
# checkout with its .venv (scripts/quickstart.sh sets one up) or PYTHON=... naming a Python
# that has the pinned packages:
#   1. build the extension's CPU kernels
#   2. the tests of the vector paths (AVX2, AVX-512) against the portable one, bit for bit,
#      where this CPU has them
#   3. the full benchmark run against torch (oneDNN, ATen): every op at batch 1, 16 and 32
#   4. the convolutions of convnet4 and VGG16 at batch 1 once more, alone (bench/results/batch1)
#   5. the CPU targets (bench/cpu_targets.py) of the new results, and the change from the
#      committed results of the same machine kind (python -m bench compare): before / after
# Steps 3 and 4 write bench/results/<device>-<machine>.{json,png,md} (and batch1/; --results
# names another folder), replacing that machine kind's committed files once step 5 has read
# them; commit them. The log and step 5's tables go to --out DIR (default ./cpu_check).
# --quick runs the quick subset in steps 3 and 4 instead and leaves bench/results alone (to
# try the script); --bench-args "..." adds arguments to both runs. A failing step does not
# stop the next; the exit status is non-zero when one failed.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<EOF
usage: scripts/cpu_check.sh [--out DIR] [--results DIR] [--skip STEP]... [--quick] [--bench-args "ARGS"]
  --out DIR          where cpu_check.log and the targets and comparisons go (default: ./cpu_check)
  --results DIR      the committed results the runs replace (default: bench/results)
  --skip STEP        leave out a step: build, tests, bench, batch1
  --quick            the quick subset, written under DIR only (bench/results untouched)
  --bench-args ARGS  more arguments for both benchmark runs (python -m bench --help)
EOF
}

out="$PWD/cpu_check"
results="bench/results"
skip=" "
quick=""
bench_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; out="$2"; shift 2 ;;
    --results) [ $# -ge 2 ] || { usage >&2; exit 2; }; results="$2"; shift 2 ;;
    --skip) [ $# -ge 2 ] || { usage >&2; exit 2; }; skip+="$2 "; shift 2 ;;
    --quick) quick="--quick"; shift ;;
    --bench-args) [ $# -ge 2 ] || { usage >&2; exit 2; }; bench_args="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
mkdir -p "$out" || { echo "cpu_check: cannot create $out" >&2; exit 2; }
out="$(cd "$out" && pwd)"
log="$out/cpu_check.log"
: >"$log"
check=cpu_check
# shellcheck source=scripts/check_steps.sh
. scripts/check_steps.sh || exit 2

python="$(check_python)"
isa="$(grep -o -m1 -w avx512f /proc/cpuinfo 2>/dev/null || true)"
say "CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs), $(nproc) cores," \
    "$([ -n "$isa" ] && echo AVX-512 || echo "no AVX-512"); python: $python; results in $out"

# 1. The CPU kernels only: the CUDA kernels take minutes to compile and are not measured here.
if ! step build 1200 env FASTCONV_CUDA=0 MAX_JOBS="$(nproc)" "$python" setup.py -q build_ext --inplace; then
  say "the build failed: nothing else can run"; exit 1
fi

# 2. Each vector path against the portable one (only the paths this CPU has; the log's skip lines
#    name the AVX-512 checks where it has none).
step tests 900 "$python" -m pytest -q -rs -p no:cacheprovider tests/test_cpu_isa_paths.py tests/test_conv2d.py \
  -k "isa or avx512 or avx2 or baseline"

# bench_run STEP SECONDS RESULTS_DIR [python -m bench arguments]: one run, written to a staging
# folder under $out; unless --quick, the committed results it replaces are compared with it
# first and then replaced (JSON, chart and the .md summary). Any part that fails fails the step.
bench_run() {
  local name="$1" budget="$2" results="$3"
  shift 3
  if skipped "$name"; then say "$name: skipped"; return 0; fi
  local staged="$out/$name"
  rm -rf "$staged"
  # shellcheck disable=SC2086  # bench_args is a list of words
  step "$name" "$budget" "$python" -m bench --device cpu $quick "$@" $bench_args --no-progress --out "$staged" ||
    return 1
  local json
  json="$(ls "$staged"/cpu-*.json 2>/dev/null | head -n1)"
  [ -n "$json" ] || { fail_step "$name" "FAILED: no results file in $staged"; return; }
  local stem
  stem="$(basename "$json" .json)"
  "$python" -m bench report "$json" --targets >"$out/$name-targets.md" 2>>"$log" ||
    { fail_step "$name" "FAILED: report --targets"; return; }
  if [ -n "$quick" ]; then
    say "$name: quick run, bench/results left as they are"
  else
    if [ -f "$results/$stem.json" ]; then
      "$python" -m bench compare "$results/$stem.json" "$json" >"$out/$name-compare.md" 2>>"$log" ||
        { fail_step "$name" "FAILED: compare with $results/$stem.json"; return; }
    else
      say "$name: no committed $results/$stem.json to compare with (a new machine kind or thread count)"
    fi
    # The run's command names the staging folder; the committed file names the folder it lands in.
    mkdir -p "$results" &&
      "$python" -c 'import sys; src, dst, old, new = sys.argv[1:]; open(dst, "w").write(open(src).read().replace(old, new))' \
        "$json" "$results/$stem.json" "$staged" "$results" &&
      cp "$staged/$stem.png" "$results/" &&
      "$python" -m bench report "$results/$stem.json" --summary >"$staged/$stem.md" 2>>"$log" &&
      mv "$staged/$stem.md" "$results/$stem.md" || { fail_step "$name" "FAILED: writing $results/$stem.*"; return; }
    say "$name: wrote $results/$stem.{json,png,md}"
  fi
  tee -a "$log" <"$out/$name-targets.md"
}

# 3. Every op at batch 1, 16 and 32 (11 minutes on a 2-core machine).
bench_run bench 2400 "$results"
# 4. The batch-1 convolutions alone, where a call's fixed cost shows.
bench_run batch1 1200 "$results/batch1" --only conv2d --batch 1 --net convnet4 vgg16

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED steps: ${failed[*]} (details in $log)"
  exit 1
fi
say "all steps passed; results in $out${quick:+ (quick: bench/results untouched)}"
