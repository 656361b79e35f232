#!/usr/bin/env bash
# Sets up fastconv from nothing (a virtual environment, the pinned packages,
# the compiled extension) and then runs one job:
#   scripts/quickstart.sh train [trainer args...]   the cats-vs-dogs trainer (demo data by default)
#   scripts/quickstart.sh test  [pytest args...]    the test suite
# Re-running skips what is already in place. VENV=<dir> picks the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

job="${1:-}"
shift || true
venv="${VENV:-.venv}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

stamp="$venv/.fastconv-requirements"
if ! cmp -s requirements.txt "$stamp"; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -r requirements.txt
  cp requirements.txt "$stamp"
fi
# Builds only what changed (ninja); MAX_JOBS=2 keeps a 2-core machine responsive.
MAX_JOBS="${MAX_JOBS:-2}" python -m pip install --quiet --no-build-isolation --no-deps -e .

case "$job" in
  train) exec python -m fastconv.train "$@" ;;
  test) exec python -m pytest -q "$@" ;;
  *) echo "usage: $0 train|test [args...]" >&2; exit 2 ;;
esac
