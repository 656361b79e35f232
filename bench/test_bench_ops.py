"""pytest-benchmark suite: each op of fastconv beside torch's, forward+backward, on one seed-CNN
layer (batch 16, the second block of convnet4). Not part of the test run; compare with

    python -m pytest bench --benchmark-only --benchmark-group-by=param:op
"""

import pytest
import torch
import torch.nn.functional as F

import fastconv.functional as FF

OPS = {
    "conv2d": (lambda x: F.conv2d(x, WEIGHT), lambda x: FF.conv2d(x, WEIGHT), (16, 32, 74, 74)),
    "conv2d_relu": (lambda x: F.relu(F.conv2d(x, WEIGHT)), lambda x: FF.conv2d_relu(x, WEIGHT), (16, 32, 74, 74)),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), lambda x: FF.max_pool2d(x, 2), (16, 64, 72, 72)),
    "relu": (F.relu, FF.relu, (16, 64, 72, 72)),
    "dropout": (lambda x: F.dropout(x, 0.5), lambda x: FF.dropout(x, 0.5), (16, 64, 72, 72)),
}
WEIGHT = torch.randn(64, 32, 3, 3, requires_grad=True)


@pytest.mark.parametrize("impl", ["torch", "fastconv"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_forward_backward(benchmark, op, impl):
    theirs, ours, shape = OPS[op]
    fn = theirs if impl == "torch" else ours
    x = torch.randn(shape, requires_grad=True)

    def step():
        x.grad = None
        fn(x).sum().backward()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
