"""Checkpoints that carry everything needed to rebuild a model and its preprocessing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .models import MODELS


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    if name == "vgg16":
        return MODELS[name](num_classes=num_classes)
    return MODELS[name](num_classes=num_classes, image_size=image_size)


def save(path: Path, model: nn.Module, meta: Dict[str, Any], **extra: Any) -> None:
    """Write ``model``'s weights with ``meta`` (model name, num_classes, image_size, classes)."""
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    torch.save({"state_dict": module.state_dict(), "meta": meta, **extra}, path)


def load(path: str | Path, map_location: str | torch.device = "cpu",
         weights_only: bool = False) -> Tuple[nn.Module, Dict[str, Any], Dict]:
    """(model in eval mode, meta, the whole checkpoint dict) from a file written by :func:`save`
    or :func:`export_weights` (float16 weights load into the float32 model). Training
    checkpoints hold random-number-generator states, which need ``weights_only=False``: load
    only files you trust."""
    ckpt = torch.load(path, map_location=map_location, weights_only=weights_only)
    meta = ckpt["meta"]
    model = build_model(meta["model"], meta["num_classes"], meta["image_size"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), meta, ckpt


# Models shipped with the package: name -> file under fastconv/weights/ (package data), each
# written by export_weights and documented in docs/results/.
PRETRAINED: Dict[str, str] = {"cats-vs-dogs": "cats_vs_dogs.pt"}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def pretrained_path(name: str) -> Path:
    """The file of shipped model ``name``; ValueError for an unknown name, FileNotFoundError when
    this installation lacks the file."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; choose from {sorted(PRETRAINED)}")
    path = WEIGHTS_DIR / PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(f"the weights of pretrained model {name!r} are not in this installation ({path})")
    return path


def load_pretrained(name: str, map_location: str | torch.device = "cpu") -> Tuple[nn.Module, Dict[str, Any], Dict]:
    """:func:`load` for a shipped model, by name (see :data:`PRETRAINED`)."""
    return load(pretrained_path(name), map_location, weights_only=True)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The command lines' model source: ``--checkpoint FILE`` or ``--pretrained NAME``, exactly one."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint written by fastconv.train")
    source.add_argument("--pretrained", choices=sorted(PRETRAINED), help="a model shipped with fastconv")


def load_source(checkpoint: Optional[str], pretrained: Optional[str],
                map_location: str | torch.device = "cpu") -> Tuple[nn.Module, Dict[str, Any], Dict]:
    """The command lines' model: a checkpoint file or a shipped model's name (exactly one)."""
    if (checkpoint is None) == (pretrained is None):
        raise ValueError("give exactly one of a checkpoint and a pretrained model name")
    return load(checkpoint, map_location) if checkpoint is not None else load_pretrained(pretrained, map_location)


def export_weights(checkpoint: str | Path, path: str | Path, half: bool = True, **record: Any) -> Path:
    """Writes the weights and meta of a training checkpoint (no optimizer state), its parameters
    in float16 with ``half`` (buffers such as BatchNorm's running statistics stay as they are),
    plus ``record`` (e.g. the validation accuracy it reaches) in its meta: the format the shipped
    models use."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = ckpt["meta"]
    parameters = {name for name, _ in build_model(meta["model"], meta["num_classes"],
                                                  meta["image_size"]).named_parameters()}
    state = {k: (v.half() if half and k in parameters and v.is_floating_point() else v)
             for k, v in ckpt["state_dict"].items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": {**ckpt["meta"], **record}}, path)
    return path


def predict_proba(model: nn.Module, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """Class probabilities (N, classes) from a one-logit (sigmoid) or multi-logit (softmax) head.
    With ``flip`` (test-time augmentation), the mean of the probabilities of each image and its
    mirror image."""
    if flip:
        return (predict_proba(model, images) + predict_proba(model, torch.flip(images, dims=[3]))) / 2
    logits = model(images)
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)
