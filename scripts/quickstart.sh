#!/usr/bin/env bash
# Sets up fastconv from nothing (a virtual environment, the pinned packages,
# the compiled extension) and then runs one job:
#   scripts/quickstart.sh train [trainer args...]   the cats-vs-dogs trainer (demo data by default)
#   scripts/quickstart.sh test  [pytest args...]    the test suite
# Re-running skips what is already in place: the packages when
# requirements.txt is unchanged, the build when no source changed since the
# last one (and then ninja recompiles only the units that changed).
# VENV=<dir> picks the environment, MAX_JOBS the parallel compile jobs.
set -euo pipefail
cd "$(dirname "$0")/.."

job="${1:-}"
shift || true
case "$job" in
  train | test) ;;
  *) echo "usage: $0 train|test [args...]" >&2; exit 2 ;;
esac
venv="${VENV:-.venv}"

if [ ! -x "$venv/bin/python" ]; then
  echo "fastconv: creating the virtual environment $venv"
  python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

packages_stamp="$venv/.fastconv-requirements"
if ! cmp -s requirements.txt "$packages_stamp"; then
  echo "fastconv: installing the pinned packages of requirements.txt (torch is the large one)"
  python -m pip install -qq --upgrade pip
  python -m pip install -qq -r requirements.txt
  cp requirements.txt "$packages_stamp"
fi

# The build: pip's editable install, compiling with ninja in build/ (which
# persists, so only changed units recompile). Skipped when nothing that goes
# into it changed since the last successful build.
build_stamp="$venv/.fastconv-build"
# The stamp holds the build switches it was made with: changing one rebuilds too.
switches="FASTCONV_CUDA=${FASTCONV_CUDA:-} FASTCONV_DEBUG=${FASTCONV_DEBUG:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} CUDA_HOME=${CUDA_HOME:-}"
if [ ! -e "$build_stamp" ] || ! compgen -G "fastconv/_C*.so" >/dev/null ||
   [ "$(cat "$build_stamp")" != "$switches" ] ||
   [ -n "$(find csrc setup.py pyproject.toml -newer "$build_stamp" -print -quit)" ]; then
  if compgen -G "build/temp-*/csrc" >/dev/null; then
    echo "fastconv: rebuilding the extension (only the units that changed)"
  else
    echo "fastconv: building the extension (C++ kernels, SIMT runtime, CUDA kernels where nvcc matches" \
         "torch's CUDA): 3 to 6 minutes on 2 cores, once; later runs rebuild only what changed"
  fi
  # Stamped with the time the build starts, so a file edited while it runs counts as newer.
  echo "$switches" >"$build_stamp.new"
  MAX_JOBS="${MAX_JOBS:-2}" python -m pip install -qq --no-build-isolation --no-deps -e .
  mv "$build_stamp.new" "$build_stamp"
  python -c "import fastconv; print('fastconv: built;', 'with' if fastconv.cuda_compiled() else 'WITHOUT',
             'the CUDA kernels (python -m fastconv.info for details)')"
fi

case "$job" in
  train) exec python -m fastconv.train "$@" ;;
  test) exec python -m pytest -q "$@" ;;
esac
