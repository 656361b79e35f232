"""Functional interface, mirroring ``torch.nn.functional``.

Each function runs fastconv's own kernels through the ``torch.ops.fastconv``
ops, on the backend chosen by :func:`fastconv.backend` (CPU kernels for CPU
tensors and CUDA kernels for CUDA tensors by default).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _C
from ._backend import current_backend

__all__ = ["relu", "dropout", "conv2d", "conv2d_relu", "max_pool2d"]

# The overloads themselves: calling an OpOverloadPacket first resolves the overload, which costs
# about as much as a small op's autograd glue.
ops = torch.ops.fastconv
_relu, _relu_ = ops.relu.default, ops.relu_.default
_dropout, _dropout_ = ops.dropout.default, ops.dropout_.default
_conv2d, _conv2d_relu = ops.conv2d.default, ops.conv2d_relu.default
_max_pool2d, _max_pool2d_with_taps = ops.max_pool2d.default, ops.max_pool2d_with_taps.default
_INT64 = torch.iinfo(torch.int64)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """Rectified linear unit ``max(0, x)``, as :func:`torch.nn.functional.relu`.

    NaN propagates, ``relu(-0.0)`` is ``-0.0`` and the gradient at 0 is 0, as in torch.
    When autograd records the call on a contiguous CPU tensor, the cpu backend stores the
    mask of kept elements, one bit each, for backward instead of keeping the output.
    """
    if not inplace:
        return _relu(input, current_backend())
    _relu_(input, current_backend())  # its autograd kernel marks input modified, as torch's relu_
    return input


def _draw_seed(device: torch.device) -> Tensor:
    """(seed, offset) for Philox, from torch's default generator for ``device``."""
    return torch.randint(_INT64.min, _INT64.max, (2,), dtype=torch.int64, device=device)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zeroes each element with probability ``p`` and scales the rest by ``1 / (1 - p)``.

    As :func:`torch.nn.functional.dropout`: ``training=False`` or ``p=0`` return
    ``input`` itself, ``p=1`` gives ``input * 0``.

    The mask comes from Philox4x32-10 under a (seed, offset) pair drawn from
    torch's generator for the input's device. The same pair, ``p`` and input
    shape give the same mask on the cpu, simt and cuda backends, so the same
    generator state does: ``torch.manual_seed(s)`` before the call reproduces
    the mask, from the CPU generator for CPU tensors and from the CUDA
    generator for CUDA tensors. Those two generators differ, so a CPU and a
    CUDA call after the same ``torch.manual_seed`` get different masks; pass an
    explicit pair to ``torch.ops.fastconv.dropout`` for one mask on both.
    When autograd records the call, the cpu backend also stores the mask, one
    bit per element, and backward reads it; the cuda and simt backends
    regenerate it from the pair (the same mask either way).
    """
    if not training or p == 0.0:
        # The op checks p; where it does not run, its check runs alone, as torch raises either
        # way. (Not while torch.compile traces: it cannot trace into the extension; the p of
        # an nn.Dropout was checked when it was built.)
        if not torch.compiler.is_compiling():
            _C.check_dropout_probability(float(p), "dropout")
        return input
    seed = _draw_seed(input.device)
    if not inplace:
        return _dropout(input, float(p), seed, current_backend())
    _dropout_(input, float(p), seed, current_backend())  # its autograd kernel marks input modified
    return input


# ---------------------------------------------------------------- Conv2d

IntOrPair = Union[int, Sequence[int]]


class InvalidPaddingError(ValueError, RuntimeError):
    """An unknown padding string. ``torch.nn.Conv2d`` raises ValueError for it and
    ``torch.nn.functional.conv2d`` RuntimeError; this is both, so code written
    against either keeps working."""


def _pair(value: IntOrPair, name: str) -> List[int]:
    """An int or a 1- or 2-element sequence as two ints, with torch's error for other lengths."""
    if isinstance(value, int):
        return [value, value]
    values = [int(v) for v in value]
    if len(values) == 1:
        return values * 2
    if len(values) != 2:
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of 2 values to match the "
            f"convolution dimensions, but got {name}={values}"
        )
    return values


def _padding_rect(padding: Union[str, IntOrPair], weight: Tensor, stride: List[int],
                  dilation: List[int]) -> List[int]:
    """``padding`` as [top, bottom, left, right].

    ``"same"`` pads a total of ``dilation * (kernel - 1)`` per dimension and,
    like torch, puts the odd extra row/column of an even kernel at the
    bottom/right.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding != "same":
            raise InvalidPaddingError(f"Invalid padding string '{padding}', should be one of {{'same', 'valid'}}")
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        if weight.dim() != 4:
            raise RuntimeError(f"conv2d: expected a 4-D weight, but got weight of size {list(weight.shape)}")
        rect = []
        for kernel, d in zip(weight.shape[2:], dilation):
            total = d * (kernel - 1)
            rect += [total // 2, total - total // 2]
        return rect
    ph, pw = _pair(padding, "padding")
    return [ph, ph, pw, pw]


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrPair = 1,
           padding: Union[str, IntOrPair] = 0, dilation: IntOrPair = 1, groups: int = 1,
           algorithm: str = "auto") -> Tensor:
    """2-D convolution (cross-correlation), as :func:`torch.nn.functional.conv2d`.

    ``input`` is ``[N, C, H, W]`` or unbatched ``[C, H, W]``; ``padding`` is an
    int, a pair, ``"valid"`` or ``"same"``. ``algorithm`` picks the kernels:
    ``"direct"``, ``"im2col"`` (im2col + our blocked GEMM), ``"winograd"`` (F(2x2, 3x3), CPU
    only: 3x3 kernels, stride 1, dilation 1; ValueError elsewhere) or ``"auto"``.
    Gradients run on the same backend and algorithm as the forward pass.
    """
    return _call_conv(_conv2d, input, weight, bias, stride, padding, dilation, groups, algorithm)


def conv2d_relu(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrPair = 1,
                padding: Union[str, IntOrPair] = 0, dilation: IntOrPair = 1, groups: int = 1,
                algorithm: str = "auto") -> Tensor:
    """``relu(conv2d(input, weight, bias, ...))`` in one op: the convolution kernels apply the
    bias and the ReLU before they store each output, so no second pass reads the output.

    Arguments and results are those of :func:`conv2d` followed by :func:`relu` (torch's ReLU:
    NaN passes, the gradient at 0 is 0).
    """
    return _call_conv(_conv2d_relu, input, weight, bias, stride, padding, dilation, groups, algorithm)


def _call_conv(op, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: IntOrPair,
               padding: Union[str, IntOrPair], dilation: IntOrPair, groups: int, algorithm: str) -> Tensor:
    """Runs a conv2d-schema op with torch's argument forms: int/pair/string padding, unbatched input."""
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(input.shape)}"
        )
    stride_hw = _pair(stride, "stride")
    dilation_hw = _pair(dilation, "dilation")
    rect = _padding_rect(padding, weight, stride_hw, dilation_hw)
    unbatched = input.dim() == 3
    batched = input.unsqueeze(0) if unbatched else input
    out = op(batched, weight, bias, stride_hw, rect, dilation_hw, int(groups), algorithm, current_backend())
    return out.squeeze(0) if unbatched else out

_IntPair = Union[int, Sequence[int]]


def _int_pair(value: _IntPair, message: str) -> Tuple[int, int]:
    """``value`` as (h, w): an int for both, or a sequence of one or two ints (torch's rule)."""
    if isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)):
        if not all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in value):
            raise TypeError(f"max_pool2d: expected ints, but got {value!r}")
        if len(value) == 1:
            return (value[0], value[0])
        if len(value) == 2:
            return (value[0], value[1])
        raise RuntimeError(f"{message}, but got {value!r}")
    raise TypeError(f"max_pool2d: expected an int or a tuple of ints, but got {type(value).__name__}")


def _stores_taps(x: Tensor, kernel: Tuple[int, int], backend: str) -> bool:
    """Whether max_pool2d_with_taps serves a call: the cpu backend on a CPU tensor of its
    dtypes, windows of up to ``_C.max_pool2d_max_taps`` taps (csrc/cpu/max_pool2d.h)."""
    return (x.device.type == "cpu" and backend in ("auto", "cpu") and x.dtype in (torch.float32, torch.float64)
            and kernel[0] * kernel[1] <= _C.max_pool2d_max_taps)


def max_pool2d(
    input: Tensor,
    kernel_size: _IntPair,
    stride: Optional[_IntPair] = None,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """2-D max pooling over (N, C, H, W) or unbatched (C, H, W) input, as
    :func:`torch.nn.functional.max_pool2d`.

    ``stride`` defaults to ``kernel_size``; padding is implicit -inf and may be
    at most half the kernel. Ties keep the first maximum in scan order and a
    NaN wins its window, as in torch. With ``return_indices`` it also returns
    the int64 flat positions (``h * W + w`` within the input plane) of the
    maxima, which are not differentiable. Without, the cpu backend keeps each
    maximum's position within its window in one byte for backward (float32 and
    float64, windows of up to 255 taps) instead of torch's eight-byte index.
    """
    kernel = _int_pair(kernel_size, "max_pool2d: kernel_size must either be a single int, or a tuple of two ints")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        strides = kernel
    else:
        strides = _int_pair(stride, "max_pool2d: stride must either be omitted, a single int, or a tuple of two ints")
    pads = _int_pair(padding, "max_pool2d: padding must either be a single int, or a tuple of two ints")
    dilations = _int_pair(dilation, "max_pool2d: dilation must be either a single int, or a tuple of two ints")
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"max_pool2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, but got {input.dim()} dimensions"
        )
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    backend = current_backend()
    if not return_indices and _stores_taps(x, kernel, backend):
        output, _ = _max_pool2d_with_taps(x, kernel, strides, pads, dilations, bool(ceil_mode), backend)
        return output if batched else output.squeeze(0)
    output, indices = _max_pool2d(x, kernel, strides, pads, dilations, bool(ceil_mode), backend)
    if not batched:
        output, indices = output.squeeze(0), indices.squeeze(0)
    return (output, indices) if return_indices else output
