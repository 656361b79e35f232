"""The seed networks, built from fastconv layers.

* :func:`convnet4` — the classic 150x150 cats-vs-dogs CNN (four conv blocks, one logit).
* :func:`convnet4_bn` — convnet4 with batch normalisation after each convolution.
* :func:`convnet3` — a smaller three-block CNN with "same" padding and two logits.
* :func:`vgg16` — VGG16 (configuration D), loading torchvision's ``vgg16`` state_dict unchanged.
"""

from __future__ import annotations

import copy
import inspect
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import nn as fnn

Size = Union[int, Tuple[int, int]]


def _pair(size: Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _conv_block(in_channels: int, out_channels: int, padding: Union[int, str],
                batch_norm: bool = False) -> List[nn.Module]:
    if batch_norm:  # the normalisation's shift makes the convolution's bias redundant
        return [fnn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                nn.BatchNorm2d(out_channels), fnn.ReLU(inplace=True), fnn.MaxPool2d(2)]
    return [fnn.Conv2d(in_channels, out_channels, 3, padding=padding), fnn.ReLU(inplace=True),
            fnn.MaxPool2d(2)]


def _pretrained(builder: str, name: str, num_classes: int, image_size: Size) -> nn.Module:
    """The shipped model ``name`` (fastconv.checkpoint.PRETRAINED), which must be a ``builder``
    network with ``num_classes`` outputs for ``image_size`` images; returned in training mode, as
    torchvision returns its pretrained models."""
    from .checkpoint import load_pretrained  # checkpoint builds models: import it late

    model, meta, _ = load_pretrained(name)
    if meta["model"] != builder:
        raise ValueError(f"pretrained model {name!r} is a {meta['model']}, not a {builder}; "
                         f"use fastconv.models.{meta['model']}(pretrained={name!r})")
    if num_classes != meta["num_classes"] or _pair(image_size) != _pair(meta["image_size"]):
        raise ValueError(f"pretrained model {name!r} has {meta['num_classes']} output(s) for "
                         f"{meta['image_size']}x{meta['image_size']} images, not num_classes={num_classes}, "
                         f"image_size={image_size}")
    return model.train()


def _features_out(features: nn.Module, channels: int, image_size: Size) -> int:
    """Flattened size of ``features`` on one image, found with a meta-device forward (no compute)."""
    h, w = _pair(image_size)
    too_small = ValueError(f"image size {image_size} is too small for this network")
    try:
        # A meta copy: its parameters and buffers (BatchNorm's statistics) must be on meta too.
        out = copy.deepcopy(features).to("meta")(torch.empty(1, channels, h, w, device="meta"))
    except RuntimeError as error:  # a layer's output size went below one pixel
        raise too_small from error
    if out.numel() == 0:
        raise too_small
    return out.numel()


def _convnet4(num_classes: int, image_size: Size, batch_norm: bool) -> nn.Sequential:
    features = nn.Sequential(*_conv_block(3, 32, 0, batch_norm), *_conv_block(32, 64, 0, batch_norm),
                             *_conv_block(64, 128, 0, batch_norm), *_conv_block(128, 128, 0, batch_norm))
    flat = _features_out(features, 3, image_size)
    return nn.Sequential(*features, nn.Flatten(), fnn.Dropout(0.5), nn.Linear(flat, 512),
                         fnn.ReLU(inplace=True), nn.Linear(512, num_classes))


def convnet4(num_classes: int = 1, image_size: Size = 150, pretrained: Optional[str] = None) -> nn.Sequential:
    """Four blocks of 3x3 conv (32, 64, 128, 128 channels, no padding) + ReLU + 2x2 max pooling,
    then flatten, Dropout(0.5), Linear(512) + ReLU and a linear head with ``num_classes`` outputs
    (one logit for binary classification with ``BCEWithLogitsLoss``). ``pretrained`` names a
    shipped model of this architecture (its class count and image size then come with it)."""
    if pretrained is not None:
        return _pretrained("convnet4", pretrained, num_classes, image_size)
    return _convnet4(num_classes, image_size, batch_norm=False)


def convnet4_bn(num_classes: int = 1, image_size: Size = 150, pretrained: Optional[str] = None) -> nn.Sequential:
    """:func:`convnet4` with ``torch.nn.BatchNorm2d`` between each convolution (then without
    bias) and its ReLU; convolutions, ReLUs, pooling and dropout stay fastconv's."""
    if pretrained is not None:
        return _pretrained("convnet4_bn", pretrained, num_classes, image_size)
    return _convnet4(num_classes, image_size, batch_norm=True)


def convnet3(num_classes: int = 2, image_size: Size = 150, pretrained: Optional[str] = None) -> nn.Sequential:
    """Three blocks of 3x3 conv (32, 32, 64 channels, "same" padding) + ReLU + 2x2 max pooling,
    Dropout(0.25), flatten, Linear(64) + ReLU, Dropout(0.5) and a linear head."""
    if pretrained is not None:
        return _pretrained("convnet3", pretrained, num_classes, image_size)
    features = nn.Sequential(*_conv_block(3, 32, "same"), *_conv_block(32, 32, "same"),
                             *_conv_block(32, 64, "same"))
    flat = _features_out(features, 3, image_size)
    return nn.Sequential(*features, fnn.Dropout(0.25), nn.Flatten(), nn.Linear(flat, 64),
                         fnn.ReLU(inplace=True), fnn.Dropout(0.5), nn.Linear(64, num_classes))


# Configuration D of Simonyan & Zisserman: channel counts, "M" for 2x2 max pooling.
_VGG16_CONFIG: Sequence[Union[int, str]] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                            512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG16 with the module layout of ``torchvision.models.vgg16`` (``features``, ``avgpool``,
    ``classifier``), so its ``state_dict`` — pretrained weights included — loads unchanged."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        channels = 3
        for item in _VGG16_CONFIG:
            if item == "M":
                layers.append(fnn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [fnn.Conv2d(channels, int(item), 3, padding=1), fnn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), fnn.ReLU(True), fnn.Dropout(dropout),
            nn.Linear(4096, 4096), fnn.ReLU(True), fnn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16(num_classes: int = 1000, dropout: float = 0.5) -> VGG16:
    """VGG16 (configuration D) on fastconv layers; accepts any input of at least 32x32."""
    return VGG16(num_classes, dropout)


MODELS = {"convnet4": convnet4, "convnet4_bn": convnet4_bn, "convnet3": convnet3, "vgg16": vgg16}


def num_outputs(name: str, classes: int) -> int:
    """The head size that model ``name`` gets for ``classes`` classes: one logit for two classes
    where its builder's default head is one logit (convnet4 and convnet4_bn, trained with
    BCEWithLogitsLoss as the seeds were), else one output per class."""
    one_logit = inspect.signature(MODELS[name]).parameters["num_classes"].default == 1
    return 1 if one_logit and classes == 2 else classes
