"""The CUDA kernels train a network: a small CNN of fastconv layers takes SGD steps on the SIMT
runtime and ends where the same run on the C++ kernels ends (within float32 rounding), and the
SIMT run is bit-identical whatever order the runtime runs each block's threads in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import fastconv
import fastconv.nn as fnn

STEPS = 4


def small_cnn() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        fnn.Conv2d(3, 8, 3, padding=1), fnn.ReLU(), fnn.MaxPool2d(2), fnn.Dropout(0.25),
        fnn.Conv2d(8, 8, 3, stride=2, algorithm="direct"), fnn.ReLU(inplace=True),
        torch.nn.Flatten(), torch.nn.Linear(8 * 3 * 3, 2),
    )


def train(backend: str):
    """Losses of STEPS SGD steps and the final parameters, on `backend`."""
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 14, 14, generator=generator)
    y = torch.randint(0, 2, (6,), generator=generator)
    losses = []
    torch.manual_seed(2)  # dropout's masks: the same on every backend for the same seed
    with fastconv.backend(backend):
        for _ in range(STEPS):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    return torch.stack(losses), {name: p.detach().clone() for name, p in model.named_parameters()}


def test_simt_training_matches_the_cpu_kernels():
    simt_losses, simt_params = train("simt")
    cpu_losses, cpu_params = train("cpu")
    assert simt_losses[-1] < simt_losses[0], "the loss falls"
    torch.testing.assert_close(simt_losses, cpu_losses, rtol=1e-4, atol=1e-5)
    for name, value in cpu_params.items():
        torch.testing.assert_close(simt_params[name], value, rtol=1e-4, atol=1e-5, msg=name)


_RUN = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_simt_training import train
from fastconv import build_info
losses, params = train("simt")
torch.save({{"order": build_info()["simt"]["order"], "losses": losses, "params": params}}, {out!r})
"""


def test_simt_training_is_identical_in_every_thread_order(tmp_path: Path):
    runs = {}
    for order in ("forward", "shuffled"):
        out = tmp_path / f"{order}.pt"
        code = _RUN.format(tests=str(Path(__file__).parent), out=str(out))
        env = dict(os.environ, FASTCONV_SIMT_ORDER=order, FASTCONV_SIMT_SEED="5")
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[order] = torch.load(out)
        assert runs[order]["order"] == order, "the runtime took the switch"
    forward, shuffled = runs["forward"], runs["shuffled"]
    torch.testing.assert_close(shuffled["losses"], forward["losses"], rtol=0, atol=0)
    for name, value in forward["params"].items():
        torch.testing.assert_close(shuffled["params"][name], value, rtol=0, atol=0, msg=name)
