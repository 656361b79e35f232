"""Interleaved timing of competing implementations in one process.

Alternating the candidates within every repetition (and reversing their order on odd
repetitions) exposes them to the same thermal state, frequency scaling and background load,
so their *ratio* is meaningful even on a noisy machine. Medians and interquartile ranges,
not means and standard deviations, resist the outliers a shared machine produces.

A candidate is a function of a :class:`Laps`: it prepares what must not be timed, calls
``laps.start()``, runs its first phase, calls ``laps.lap()``, and so on for each phase
(forward, backward, optimiser update). On the CPU a lap reads ``time.perf_counter``; on a
GPU it records a CUDA event, so a lap measures the GPU's time between two points of the
stream, and the device is synchronised before each start and after each repetition.

Before timing, every candidate runs ``warmup`` times (at least once). That is not just to
let clocks settle: the first call of an op pays one-off costs that belong to neither
implementation's steady state — oneDNN creates and JIT-compiles its primitives, cuDNN picks
its algorithms, the thread pool starts, lazily allocated buffers (our packed weights, torch's
workspaces) are created and their pages faulted in. Run once by every candidate, those costs
land in the warm-up of each side instead of in the first timed repetition of whichever runs
first. Each timed call still allocates its outputs afresh, on both sides alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch


class Laps:
    """Phase boundaries of one timed call, on the CPU clock or as CUDA events."""

    def __init__(self, device: str) -> None:
        self._cuda = device.startswith("cuda")
        self._marks: list = []

    def _mark(self) -> None:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def start(self) -> None:
        """Begin timing (work queued on the GPU before this point is finished first)."""
        if self._marks:
            raise RuntimeError("Laps.start() called twice in one timed call")
        if self._cuda:
            torch.cuda.synchronize()
        self._mark()

    def lap(self) -> None:
        """End the current phase and begin the next."""
        if not self._marks:
            raise RuntimeError("Laps.lap() before Laps.start()")
        self._mark()

    def phases(self) -> List[float]:
        """Seconds of each phase (after waiting for the GPU to reach the last mark)."""
        if len(self._marks) < 2:
            raise RuntimeError("a timed call must call laps.start() and then laps.lap() at least once")
        if self._cuda:
            self._marks[-1].synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self._marks, self._marks[1:])]
        return [b - a for a, b in zip(self._marks, self._marks[1:])]


Candidate = Callable[[Laps], None]


def timed_call(fn: Candidate, device: str) -> List[float]:
    """Runs ``fn`` once; the seconds of each of its phases."""
    laps = Laps(device)
    fn(laps)
    return laps.phases()


@dataclass
class Samples:
    """The timed repetitions of one candidate: ``phases[r][i]`` is phase ``i`` of repetition ``r``."""

    phases: List[List[float]]

    def series(self, which: Optional[Sequence[int]] = None) -> List[float]:
        """Per-repetition seconds of the phases ``which`` summed (all phases by default)."""
        return [sum(p if which is None else [p[i] for i in which]) for p in self.phases]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def iqr(values: Sequence[float]) -> float:
    """Interquartile range (75th minus 25th percentile, inclusive method); 0 for one value."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def interleaved(candidates: Mapping[str, Candidate], repeats: int = 15, warmup: int = 1,
                device: str = "cpu", min_repeats: int = 1,
                budget_s: Optional[float] = None) -> Dict[str, Samples]:
    """Times each candidate alternately: ``warmup`` untimed rounds, then the timed ones.

    Every round runs every candidate once, in the given order on even rounds and reversed on
    odd ones. With ``budget_s``, the number of timed rounds is what fits the budget at the
    warm-up's pace, between ``min_repeats`` and ``repeats``: cheap cases get many repetitions
    and expensive ones (large layers, slow reference kernels) few.
    """
    items = list(candidates.items())
    if not items:
        return {}
    order = lambda r: items if r % 2 == 0 else items[::-1]  # noqa: E731
    warmup = max(1, warmup)
    began = time.perf_counter()
    for r in range(warmup):
        for _, fn in order(r):
            timed_call(fn, device)
    if budget_s is not None:
        per_round = (time.perf_counter() - began) / warmup
        repeats = min(repeats, int(budget_s / max(per_round, 1e-9)))
    repeats = max(repeats, min_repeats, 1)
    samples: Dict[str, Samples] = {name: Samples([]) for name, _ in items}
    for r in range(repeats):
        for name, fn in order(r):
            samples[name].phases.append(timed_call(fn, device))
    return samples
