# Shared by the one-command check scripts (gpu_check.sh, cpu_check.sh), sourced once
# $check (the script's name) and $log (its log file) are set:
#   say MESSAGE...             prints "$check: MESSAGE" and appends it to the log
#   skipped NAME               whether $skip (" name1 name2 ") names the step
#   fail_step NAME WHAT        says "NAME: WHAT" and adds NAME to $failed; returns 1
#   step NAME SECONDS CMD...   runs CMD under a time budget, its output to the log, unless
#                              the step is skipped (then says so); a failure or timeout is
#                              reported and added to $failed, and the step returns CMD's status
say() { echo "$check: $*" | tee -a "$log"; }

skipped() { case "${skip:- }" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

failed=()
fail_step() { say "$1: $2"; failed+=("$1"); return 1; }

step() {
  local name="$1" budget="$2"
  shift 2
  if skipped "$name"; then say "$name: skipped"; return 0; fi
  say "$name: $* (budget ${budget}s)"
  local began=$SECONDS rc=0
  timeout --kill-after=10 "$budget" "$@" >>"$log" 2>&1 || rc=$?
  local took=$((SECONDS - began))
  if [ "$rc" -eq 0 ]; then
    say "$name: ok in ${took}s"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    fail_step "$name" "TIMED OUT after ${took}s"
  else
    fail_step "$name" "FAILED (exit $rc) after ${took}s"
  fi
  return "$rc"
}

# The Python that runs the steps: $PYTHON, else the checkout's .venv, else python3.
check_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
  elif [ -x .venv/bin/python ]; then echo ".venv/bin/python"
  else echo "python3"; fi
}
