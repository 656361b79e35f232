"""pytest-benchmark suite over the runner's cases: each contender (fastconv's variants, torch's
op) of each case, inference forward and forward+backward. Not part of the test run:

    python -m pytest bench --benchmark-only                          # the quick cases
    FASTCONV_BENCH_CASES=full python -m pytest bench --benchmark-only
    python -m pytest bench --benchmark-only --benchmark-autosave     # later: --benchmark-compare

The cases, tensors and timed calls are the runner's own (bench/cases.py, bench/ops.py); only
the clock and the statistics are pytest-benchmark's. ``python -m bench`` is the reference: it
interleaves the contenders of a case, which one test per contender cannot.
"""

import contextlib
import os

import pytest

import fastconv

from bench import cases, ops

CASES = [c for c in cases.select("cpu", quick=os.environ.get("FASTCONV_BENCH_CASES") != "full")
         if c.op != "model"]
PARAMS = [(case, side, name) for case in CASES
          for side, names in (("fastconv", ops.variants(case)), ("torch", ops.torch_impls(case, "cpu")))
          for name in names]


class _Untimed:
    """A Laps whose marks do nothing: pytest-benchmark times the whole call."""

    def start(self) -> None:
        pass

    def lap(self) -> None:
        pass


@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case,side,name", PARAMS,
                         ids=[f"{c.op}-{c.layer.replace(' ', '')}-N{c.batch}-{s if n == s else f'{s}-{n}'}"
                              for c, s, n in PARAMS])
def test_contender(benchmark, case, side, name, pass_):
    contest = ops.build(case, "cpu")
    op = contest.ours[name] if side == "fastconv" else contest.theirs[name]
    context = contest.contexts.get(name) if side == "torch" else None
    context = context or contextlib.nullcontext
    if pass_ == "fwd":
        call = ops.forward(op, contest.inputs, context)
    else:
        call = ops.forward_backward(op, contest.inputs, contest.grad, context)
    benchmark.group = f"{case.op} {case.layer} N={case.batch} {pass_}"
    benchmark.extra_info.update(op=case.op, layer=case.layer, batch=case.batch, contender=f"{side}-{name}")
    with fastconv.backend("cpu"):
        benchmark.pedantic(call, args=(_Untimed(),), rounds=3, warmup_rounds=1)

