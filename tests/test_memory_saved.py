"""What a convnet4 training forward keeps for backward (bench/saved_memory.py): on the cpu
backend ReLU keeps a bit per element and max pooling a byte per output, where torch.nn keeps
ReLU's float output and pooling's input and int64 indices."""

import math

import torch

import fastconv
from bench.model import torch_twin
from bench.saved_memory import saved_bytes


def test_convnet4_keeps_masks_and_taps_instead_of_activations_and_indices():
    torch.manual_seed(0)
    ours = fastconv.models.convnet4().train()
    batch = 4  # every conv ReLU of 256 KiB or more, so it stores its mask
    x = torch.randn(batch, 3, 150, 150)
    mine, theirs = saved_bytes(ours, x), saved_bytes(torch_twin(ours).train(), x)
    assert "int64" in theirs and "int64" not in mine
    # The four conv -> ReLU -> 2x2 pool blocks: a bit per ReLU element, a byte per pooled output;
    # dropout's mask on the 6272 features, a bit each.
    blocks = [(32, 148), (64, 72), (128, 34), (128, 15)]
    masks = sum(math.ceil(batch * c * h * h / 8) for c, h in blocks) + math.ceil(batch * 6272 / 8)
    taps = sum(batch * c * (h // 2) ** 2 for c, h in blocks)
    assert mine["uint8"] == masks + taps
    # torch keeps per block the ReLU output and the pool's input (the same float tensor, saved
    # twice) and int64 indices: 10 bytes per ReLU element at least, against our 1/8 + 1/4.
    elements = sum(batch * c * h * h for c, h in blocks)
    assert theirs["int64"] == sum(8 * batch * c * (h // 2) ** 2 for c, h in blocks)
    assert sum(theirs.values()) - sum(mine.values()) >= 7.5 * elements
