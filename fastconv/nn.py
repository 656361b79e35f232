"""Drop-in ``torch.nn`` layers backed by fastconv's kernels.

Each class subclasses its ``torch.nn`` twin, so constructors, ``state_dict``
keys, ``repr`` and ``isinstance`` checks are unchanged; only ``forward`` runs
fastconv's ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import functional as F

__all__ = ["ReLU", "Dropout", "MaxPool2d"]


class ReLU(torch.nn.ReLU):
    """:class:`torch.nn.ReLU` on fastconv's ReLU kernels."""

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)


class Dropout(torch.nn.Dropout):
    """:class:`torch.nn.Dropout` on fastconv's Philox dropout kernels; identity in ``eval()``."""

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)


class MaxPool2d(torch.nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` on fastconv's max pooling kernels (``return_indices`` honoured)."""

    def forward(self, input: Tensor):
        return F.max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )
