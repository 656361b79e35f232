"""The CPU speed targets (bench/cpu_targets.py): which rows each covers, the direction of each
bound, that a target without rows is never reported as met, and that a full run of the runner
measures every target."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from bench import cpu_targets, report, schema
from bench.__main__ import main
from bench.cpu_targets import TARGETS, Target, check

ROOT = Path(__file__).resolve().parents[1]
FULL_RUNS = sorted((ROOT / "bench" / "results").glob("cpu-*.json"))


def row(op: str = "conv2d", net: str = "convnet4", batch: int = 16, pass_: str = "fwd+bwd", ratio: float = 0.5,
        percent: float = 90.0, auto=True, layer: str = "layer") -> Dict:
    return {"op": op, "net": net, "layer": layer, "batch": batch, "pass": pass_, "ratio_to_torch": ratio,
            "percent_of_peak": percent, "auto": auto if op == "conv2d" else None}


def target(name: str) -> Target:
    return next(t for t in TARGETS if t.name == name)


CONV = "convnet4 convolutions, fwd+bwd"
RELU_BANDWIDTH = "convnet4 ReLU, fwd and bwd: bandwidth"


def test_a_ratio_bound_is_an_upper_bound_and_a_bandwidth_bound_a_lower_one():
    conv, relu = target(CONV), target(RELU_BANDWIDTH)
    assert conv.keeps(row(ratio=conv.bound)) and not conv.keeps(row(ratio=conv.bound + 0.01))
    assert relu.keeps(row("relu", pass_="fwd", percent=relu.bound))
    assert not relu.keeps(row("relu", pass_="fwd", percent=relu.bound - 1))
    assert not relu.keeps(row("relu", pass_="fwd", percent=None))  # a row without the figure misses


def test_rows_are_covered_by_op_net_batch_pass_and_the_auto_variant():
    conv = target(CONV)
    assert conv.covers(row())
    assert conv.covers(row(batch=32))
    assert not conv.covers(row(batch=1))         # batch 1 has a target of its own
    assert not conv.covers(row(net="vgg16"))
    assert not conv.covers(row(pass_="fwd"))
    assert not conv.covers(row(auto=False))      # a variant auto does not run
    assert not conv.covers(row(auto=None))       # a conv2d row without the flag is not auto's
    relu = target(RELU_BANDWIDTH)
    assert relu.covers(row("relu", pass_="fwd")) and relu.covers(row("relu", pass_="bwd"))
    assert not relu.covers(row("relu", pass_="fwd+bwd"))


def test_outcome_lists_every_miss_and_the_worst_row():
    doc = {"rows": [row(ratio=0.5, layer="a"), row(ratio=0.9, layer="b"), row(ratio=1.2, layer="c"),
                    row(ratio=3.0, auto=False, layer="not auto")]}
    outcome = next(o for o in check(doc) if o.target.name == CONV)
    assert len(outcome.rows) == 3 and not outcome.met
    assert [r["layer"] for r in outcome.misses] == ["b", "c"]
    assert outcome.worst["layer"] == "c"
    text = cpu_targets.markdown(doc)
    assert "no: 2 of 3 rows" in text and "b N=16 fwd+bwd 0.900x; c N=16 fwd+bwd 1.200x" in text
    # A miss by a hair prints as one.
    assert "0.831x" in cpu_targets.markdown({"rows": [row(ratio=0.8306)]})


def test_a_target_without_rows_is_not_met():
    outcomes = check({"rows": [row(ratio=0.1)]})
    conv = next(o for o in outcomes if o.target.name == CONV)
    assert conv.met
    others = [o for o in outcomes if o.target.name != CONV]
    assert others and all(not o.measured and not o.met for o in others)
    text = cpu_targets.markdown({"rows": [row(ratio=0.1)]})
    assert "Not measured by this run" in text and "convnet4 training step" in text


@pytest.mark.skipif(not FULL_RUNS, reason="no full CPU results file in bench/results")
@pytest.mark.parametrize("path", FULL_RUNS, ids=lambda p: p.stem)
def test_a_full_run_measures_every_target(path):
    doc = schema.load(path)
    assert [o.target.name for o in check(doc) if not o.measured] == []
    summary = report.summary(doc)
    assert summary.index("**Targets**") < summary.index("**conv2d, forward + backward")


def test_report_cli_prints_the_targets(capsys):
    path = FULL_RUNS[0] if FULL_RUNS else pytest.skip("no full CPU results file in bench/results")
    assert main(["report", str(path), "--targets"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**Targets**")
    assert all(t.name in out for t in TARGETS)


def test_report_cli_refuses_targets_of_a_gpu_run(capsys):
    gpu_runs = sorted((ROOT / "bench" / "results").glob("cuda-*.json"))
    path = gpu_runs[0] if gpu_runs else pytest.skip("no CUDA results file in bench/results")
    assert main(["report", str(path), "--targets"]) == 2
    assert "holds cuda rows" in capsys.readouterr().err
