"""The CPU speed targets, checked against a results document.

Each target names the rows it covers (op, networks, batch sizes, passes) and a bound on one
figure of each row: the ratio to torch's time (at most the bound) or the share of the probed
streaming bandwidth (at least the bound). A target is met when it covers at least one row and
every row it covers keeps the bound; a target with no rows in the document (a run limited with
``--only`` or ``--batch``) is reported as not measured, never as met.

    python -m bench report bench/results/cpu-<machine>.json --targets
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

TRAINING_BATCHES = (16, 32)


@dataclass(frozen=True)
class Target:
    """Rows of ``op`` on ``nets`` at ``batches`` and ``passes`` (conv2d: the variant auto picks),
    each with ``figure`` at most (ratio) or at least (percent_of_peak) ``bound``."""

    name: str
    op: str
    nets: Tuple[str, ...]
    batches: Tuple[int, ...]
    passes: Tuple[str, ...]
    figure: str  # "ratio_to_torch" or "percent_of_peak"
    bound: float

    def covers(self, row: Dict) -> bool:
        if row["op"] != self.op or row["net"] not in self.nets or row["batch"] not in self.batches:
            return False
        if row["pass"] not in self.passes:
            return False
        # conv2d: only the variant auto picks (its rows carry auto=True); the other ops have one variant.
        return row.get("auto") is True if row["op"] == "conv2d" else True

    def keeps(self, row: Dict) -> bool:
        value = row.get(self.figure)
        if value is None:
            return False
        return value <= self.bound if self.figure == "ratio_to_torch" else value >= self.bound

    def bound_text(self) -> str:
        return f"≤ {self.bound:.2f}x" if self.figure == "ratio_to_torch" else f"≥ {self.bound:.0f}% of bandwidth"


CONVNET4, VGG16, OVERHEAD = ("convnet4",), ("vgg16",), ("overhead",)
FWD_BWD, EACH_PASS = ("fwd+bwd",), ("fwd", "bwd")

# The targets of the CPU kernels against torch (oneDNN / ATen) in the same process.
TARGETS: Tuple[Target, ...] = (
    Target("convnet4 convolutions, fwd+bwd", "conv2d", CONVNET4, TRAINING_BATCHES, FWD_BWD, "ratio_to_torch", 0.83),
    Target("convnet4 convolutions at batch 1, fwd and fwd+bwd", "conv2d", CONVNET4, (1,), ("fwd", "fwd+bwd"),
           "ratio_to_torch", 1.0),
    Target("VGG16 3x3 convolutions, fwd+bwd", "conv2d", VGG16, (1,) + TRAINING_BATCHES, FWD_BWD, "ratio_to_torch",
           1.0),
    Target("convnet4 max pooling, fwd+bwd", "max_pool2d", CONVNET4, TRAINING_BATCHES, FWD_BWD, "ratio_to_torch", 0.5),
    Target("convnet4 ReLU, fwd and bwd: bandwidth", "relu", CONVNET4, TRAINING_BATCHES, EACH_PASS,
           "percent_of_peak", 80.0),
    Target("convnet4 ReLU, fwd and bwd: time", "relu", CONVNET4, TRAINING_BATCHES, EACH_PASS, "ratio_to_torch", 0.83),
    Target("convnet4 dropout, fwd and bwd: bandwidth", "dropout", CONVNET4, TRAINING_BATCHES, EACH_PASS,
           "percent_of_peak", 80.0),
    Target("convnet4 dropout, fwd and bwd: time", "dropout", CONVNET4, TRAINING_BATCHES, EACH_PASS, "ratio_to_torch",
           0.83),
    Target("convnet4 training step", "model", CONVNET4, TRAINING_BATCHES, ("step",), "ratio_to_torch", 0.75),
    Target("per-call overhead: conv2d on 1x3x8x8, fwd+bwd", "conv2d", OVERHEAD, (1,), FWD_BWD, "ratio_to_torch", 1.5),
    Target("per-call overhead: relu on 1,000 elements, fwd+bwd", "relu", OVERHEAD, (1,), FWD_BWD, "ratio_to_torch",
           1.5),
)


@dataclass
class Outcome:
    """One target over one document: the rows it covers, the worst of them, those that miss."""

    target: Target
    rows: List[Dict]
    misses: List[Dict]
    worst: Optional[Dict]

    @property
    def measured(self) -> bool:
        return bool(self.rows)

    @property
    def met(self) -> bool:
        return self.measured and not self.misses


def _worst(target: Target, rows: Sequence[Dict]) -> Optional[Dict]:
    valued = [r for r in rows if r.get(target.figure) is not None]
    if not valued:
        return rows[0] if rows else None
    pick = max if target.figure == "ratio_to_torch" else min
    return pick(valued, key=lambda r: r[target.figure])


def check(doc: Dict, targets: Sequence[Target] = TARGETS) -> List[Outcome]:
    """Every target over the document's rows."""
    outcomes = []
    for target in targets:
        rows = [r for r in doc["rows"] if target.covers(r)]
        misses = [r for r in rows if not target.keeps(r)]
        outcomes.append(Outcome(target, rows, misses, _worst(target, rows)))
    return outcomes


def _label(row: Dict) -> str:
    return f"{row['layer']} N={row['batch']} {row['pass']}"


def _value(target: Target, row: Optional[Dict]) -> str:
    if row is None or row.get(target.figure) is None:
        return ""
    value = row[target.figure]
    # Three digits of a ratio, one of a percentage: a miss by a hair must not print as the bound.
    return f"{value:.3f}x" if target.figure == "ratio_to_torch" else f"{value:.1f}%"


def markdown(doc: Dict, targets: Sequence[Target] = TARGETS) -> str:
    """The measured targets as a table (target, bound, rows, worst row, met), the targets this
    run has no rows for, then every row that misses."""
    outcomes = check(doc, targets)
    measured = [o for o in outcomes if o.measured]
    unmeasured = [o.target.name for o in outcomes if not o.measured]
    lines = ["**Targets** (fastconv against torch in the same process; `bench/cpu_targets.py`):"]
    if measured:
        lines += ["", "| target | bound | rows | worst | met |", "| --- | --- | ---: | --- | --- |"]
    for o in measured:
        worst = f"{_value(o.target, o.worst)} ({_label(o.worst)})"
        verdict = "yes" if o.met else f"no: {len(o.misses)} of {len(o.rows)} rows"
        lines.append(f"| {o.target.name} | {o.target.bound_text()} | {len(o.rows)} | {worst} | {verdict} |")
    if unmeasured:
        lines += ["", f"Not measured by this run (no rows): {'; '.join(unmeasured)}."]
    missed = [o for o in outcomes if o.misses]
    if missed:
        lines.append("")
        for o in missed:
            rows = "; ".join(f"{_label(r)} {_value(o.target, r)}" for r in o.misses)
            lines.append(f"- {o.target.name} ({o.target.bound_text()}) missed by: {rows}.")
    return "\n".join(lines) + "\n"
