"""Compare training runs: one table row and one validation curve per run.

    python -m fastconv.compare runs/a runs/b --label "full recipe" --label "no BatchNorm" \\
        --out ablation.png --json ablation.json

Each run is a `python -m fastconv.train --out DIR` directory (its history.json). The table,
printed as Markdown, gives per run: the epochs run, the validation accuracy of the epoch with
the lowest validation loss (the epoch `best.pt` holds), of the last epoch and the highest of
any epoch, and the median seconds per epoch. The plot overlays the runs' validation accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def load_history(run: Path) -> List[Dict]:
    """The per-epoch records of a training run directory (or of a history.json file)."""
    path = Path(run)
    if path.is_dir():
        path = path / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"no history.json at {path}: is it a `python -m fastconv.train --out` directory?")
    history = json.loads(path.read_text())
    if not isinstance(history, list) or not history:
        raise ValueError(f"{path} holds no epochs")
    missing = {"epoch", "val_loss", "val_acc"} - set(history[0])
    if missing:
        raise ValueError(f"{path}: epoch records lack {sorted(missing)}")
    return history


def summarize(history: Sequence[Dict]) -> Dict:
    """Epochs, best-loss epoch and its accuracy, last and highest accuracy, median epoch time."""
    best = min(history, key=lambda h: h["val_loss"])
    seconds = [h["seconds"] for h in history if "seconds" in h]
    return {
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "best_val_acc": best["val_acc"],
        "best_val_loss": best["val_loss"],
        "last_val_acc": history[-1]["val_acc"],
        "max_val_acc": max(h["val_acc"] for h in history),
        "median_epoch_seconds": statistics.median(seconds) if seconds else None,
    }


def markdown_table(labels: Sequence[str], summaries: Sequence[Dict]) -> str:
    """The summaries as a Markdown table, one row per run."""
    lines = ["| run | epochs | val acc at lowest val loss (epoch) | last epoch | highest | s/epoch |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, s in zip(labels, summaries):
        secs = "" if s["median_epoch_seconds"] is None else f"{s['median_epoch_seconds']:.1f}"
        lines.append(f"| {label} | {s['epochs']} | {s['best_val_acc']:.3f} ({s['best_epoch']}) | "
                     f"{s['last_val_acc']:.3f} | {s['max_val_acc']:.3f} | {secs} |")
    return "\n".join(lines)


def plot_runs(labels: Sequence[str], histories: Sequence[Sequence[Dict]], path: Path) -> None:
    """Validation accuracy per epoch of every run, on one set of axes."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, history in zip(labels, histories):
        ax.plot([h["epoch"] for h in history], [h["val_acc"] for h in history], label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    p = argparse.ArgumentParser(prog="python -m fastconv.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="training run directories (or history.json files)")
    p.add_argument("--label", action="append", default=None,
                   help="a name per run, in order (default: the directory names)")
    p.add_argument("--out", type=Path, help="write the validation-accuracy plot here (PNG)")
    p.add_argument("--json", type=Path, help="write the summaries here")
    args = p.parse_args(argv)
    labels = args.label or [run.name if run.is_dir() else run.parent.name for run in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"{len(labels)} --label for {len(args.runs)} runs: give one per run, or none")
    histories = [load_history(run) for run in args.runs]
    summaries = [dict(run=label, **summarize(h)) for label, h in zip(labels, histories)]
    print(markdown_table(labels, summaries))
    if args.out:
        plot_runs(labels, histories, args.out)
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries


if __name__ == "__main__":
    main()
