"""Training curves, like the seeds' loss and accuracy plots."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: List[Dict], path: Path) -> None:
    """Two panels, loss and accuracy per epoch, training against validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label=f"Training {key}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label=f"Validation {key}")
        ax.set_title(f"Training and validation {title.lower()}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
