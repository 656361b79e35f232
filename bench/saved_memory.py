"""What a training forward keeps for backward: the tensors autograd saves, summed by dtype.

    python -m bench.saved_memory [--batch 32] [--size 150]

Every tensor ``torch.autograd.graph.saved_tensors_hooks`` packs during one forward of convnet4
in training mode, for the fastconv model and for its torch.nn twin (parameters included: a
saved weight counts once per layer that saves it).
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Dict

import torch

import fastconv
from bench.model import torch_twin


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, int]:
    """Bytes saved for backward by one forward of ``model`` on ``x``, by dtype."""
    saved: Counter = Counter()

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[str(t.dtype).replace("torch.", "")] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return dict(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=150)
    args = parser.parse_args()
    torch.manual_seed(0)
    ours = fastconv.models.convnet4().train()
    x = torch.randn(args.batch, 3, args.size, args.size)
    for name, model in (("fastconv", ours), ("torch.nn", torch_twin(ours).train())):
        by_dtype = saved_bytes(model, x)
        parts = ", ".join(f"{dtype} {n / 2**20:.1f}" for dtype, n in sorted(by_dtype.items()))
        print(f"{name}: {sum(by_dtype.values()) / 2**20:.1f} MiB saved for backward ({parts})")


if __name__ == "__main__":
    main()
