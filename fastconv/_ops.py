"""Fake (meta) kernels of the ``torch.ops.fastconv`` ops, and where their autograd lives.

The fake kernels describe output shapes, dtypes and strides without computing,
which is what ``torch.compile`` and ``torch.library.opcheck`` need. The autograd
formulas are C++ kernels for the Autograd dispatch key (csrc/autograd), which
call our own backward ops on the forward's backend.
"""

from __future__ import annotations

import torch

from torch._prims_common import suggest_memory_format

from . import _C  # noqa: F401  (registers the op schemas)

ops = torch.ops.fastconv


def _output_like(input, shape, dtype=None):
    """An empty output laid out as the op returns it: channels_last for a channels_last 4-D
    input (torch's rule, which the C++ ops follow), contiguous otherwise."""
    layout = suggest_memory_format(input) if input.dim() == 4 else torch.contiguous_format
    return input.new_empty(shape, dtype=dtype).contiguous(memory_format=layout)


# ---------------------------------------------------------------- stored masks
# One bit per element, whole bytes (dropout_with_mask, relu_with_mask).


def _mask_bytes(numel):
    """The stored mask's size: one bit per element, whole bytes."""
    return (numel + 7) // 8


def _empty_mask(input):
    return input.new_empty((_mask_bytes(input.numel()),), dtype=torch.uint8)


def _backward_from_mask_fake(op, grad_output, mask):
    """The C++ backward ops' mask checks, for tensors that reach only the fake kernel (a mask
    on the meta device), and their contiguous gradient."""
    torch._check(mask.dtype == torch.uint8, lambda: f"{op}: mask must be a uint8 tensor, got {mask.dtype}")
    torch._check(mask.device == grad_output.device,
                 lambda: f"{op}: mask must be on grad_output's device ({grad_output.device}), got {mask.device}")
    bytes_ = _mask_bytes(grad_output.numel())
    torch._check(mask.shape == (bytes_,), lambda: f"{op}: mask must hold one bit per element of grad_output, "
                 f"a 1-D tensor of {bytes_} bytes, got shape {list(mask.shape)}")
    return torch.empty_like(grad_output, memory_format=torch.contiguous_format)


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


@torch.library.register_fake("fastconv::relu_with_mask")
def _relu_with_mask_fake(input, backend="auto"):
    return torch.empty_like(input), _empty_mask(input)


@torch.library.register_fake("fastconv::relu_with_mask_")
def _relu_with_mask_inplace_fake(input, backend="auto"):
    return _empty_mask(input)


@torch.library.register_fake("fastconv::relu_backward_from_mask")
def _relu_backward_from_mask_fake(grad_output, mask, backend="auto"):
    return _backward_from_mask_fake("relu_backward_from_mask", grad_output, mask)


# ---------------------------------------------------------------- Dropout


@torch.library.register_fake("fastconv::dropout")
def _dropout_fake(input, p, seed, backend="auto"):
    return _output_like(input, input.shape)


@torch.library.register_fake("fastconv::dropout_")
def _dropout_inplace_fake(input, p, seed, backend="auto"):
    return None


@torch.library.register_fake("fastconv::dropout_backward")
def _dropout_backward_fake(grad_output, p, seed, backend="auto"):
    return torch.empty_like(grad_output, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastconv::dropout_with_mask")
def _dropout_with_mask_fake(input, p, seed, backend="auto"):
    return _output_like(input, input.shape), _empty_mask(input)


@torch.library.register_fake("fastconv::dropout_with_mask_")
def _dropout_with_mask_inplace_fake(input, p, seed, backend="auto"):
    return _empty_mask(input)


@torch.library.register_fake("fastconv::dropout_backward_from_mask")
def _dropout_backward_from_mask_fake(grad_output, p, mask, backend="auto"):
    return _backward_from_mask_fake("dropout_backward_from_mask", grad_output, mask)


# ---------------------------------------------------------------- Conv2d


def _conv_output_size(size, kernel, stride, pad_before, pad_after, dilation):
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


@torch.library.register_fake("fastconv::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups, algorithm="auto", backend="auto"):
    torch._check(input.dim() == 4 and weight.dim() == 4, lambda: "conv2d: expected 4-D input and weight")
    torch._check(weight.shape[1] * groups == input.shape[1], lambda: "conv2d: channel mismatch")
    out_h = _conv_output_size(input.shape[2], weight.shape[2], stride[0], padding[0], padding[1], dilation[0])
    out_w = _conv_output_size(input.shape[3], weight.shape[3], stride[1], padding[2], padding[3], dilation[1])
    return _output_like(input, (input.shape[0], weight.shape[0], out_h, out_w))


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


# conv2d_relu: relu(conv2d(...)) fused in the forward kernels' epilogue; conv2d's shapes.
torch.library.register_fake("fastconv::conv2d_relu")(_conv2d_fake)


def register_autocast_to_requested_dtype(op_name: str, device_type: str, lib: torch.library.Library) -> None:
    """Under ``torch.autocast(device_type, dtype=...)``, run ``op_name`` with its floating-point
    tensors cast to that autocast region's dtype (float16 or bfloat16), as torch's own
    convolution does. (``torch.library.register_autocast`` fixes one dtype at registration.)"""
    op = getattr(getattr(torch.ops, op_name.split("::")[0]), op_name.split("::")[1]).default
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def cast(value, dtype):
        # As torch's autocast: float64 stays float64, and tensors on other devices are left alone.
        if (isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64
                and value.device.type == device_type):
            return value.to(dtype)
        return value

    def kernel(_keyset, *args):
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(excluded):
            return op(*(cast(a, dtype) for a in args))

    lib.impl(op_name.split("::")[1], kernel, key, with_keyset=True)


# Under torch.autocast on CUDA the convolution runs in the region's dtype, as torch's own conv2d
# does (our CUDA kernels accumulate in fp32); pooling, ReLU and dropout take whatever dtype arrives.
_autocast_library = torch.library.Library("fastconv", "IMPL")
for _name in ("fastconv::conv2d", "fastconv::conv2d_relu"):
    register_autocast_to_requested_dtype(_name, "cuda", _autocast_library)

# ---------------------------------------------------------------- Max pooling


def _pair(values) -> tuple:
    """An ``int[2]`` schema argument as torch reads it: one value for both sides, or two."""
    values = list(values)
    return (values[0], values[0]) if len(values) == 1 else tuple(values)


def max_pool2d_output_hw(input_hw, kernel_size, stride, padding, dilation, ceil_mode):
    """torch's ``pooling_output_shape`` for both axes: with ``ceil_mode`` the
    last window must still start inside the input or its left padding."""
    kernel = _pair(kernel_size)
    stride = _pair(stride) if len(stride) else kernel
    padding, dilation = _pair(padding), _pair(dilation)
    sizes = []
    for size, k, s, p, d in zip(input_hw, kernel, stride, padding, dilation):
        out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        sizes.append(out)
    return sizes


@torch.library.register_fake("fastconv::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode, backend="auto"):
    torch._check(input.dim() == 4, lambda: "max_pool2d: expected a 4-D (N, C, H, W) input")
    out_h, out_w = max_pool2d_output_hw(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    shape = (input.shape[0], input.shape[1], out_h, out_w)
    return _output_like(input, shape), _output_like(input, shape, torch.int64)


@torch.library.register_fake("fastconv::max_pool2d_with_taps")
def _max_pool2d_with_taps_fake(input, kernel_size, stride, padding, dilation, ceil_mode, backend="auto"):
    output, indices = _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode, backend)
    return output, torch.empty_like(indices, dtype=torch.uint8)


@torch.library.register_fake("fastconv::max_pool2d_backward_from_taps")
def _max_pool2d_backward_from_taps_fake(
    grad_output, taps, input_size, kernel_size, stride, padding, dilation, ceil_mode, backend="auto"
):
    torch._check(taps.dtype == torch.uint8, lambda: "max_pool2d_backward_from_taps: taps must be uint8")
    return _max_pool2d_backward_fake(grad_output, taps, input_size, kernel_size, stride, padding, dilation,
                                     ceil_mode, backend)


@torch.library.register_fake("fastconv::max_pool2d_backward")
def _max_pool2d_backward_fake(
    grad_output, indices, input_size, kernel_size, stride, padding, dilation, ceil_mode, backend="auto"
):
    torch._check(len(input_size) == 4, lambda: "max_pool2d_backward: input_size must have 4 values")
    torch._check(grad_output.shape == indices.shape, lambda: "max_pool2d_backward: shape mismatch")
    return grad_output.new_empty(input_size)
