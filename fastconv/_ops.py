"""Fake (meta) kernels and autograd formulas of the ``torch.ops.fastconv`` ops.

The fake kernels describe output shapes, dtypes and strides without computing,
which is what ``torch.compile`` and ``torch.library.opcheck`` need; the autograd
formulas call our own backward ops, passing on the forward's backend.
"""

from __future__ import annotations

import torch

from . import _C  # noqa: F401  (registers the op schemas)

ops = torch.ops.fastconv


# ---------------------------------------------------------------- ReLU


@torch.library.register_fake("fastconv::relu")
def _relu_fake(input, backend="auto"):
    return torch.empty_like(input)


@torch.library.register_fake("fastconv::relu_")
def _relu_inplace_fake(input, backend="auto"):
    return None


@torch.library.register_fake("fastconv::relu_backward")
def _relu_backward_fake(grad_output, output, backend="auto"):
    torch._check(grad_output.shape == output.shape, lambda: "relu_backward: shape mismatch")
    return torch.empty_like(output)


def _relu_setup(ctx, inputs, output):
    ctx.backend = inputs[1]
    ctx.save_for_backward(output)


def _relu_grad(ctx, grad_output):
    (output,) = ctx.saved_tensors
    return ops.relu_backward(grad_output, output, ctx.backend), None


def _relu_backward_setup(ctx, inputs, output):
    ctx.backend = inputs[2]
    ctx.save_for_backward(inputs[1])


def _relu_backward_grad(ctx, grad):
    # relu_backward is linear in grad_output with the same mask; output is not differentiable.
    (output,) = ctx.saved_tensors
    return ops.relu_backward(grad, output, ctx.backend), None, None


torch.library.register_autograd("fastconv::relu", _relu_grad, setup_context=_relu_setup)
torch.library.register_autograd(
    "fastconv::relu_backward", _relu_backward_grad, setup_context=_relu_backward_setup
)


# ---------------------------------------------------------------- Dropout


@torch.library.register_fake("fastconv::dropout")
def _dropout_fake(input, p, seed, backend="auto"):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastconv::dropout_")
def _dropout_inplace_fake(input, p, seed, backend="auto"):
    return None


@torch.library.register_fake("fastconv::dropout_backward")
def _dropout_backward_fake(grad_output, p, seed, backend="auto"):
    return torch.empty_like(grad_output, memory_format=torch.contiguous_format)


def _dropout_setup(ctx, inputs, output):
    _, ctx.p, seed, ctx.backend = inputs
    ctx.save_for_backward(seed)


def _dropout_grad(ctx, grad_output):
    (seed,) = ctx.saved_tensors
    return ops.dropout_backward(grad_output, ctx.p, seed, ctx.backend), None, None, None


# forward and backward are the same linear map, so both share one formula.
torch.library.register_autograd("fastconv::dropout", _dropout_grad, setup_context=_dropout_setup)
torch.library.register_autograd(
    "fastconv::dropout_backward", _dropout_grad, setup_context=_dropout_setup
)


# ---------------------------------------------------------------- in-place ops under autograd


class InplaceRelu(torch.autograd.Function):
    """``relu_`` for tensors that need gradients: marks the input dirty, like torch."""

    @staticmethod
    def forward(ctx, input, backend):
        ops.relu_(input, backend)
        ctx.mark_dirty(input)
        ctx.save_for_backward(input)
        ctx.backend = backend
        return input

    @staticmethod
    def backward(ctx, grad_output):
        (output,) = ctx.saved_tensors
        return ops.relu_backward(grad_output, output, ctx.backend), None


class InplaceDropout(torch.autograd.Function):
    """``dropout_`` for tensors that need gradients; backward regenerates the mask from the seed."""

    @staticmethod
    def forward(ctx, input, p, seed, backend):
        ops.dropout_(input, p, seed, backend)
        ctx.mark_dirty(input)
        ctx.save_for_backward(seed)
        ctx.p, ctx.backend = p, backend
        return input

    @staticmethod
    def backward(ctx, grad_output):
        (seed,) = ctx.saved_tensors
        return ops.dropout_backward(grad_output, ctx.p, seed, ctx.backend), None, None, None


# ---------------------------------------------------------------- Conv2d


def _conv_output_size(size, kernel, stride, pad_before, pad_after, dilation):
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


@torch.library.register_fake("fastconv::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups, algorithm="auto", backend="auto"):
    torch._check(input.dim() == 4 and weight.dim() == 4, lambda: "conv2d: expected 4-D input and weight")
    torch._check(weight.shape[1] * groups == input.shape[1], lambda: "conv2d: channel mismatch")
    out_h = _conv_output_size(input.shape[2], weight.shape[2], stride[0], padding[0], padding[1], dilation[0])
    out_w = _conv_output_size(input.shape[3], weight.shape[3], stride[1], padding[2], padding[3], dilation[1])
    return input.new_empty((input.shape[0], weight.shape[0], out_h, out_w))


@torch.library.register_fake("fastconv::conv2d_backward_input")
def _conv2d_backward_input_fake(grad_output, weight, input_size, stride, padding, dilation, groups,
                                algorithm="auto", backend="auto"):
    return grad_output.new_empty(input_size)


@torch.library.register_fake("fastconv::conv2d_backward_weight")
def _conv2d_backward_weight_fake(grad_output, input, weight_size, stride, padding, dilation, groups,
                                 algorithm="auto", backend="auto"):
    return grad_output.new_empty(weight_size)


@torch.library.register_fake("fastconv::conv2d_backward_bias")
def _conv2d_backward_bias_fake(grad_output, backend="auto"):
    return grad_output.new_empty((grad_output.shape[1],))


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, ctx.stride, ctx.padding, ctx.dilation, ctx.groups, ctx.algorithm, ctx.backend = inputs
    ctx.input_size = list(input.shape)
    ctx.weight_size = list(weight.shape)
    # Only what the requested gradients read is kept alive.
    ctx.save_for_backward(input if ctx.needs_input_grad[1] else None,
                          weight if ctx.needs_input_grad[0] else None)


def _conv2d_grad(ctx, grad_output):
    input, weight = ctx.saved_tensors
    geometry = (ctx.stride, ctx.padding, ctx.dilation, ctx.groups, ctx.algorithm, ctx.backend)
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = ops.conv2d_backward_input(grad_output, weight, ctx.input_size, *geometry)
    if ctx.needs_input_grad[1]:
        grad_weight = ops.conv2d_backward_weight(grad_output, input, ctx.weight_size, *geometry)
    if ctx.needs_input_grad[2]:
        grad_bias = ops.conv2d_backward_bias(grad_output, ctx.backend)
    return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


torch.library.register_autograd("fastconv::conv2d", _conv2d_grad, setup_context=_conv2d_setup)
