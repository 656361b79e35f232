"""Accuracy, per-class accuracy and confusion matrix of a checkpoint on an image folder.

    python -m fastconv.evaluate --checkpoint runs/latest/best.pt --data DIR [--json] [--flip]
    python -m fastconv.evaluate --pretrained cats-vs-dogs --data DIR --json

For a split layout the validation split is used; for class folders or Kaggle-named files
without a split, every image.
"""

from __future__ import annotations

import argparse
import json
from typing import Dict, List, Optional

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import checkpoint
from .data import ImageFiles, discover, drop_unreadable, eval_transform


def evaluate(ckpt_path: Optional[str], data: str, batch_size: int = 32, workers: int = 2,
             device: str = "cpu", progress: bool = True, pretrained: Optional[str] = None,
             flip: bool = False) -> Dict:
    """Accuracy of a checkpoint (or of the shipped model ``pretrained``) on ``data``; ``flip``
    averages each image's prediction with its mirror image's (test-time augmentation)."""
    model, meta, _ = checkpoint.load_source(ckpt_path, pretrained, map_location=device)
    model.to(device)
    splits = discover(data, val_fraction=0.0)
    samples = splits.val if splits.layout == "split" else splits.train + splits.val
    if splits.classes != meta["classes"]:
        raise ValueError(f"the folder's classes {splits.classes} differ from the model's {meta['classes']}")
    samples = drop_unreadable(samples)
    loader = DataLoader(ImageFiles(samples, eval_transform(meta["image_size"])), batch_size=batch_size,
                        num_workers=workers)
    k = len(meta["classes"])
    confusion = torch.zeros(k, k, dtype=torch.long)
    with torch.no_grad():
        for images, labels in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            predicted = checkpoint.predict_proba(model, images.to(device), flip).argmax(1).cpu()
            for t, p in zip(labels.tolist(), predicted.tolist()):
                confusion[t, p] += 1
    n = int(confusion.sum())
    per_class = {name: (confusion[i, i].item() / max(1, int(confusion[i].sum())))
                 for i, name in enumerate(meta["classes"])}
    return {"accuracy": confusion.diag().sum().item() / max(n, 1), "n": n, "per_class_accuracy": per_class,
            "classes": meta["classes"], "confusion_matrix": confusion.tolist(), "flip": flip}


def main(argv: Optional[List[str]] = None) -> Dict:
    p = argparse.ArgumentParser(prog="python -m fastconv.evaluate", description=__doc__.split("\n\n")[0])
    checkpoint.add_source_arguments(p)
    p.add_argument("--data", required=True)
    p.add_argument("--flip", action="store_true", help="test-time augmentation: average with the mirror image")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    result = evaluate(args.checkpoint, args.data, args.batch_size, args.workers, args.device,
                      progress=not args.json, pretrained=args.pretrained, flip=args.flip)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accuracy {result['accuracy']:.4f} on {result['n']} images")
        for name, acc in result["per_class_accuracy"].items():
            print(f"  {name:>10}: {acc:.4f}")
        print("confusion matrix (rows: true, columns: predicted):")
        for name, row in zip(result["classes"], result["confusion_matrix"]):
            print(f"  {name:>10}: {row}")
    return result


if __name__ == "__main__":
    main()
