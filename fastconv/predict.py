"""Classify images with a trained checkpoint.

    python -m fastconv.predict --checkpoint runs/latest/best.pt cat.jpg dog.jpg
    python -m fastconv.predict --pretrained cats-vs-dogs photo.jpg
"""

from __future__ import annotations

import argparse
from typing import List, Optional, Tuple

import torch

from . import checkpoint
from .data import eval_transform, load_rgb


def predict(ckpt_path: Optional[str], images: List[str], device: str = "cpu", pretrained: Optional[str] = None,
            flip: bool = False) -> List[Tuple[str, str, float]]:
    """(path, predicted class, its probability) for each image, from a checkpoint or the shipped
    model ``pretrained``; ``flip`` averages with the mirror image (test-time augmentation)."""
    model, meta, _ = checkpoint.load_source(ckpt_path, pretrained, map_location=device)
    model.to(device)
    transform = eval_transform(meta["image_size"])
    batch = torch.stack([transform(load_rgb(path)) for path in images]).to(device)
    with torch.no_grad():
        probs = checkpoint.predict_proba(model, batch, flip).cpu()
    best = probs.argmax(1)
    return [(path, meta["classes"][i], probs[row, i].item()) for row, (path, i) in enumerate(zip(images, best.tolist()))]


def main(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(prog="python -m fastconv.predict", description=__doc__.split("\n\n")[0])
    checkpoint.add_source_arguments(p)
    p.add_argument("--flip", action="store_true", help="test-time augmentation: average with the mirror image")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("images", nargs="+")
    args = p.parse_args(argv)
    results = predict(args.checkpoint, args.images, args.device, args.pretrained, args.flip)
    for path, name, prob in results:
        print(f"{path}: {name} ({prob:.3f})")
    return results


if __name__ == "__main__":
    main()
