"""scripts/cpu_check.sh, the one command for measuring the CPU kernels on a machine kind: its
runs replace the committed results of that kind after comparing with them, a quick run leaves
them alone, a failing run fails the script, and each run's targets are printed. The build and
test steps are skipped here (the suite is what runs them), and the benchmark runs are cut to one
tiny layer (the last --only, --net and --batch on the runner's command line win, so the
batch-1 run's own selection is replaced too)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cpu_check.sh"
TINY = "--only relu --net overhead --batch 1 --repeats 1 --min-repeats 1 --warmup 1 --threads 1"


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), "--skip", "build", "--skip", "tests", "--bench-args", TINY, *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_a_quick_run_leaves_the_results_alone_and_a_full_one_compares_then_replaces_them(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    results.mkdir()
    (results / "cpu-earlier.json").write_text("{}")
    unchanged = digest(results)
    quick = run_script("--quick", "--out", str(out), "--results", str(results), "--skip", "batch1")
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert digest(results) == unchanged
    assert "quick run, bench/results left as they are" in quick.stdout
    assert (out / "bench-targets.md").read_text().startswith("**Targets**")
    assert "per-call overhead: relu on 1,000 elements" in quick.stdout
    assert "batch1: skipped" in (out / "cpu_check.log").read_text()

    # With results of this machine kind in place (the quick run's, as if committed), a full run
    # is compared with them, then replaces them.
    [staged] = (out / "bench").glob("cpu-*.json")
    committed = results / "batch1" / staged.name
    committed.parent.mkdir()
    committed.write_text(staged.read_text())
    full = run_script("--out", str(out), "--results", str(results), "--skip", "bench")
    assert full.returncode == 0, full.stdout + full.stderr
    compare = (out / "batch1-compare.md").read_text()
    assert "relu" in compare and "1000" in compare
    assert committed.read_text() != staged.read_text()  # the full run's
    stem = staged.stem
    assert sorted(p.name for p in committed.parent.iterdir()) == [f"{stem}.{ext}" for ext in ("json", "md", "png")]
    assert "**Targets**" in (committed.parent / f"{stem}.md").read_text()
    assert "all steps passed" in (out / "cpu_check.log").read_text()


def test_a_failing_run_fails_the_script_and_leaves_the_results_alone(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    results.mkdir()
    (results / "cpu-earlier.json").write_text("{}")
    unchanged = digest(results)
    # The last --bench-args wins: the runner refuses an unknown op.
    run = run_script("--skip", "batch1", "--bench-args", "--only no-such-op", "--out", str(out), "--results",
                     str(results))
    assert run.returncode == 1
    assert "bench: FAILED" in run.stdout and "FAILED steps: bench" in run.stdout
    assert digest(results) == unchanged


def test_unknown_arguments_are_refused_with_the_usage():
    run = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "unknown argument '--frobnicate'" in run.stderr and "usage: scripts/cpu_check.sh" in run.stderr
