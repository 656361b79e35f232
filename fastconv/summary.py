"""A Keras-style ``model.summary()`` table for torch modules."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn


def _shape_of(output) -> str:
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if isinstance(output, (tuple, list)):
        return ", ".join(_shape_of(o) for o in output)
    return type(output).__name__


def summary(model: nn.Module, input_size: Sequence[int], *, batch_size: int = 1,
            print_table: bool = True) -> str:
    """Layer-by-layer table of output shapes and parameter counts, with totals.

    ``input_size`` is one sample's shape, e.g. ``(3, 150, 150)``. One forward pass in eval mode
    on zeros (no gradients) finds the shapes; the model's train/eval mode is restored after.
    Returns the table (and prints it unless ``print_table=False``).
    """
    rows: List[Tuple[str, str, str, int]] = []
    hooks = []

    def record(name):
        def hook(module, inputs, output):
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append((name, type(module).__name__, _shape_of(output), params))
        return hook

    for name, module in model.named_modules():
        if not list(module.children()):  # leaves only: containers would double-count
            hooks.append(module.register_forward_hook(record(name)))
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(batch_size, *input_size, device=device, dtype=dtype))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    header = ("Layer (type)", "Output shape", "Param #")
    body = [(f"{name} ({kind})", shape, f"{params:,}") for name, kind, shape, params in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(3)]
    rule = "-" * (sum(widths) + 4)
    fmt = f"{{:<{widths[0]}}}  {{:<{widths[1]}}}  {{:>{widths[2]}}}"
    lines = [rule, fmt.format(*header), "=" * len(rule)]
    lines += [fmt.format(*r) for r in body]
    lines += ["=" * len(rule), f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}", rule]
    table = "\n".join(lines)
    if print_table:
        print(table)
    return table
