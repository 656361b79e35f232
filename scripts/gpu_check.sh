#!/usr/bin/env bash
# The one command to run the day a GPU is lent, on the GPU machine, from a fresh
# copy of the repository (with its .venv, or PYTHON=... naming a Python that has
# the pinned packages):
#   1. build the extension with its CUDA kernels for this GPU's arch only
#   2. the test suite on the cuda backend
#   3. compute-sanitizer memcheck, racecheck and synccheck over every kernel
#      (scripts/sanitizer_ops.py: each op once per kernel variant, tiny tensors)
#   4. the benchmark against cuDNN at batch 32, every seed layer: conv2d in float32
#      (ours and cuDNN both with TF32 off, then both with it on), float16 and
#      bfloat16; max pooling, ReLU and dropout against the probed DRAM bandwidth;
#      the convnet4 training step
#   5. the GPU time of every kernel in one warm training pass of each seed convolution,
#      ours and cuDNN's, in float32, TF32 and float16 (scripts/kernel_times.py)
#   6. Nsight Compute over our kernels in one warm training pass of VGG16's
#      512->512 @28 at batch 32, in float32, TF32 and float16 (scripts/profile_conv.py):
#      speed of light, occupancy, warp stalls, memory traffic, per kernel
# (The GPU performance model, python -m bench.cuda_model, is static: it runs the same
# on any machine and is not a step here.)
# Everything goes under one folder: --out DIR, else ./gpu_check; the log is
# gpu_check.log there. Where OUT is set and --out is not given (a machine that
# returns the files under $OUT, a few of them), the results are written to a
# temporary folder and land in $OUT/gpu_check as two files: the log and
# gpu_check.tar.gz holding everything. Each step has a time budget (580 s in all;
# on an H200 the steps took 41, 49, 9 + 95 + 10 and 72 s). A failing step does
# not stop the next. Exits non-zero when a step fails or times out.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<EOF
usage: scripts/gpu_check.sh [--out DIR] [--skip STEP]...
  --out DIR    where results and gpu_check.log go (default: ./gpu_check; with OUT set, a
               temporary folder packed into \$OUT/gpu_check/gpu_check.tar.gz)
  --skip STEP  leave out a step: build, tests, sanitizer, bench, kernels, profile
EOF
}

out=""
skip=" "
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; out="$2"; shift 2 ;;
    --skip) [ $# -ge 2 ] || { usage >&2; exit 2; }; skip+="$2 "; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
pack=""
if [ -z "$out" ]; then
  if [ -n "${OUT:-}" ]; then
    pack="$OUT/gpu_check"
    out="${TMPDIR:-/tmp}/gpu_check.$$"
  else
    out="$PWD/gpu_check"
  fi
fi
mkdir -p "$out" || { echo "gpu_check: cannot create $out" >&2; exit 2; }
out="$(cd "$out" && pwd)"
log="$out/gpu_check.log"
: >"$log"
finish() {
  [ -n "$pack" ] || return 0
  mkdir -p "$pack" && cp "$log" "$pack/" && tar czf "$pack/gpu_check.tar.gz" -C "$out" .
}
trap finish EXIT
check=gpu_check
# shellcheck source=scripts/check_steps.sh
. scripts/check_steps.sh || exit 2

# ---------------------------------------------------------------- the GPU, first
if ! command -v nvidia-smi >/dev/null 2>&1; then
  say "FAILED: no NVIDIA GPU here (nvidia-smi not found). Run this on the GPU machine."
  exit 3
fi
if ! gpu="$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>>"$log" | head -n1)" || [ -z "$gpu" ]; then
  say "FAILED: nvidia-smi finds no usable GPU (see $log)."
  exit 3
fi
cc="$(echo "${gpu##*,}" | tr -d ' ')"
say "GPU: ${gpu%,*} (compute capability $cc); results in $out"
nvidia-smi >>"$log" 2>&1

python="$(check_python)"
say "python: $python ($("$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>&1))"

# The packages the steps import beyond torch (requirements.txt); a machine without a network
# can take them as wheels. Missing ones are named here; the steps that need them fail alone.
missing="$("$python" - <<'PY' 2>&1
import importlib.util
needed = ["numpy", "pytest", "hypothesis", "jsonschema", "tqdm", "matplotlib", "PIL", "torchvision", "captum",
          "setuptools", "ninja"]
print(" ".join(name for name in needed if importlib.util.find_spec(name) is None))
PY
)"
if [ -n "$missing" ]; then say "missing Python packages: $missing (pip install -r requirements.txt)"; fi

# 1. This GPU's arch only: a build of minutes instead of five archs.
if ! step build 80 env TORCH_CUDA_ARCH_LIST="$cc" MAX_JOBS="$(nproc)" "$python" setup.py -q build_ext --inplace; then
  say "the build failed: nothing else can run"; exit 1
fi
ldd fastconv/_C*.so >>"$log" 2>&1
if ! "$python" -X faulthandler -c 'import fastconv, sys; sys.exit(0 if fastconv.cuda_compiled() else 1)' >>"$log" 2>&1; then
  say "FAILED: the extension was built without its CUDA kernels (nvcc missing or not matching torch's CUDA?)"
  exit 1
fi
if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$log" 2>&1; then
  say "FAILED: torch finds no usable CUDA device (a CPU-only torch, or a driver it cannot use?)"
  exit 1
fi

# 2. The tests that run on the cuda backend (the CPU and SIMT ones ran in CI, and so did the
#    static checks of the CUDA sources: the model's, the division scan's, this script's).
#    A module that cannot be imported (a package missing on the GPU machine) fails alone.
step tests 70 "$python" -m pytest -q -rfE --tb=short --durations=10 --continue-on-collection-errors \
  -p no:cacheprovider -k "cuda and not simt and not test_cuda_model and not test_kernel_divisions and not test_gpu_check" \
  tests --junitxml="$out/pytest-cuda.xml"

# 3. Every kernel variant under each of compute-sanitizer's tools.
#    Only our kernels are instrumented (kns: kernel-name substring), so torch's own
#    kernels (random inputs, the reference results) run at full speed.
sanitizer="$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")"
if [ ! -x "$sanitizer" ]; then
  say "sanitizer: FAILED: compute-sanitizer not found (on PATH or in \$CUDA_HOME/bin)"; failed+=(sanitizer)
else
  sanitize() {  # sanitize TOOL SECONDS LOG [sanitizer_ops.py arguments]
    step sanitizer "$2" "$sanitizer" --tool "$1" --kernel-name kns=fastconv --error-exitcode 1 \
      --log-file "$out/$3" "$python" scripts/sanitizer_ops.py --backend cuda "${@:4}"
  }
  sanitize memcheck 30 sanitizer-memcheck.txt  # 9 s on an H200
  sanitize racecheck 120 sanitizer-racecheck.txt  # it tracks every shared-memory access: 95 s on an H200
  sanitize synccheck 30 sanitizer-synccheck.txt  # 10 s
  # float32 and float64 gather their im2col columns in the GEMM; unfolded, their im2col kernels
  # run too (elementwise: no shared memory for racecheck to watch).
  sanitize memcheck 20 sanitizer-memcheck-unfolded.txt --unfold --precision float32 float64
fi

# 4. Against cuDNN (float32 convolutions with TF32 off and on, both sides alike); the results
#    file is cuda-<gpu>.json beside the log: commit it under bench/results/.
step bench 100 "$python" -m bench --device cuda --batch 32 --net convnet4 convnet3 vgg16 \
  --only conv2d max_pool2d relu dropout model --dtype float32 float16 bfloat16 \
  --repeats 5 --budget 0.3 --direct-max-gflop 4 --time-limit 75 --no-progress --out "$out"

# 5. Where each seed convolution's training pass spends its time, kernel by kernel, beside
#    cuDNN's kernels: kernel-times.{json,md} (torch.profiler). The convnets' layers, whose
#    speed targets are open; VGG16's 13 layers in three maths would not fit the budget (run
#    them by hand: --net vgg16).
step kernels 40 "$python" scripts/kernel_times.py --net convnet4 convnet3 --out "$out"

# 6. Where the time of one layer's training pass goes, kernel by kernel: why the tensor-core
#    GEMMs (TF32, float16) run no faster than the CUDA-core one. Only the marked pass is
#    profiled (--profile-from-start off), only our kernels.
ncu="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n1)"
if [ -z "$ncu" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/ncu" ]; then ncu="${CUDA_HOME:-/usr/local/cuda}/bin/ncu"; fi
if [ -z "$ncu" ]; then
  say "profile: FAILED: Nsight Compute (ncu) not found"; failed+=(profile)
else
  step profile 90 "$ncu" --profile-from-start off --kernel-name-base demangled --kernel-name regex:fastconv \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --log-file "$out/ncu-vgg16-512.txt" \
    "$python" scripts/profile_conv.py --math float32 tf32 float16
fi

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED steps: ${failed[*]} (details in $log)"
  exit 1
fi
say "all steps passed; results in $out"
