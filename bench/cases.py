"""What the runner measures: the layers of the seed CNNs, at the batch sizes that matter.

The layer shapes are read from ``fastconv.models`` itself: each network runs once on the
meta device (no memory, no compute) with hooks that record the input of every Conv2d,
MaxPool2d, ReLU and Dropout. Each distinct shape is kept once, under the first network that
has it, so the cases follow the models if they change. Added to them:

* ``1x1``: a pointwise convolution, 256->256 @28 (a plain GEMM of 784 x 256 x 256 per image);
* ``grouped``: the layers behind conv2d's ``algorithm="auto"`` rule (depthwise 32 @74 and
  128 @36, and 8 input channels per group), at batch 16 only;
* ``overhead``: layers whose kernels take next to no time, so that a call's fixed cost (the
  dispatcher, autograd, the Python layer) is what is measured: relu on 1,000 elements and a
  3->8 3x3 convolution of one 8x8 image, at batch 1 only, conv2d and relu only;
* ``smoke``: tiny layers for the ``simt`` device, which runs the CUDA kernels on the CPU one
  thread at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from fastconv import models

OPS = ("conv2d", "conv2d_relu", "max_pool2d", "relu", "dropout", "model")
# conv2d's dtypes: the CUDA kernels (cuda, simt) take half and bfloat16, the C++ ones do not.
DTYPES = ("float32", "float16", "bfloat16")
DTYPE_LABELS = {"float16": "fp16", "bfloat16": "bf16"}
BATCHES = (1, 16, 32)
QUICK_BATCHES = (1, 16)

# network: (builder, input size). convnet4 and convnet3 take 150x150 images, VGG16 224x224.
NETS: Dict[str, Tuple[Callable[[], nn.Module], int]] = {
    "convnet4": (models.convnet4, 150),
    "convnet3": (models.convnet3, 150),
    "vgg16": (models.vgg16, 224),
}
EXTRA_NETS = ("1x1", "grouped", "overhead")


@dataclass
class Case:
    """One shape of one op at one batch size; the runner times every variant of it."""

    op: str
    net: str
    layer: str                      # the label tables show: "32->64 3x3 @74", "2x2 on 64@72", "64x72x72"
                                    # (dropout adds its p: "6272 p=0.5")
    batch: int
    shape: Tuple[int, ...]          # the input of one image: (C, H, W), or (features,)
    params: Dict[str, object] = field(default_factory=dict)
    dtype: str = "float32"          # the tensors' dtype (the label says so when it is not float32)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (self.batch,) + tuple(self.shape)


@dataclass
class Layer:
    kind: str                       # "conv", "pool", "relu", "dropout"
    net: str
    shape: Tuple[int, ...]
    params: Dict[str, object]

    def key(self) -> tuple:
        return (self.kind, self.shape, tuple(sorted(self.params.items())))

    @property
    def label(self) -> str:
        p = self.params
        if self.kind == "conv":
            c, h, w = self.shape
            k = p["kernel"]
            text = f"{c}->{p['out_channels']} {k}x{k}"
            text += f" p{p['padding']}" if p["padding"] else ""
            text += f" g{p['groups']}" if p["groups"] > 1 else ""
            return text + (f" @{h}" if h == w else f" @{h}x{w}")
        if self.kind == "pool":
            c, h, w = self.shape
            k = p["kernel"]
            return f"{k}x{k} on {c}@{h}" if h == w else f"{k}x{k} on {c}@{h}x{w}"
        text = "x".join(map(str, self.shape))
        return f"{text} p={p['p']:g}" if self.kind == "dropout" else text


def _conv_padding(module: nn.Conv2d) -> int:
    """The module's padding as one int (square kernels; "same" at stride 1 is k // 2, "valid" 0)."""
    if isinstance(module.padding, str):
        return module.kernel_size[0] // 2 if module.padding == "same" else 0
    return int(module.padding[0])


def _describe(net: str, module: nn.Module, shape: Tuple[int, ...]) -> Optional[Layer]:
    if isinstance(module, nn.Conv2d):
        return Layer("conv", net, shape, {"out_channels": module.out_channels, "kernel": module.kernel_size[0],
                                          "stride": module.stride[0], "padding": _conv_padding(module),
                                          "groups": module.groups})
    if isinstance(module, nn.MaxPool2d):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        return Layer("pool", net, shape, {"kernel": k, "stride": s})
    if isinstance(module, nn.ReLU):
        return Layer("relu", net, shape, {})
    if isinstance(module, nn.Dropout):
        return Layer("dropout", net, shape, {"p": module.p})
    return None


def trace(net: str) -> List[Layer]:
    """The Conv2d, MaxPool2d, ReLU and Dropout layers of one seed network, in order, with the
    shape of one image's input to each (a forward on the meta device)."""
    build, size = NETS[net]
    with torch.device("meta"):
        model = build()
    found: List[Layer] = []

    def hook(module, inputs, _output):
        layer = _describe(net, module, tuple(inputs[0].shape[1:]))
        if layer is not None:
            found.append(layer)

    for module in model.modules():
        module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    return found


def seed_layers() -> List[Layer]:
    """Every distinct layer of the seed networks, the 1x1 layer and the grouped layers."""
    layers: Dict[tuple, Layer] = {}
    for net in NETS:
        for layer in trace(net):
            layers.setdefault(layer.key(), layer)
    conv = lambda net, c, cout, size, k=3, padding=0, groups=1: Layer(  # noqa: E731
        "conv", net, (c, size, size), {"out_channels": cout, "kernel": k, "stride": 1, "padding": padding,
                                       "groups": groups})
    extra = [conv("1x1", 256, 256, 28, k=1),
             conv("grouped", 32, 32, 74, groups=32), conv("grouped", 128, 128, 36, groups=128),
             conv("grouped", 64, 64, 36, groups=8)]
    return list(layers.values()) + extra


def overhead_layers() -> List[Layer]:
    """Tiny layers that time a call's fixed cost rather than its kernels."""
    return [Layer("conv", "overhead", (3, 8, 8), {"out_channels": 8, "kernel": 3, "stride": 1, "padding": 0,
                                                  "groups": 1}),
            Layer("relu", "overhead", (1000,), {})]


def smoke_layers() -> List[Layer]:
    """Tiny layers for the simt device."""
    return [Layer("conv", "smoke", (3, 12, 12), {"out_channels": 8, "kernel": 3, "stride": 1, "padding": 0,
                                                 "groups": 1}),
            Layer("conv", "smoke", (8, 8, 8), {"out_channels": 8, "kernel": 3, "stride": 1, "padding": 1,
                                               "groups": 1}),
            Layer("pool", "smoke", (8, 10, 10), {"kernel": 2, "stride": 2}),
            Layer("relu", "smoke", (8, 10, 10), {}),
            Layer("dropout", "smoke", (8, 10, 10), {"p": 0.5})]


# The quick subset: two convnet4 convolutions, VGG16's last, the 1x1 layer; two poolings; two
# activations for relu and dropout each; at batch 1 and 16; the two overhead layers; and the
# whole-model rows.
QUICK_LAYERS = {
    ("conv", "32->64 3x3 @74"), ("conv", "128->128 3x3 @17"), ("conv", "512->512 3x3 p1 @14"),
    ("conv", "256->256 1x1 @28"), ("conv", "3->8 3x3 @8"),
    ("pool", "2x2 on 64@72"), ("pool", "2x2 on 512@14"),
    ("relu", "64x72x72"), ("relu", "4096"), ("relu", "1000"),
    ("dropout", "6272 p=0.5"), ("dropout", "4096 p=0.5"),
}

# Which layers each op runs on.
_OP_KIND = {"conv2d": "conv", "conv2d_relu": "conv", "max_pool2d": "pool", "relu": "relu", "dropout": "dropout"}

def _runs(op: str, layer: Layer, batch: int) -> bool:
    """Whether ``op`` runs on ``layer`` at ``batch``. The grouped layers run at batch 16 only, and
    not fused (they back conv2d's "auto" rule; no ReLU follows them); the overhead layers at
    batch 1 only, and not fused either."""
    if op == "conv2d_relu" and layer.net in ("grouped", "overhead"):
        return False
    if layer.net == "overhead":
        return batch == 1
    if layer.net == "grouped":
        return batch == 16
    return True


MODEL_CASES = [
    Case("model", "convnet4", "convnet4 train step", 32, (3, 150, 150), {"mode": "step"}),
    Case("model", "convnet4", "convnet4 inference", 1, (3, 150, 150), {"mode": "infer"}),
]


def select(device: str = "cpu", quick: bool = False, only: Optional[Sequence[str]] = None,
           batches: Optional[Iterable[int]] = None, nets: Optional[Sequence[str]] = None,
           dtypes: Sequence[str] = ("float32",)) -> List[Case]:
    """The cases of one run, in order: by op, then layer, then batch size.

    ``only`` keeps those ops, ``batches`` those batch sizes, ``nets`` the layers of those networks
    (``convnet4``, ``convnet3``, ``vgg16``, ``1x1``, ``grouped``). ``quick`` keeps a subset that
    runs in a couple of minutes; the ``simt`` device gets the tiny smoke layers instead.
    ``dtypes``: conv2d runs in each (half precision on the CUDA kernels only); the other ops in
    float32.
    """
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
        if dtype != "float32" and device == "cpu":
            raise ValueError(f"the cpu kernels take float32 and float64, not {dtype}: use --device cuda or simt")
    ops = [op for op in OPS if not only or op in only]
    smoke = device == "simt"
    layers = smoke_layers() if smoke else seed_layers() + overhead_layers()
    default_batches = (1, 2) if smoke else QUICK_BATCHES if quick else BATCHES
    wanted = set(batches) if batches else None
    cases: List[Case] = []
    for op in ops:
        if op == "model":
            if not smoke:
                cases += [c for c in MODEL_CASES
                          if (wanted is None or c.batch in wanted) and (not nets or c.net in nets)]
            continue
        for layer in layers:
            if layer.kind != _OP_KIND[op] or (nets and layer.net not in nets):
                continue
            if quick and not smoke and (layer.kind, layer.label) not in QUICK_LAYERS:
                continue
            for batch in (sorted(wanted) if wanted is not None else default_batches):
                if not (smoke or _runs(op, layer, batch)):
                    continue
                for dtype in (dtypes if op == "conv2d" else ("float32",)):
                    label = layer.label + (f" {DTYPE_LABELS[dtype]}" if dtype in DTYPE_LABELS else "")
                    cases.append(Case(op, layer.net, label, batch, layer.shape, dict(layer.params), dtype))
    return cases
