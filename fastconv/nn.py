"""Drop-in ``torch.nn`` layers backed by fastconv's kernels.

Each class subclasses its ``torch.nn`` twin, so constructors, ``state_dict``
keys, ``repr`` and ``isinstance`` checks are unchanged; only ``forward`` runs
fastconv's ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _C
from . import functional as F

__all__ = ["ReLU", "Dropout", "Conv2d", "Conv2dReLU", "MaxPool2d"]


class ReLU(torch.nn.ReLU):
    """:class:`torch.nn.ReLU` on fastconv's ReLU kernels."""

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)


class Dropout(torch.nn.Dropout):
    """:class:`torch.nn.Dropout` on fastconv's Philox dropout kernels; identity in ``eval()``."""

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)


class Conv2d(torch.nn.Conv2d):
    """:class:`torch.nn.Conv2d` on fastconv's convolution kernels.

    Takes every argument of ``torch.nn.Conv2d`` plus ``algorithm`` (``"auto"``,
    ``"direct"``, ``"im2col"`` or ``"winograd"``); parameters, ``state_dict`` keys and
    initialisation are torch's. Non-zero ``padding_mode`` pads with
    :func:`torch.nn.functional.pad` first, exactly as torch does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None,
                 algorithm: str = "auto") -> None:
        _C.check_algorithm_name(algorithm, "fastconv.nn.Conv2d")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.algorithm = algorithm

    # The functional op forward runs; Conv2dReLU swaps in the fused one.
    _conv = staticmethod(F.conv2d)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias) -> Tensor:
        if self.padding_mode != "zeros":
            padded = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return self._conv(padded, weight, bias, self.stride, 0, self.dilation, self.groups, self.algorithm)
        return self._conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                          self.algorithm)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.algorithm == "auto" else f"{text}, algorithm={self.algorithm!r}"


class Conv2dReLU(Conv2d):
    """``Conv2d`` followed by ``ReLU`` as one layer: the convolution kernels apply bias and ReLU
    before they store the output (:func:`fastconv.functional.conv2d_relu`).

    Same constructor, parameters, ``state_dict`` keys and ``padding_mode`` handling as
    :class:`Conv2d` (it is one), so a trained Conv2d's weights load unchanged;
    ``fastconv.convert(model, fuse=True)`` builds these from Conv2d + ReLU pairs.
    """

    _conv = staticmethod(F.conv2d_relu)


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
