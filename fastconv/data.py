"""Cats-vs-dogs data: folder layouts, robust image loading, the seeds' augmentation and a
synthetic two-class demo set.

Supported layouts of ``--data DIR``:

* split:  ``DIR/train/<class>/*.jpg`` and ``DIR/validation/<class>/*.jpg`` (``val/`` works too);
* class folders without a split: ``DIR/<class>/*.jpg``, split by ``val_fraction``;
* flat Kaggle names: ``DIR/cat.123.jpg``, ``DIR/dog.45.jpg``, split by ``val_fraction``.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
Sample = Tuple[Path, int]


@dataclass
class Splits:
    """Labelled file lists of one data folder."""

    classes: List[str]
    train: List[Sample]
    val: List[Sample]
    layout: str


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(root: Path) -> List[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _labelled(root: Path, classes: Sequence[str]) -> List[Sample]:
    return [(path, i) for i, name in enumerate(classes) for path in _images(root / name)]


def _split(samples: List[Sample], val_fraction: float, seed: int) -> Tuple[List[Sample], List[Sample]]:
    shuffled = samples[:]
    random.Random(seed).shuffle(shuffled)
    n_val = int(round(len(shuffled) * val_fraction))
    return shuffled[n_val:], shuffled[:n_val]


def discover(root: str | Path, val_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Find the layout of ``root`` and list its labelled images (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    val_dir = next((root / n for n in ("validation", "val", "valid") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        classes = _class_folders(root / "train")
        return Splits(classes, _labelled(root / "train", classes), _labelled(val_dir, classes), "split")
    classes = _class_folders(root)
    if classes:
        train, val = _split(_labelled(root, classes), val_fraction, seed)
        return Splits(classes, train, val, "class-folders")
    # Kaggle names: "<class>.<id>.jpg".
    files = _images(root)
    names = sorted({p.name.split(".")[0].lower() for p in files if p.name.count(".") >= 2})
    if not names:
        raise ValueError(f"no labelled images found in {root}: expected train/ and validation/ "
                         "folders, class folders, or files named like cat.1.jpg")
    classes = [n + "s" if not n.endswith("s") else n for n in names]  # cat -> cats, as the folders say
    index = {n: i for i, n in enumerate(names)}
    samples = [(p, index[p.name.split(".")[0].lower()]) for p in files if p.name.count(".") >= 2]
    train, val = _split(samples, val_fraction, seed)
    return Splits(classes, train, val, "flat")


def drop_unreadable(samples: List[Sample]) -> List[Sample]:
    """Keep the images Pillow can decode; warn once with the count of those skipped."""
    good, bad = [], 0
    for path, label in samples:
        try:
            with Image.open(path) as image:
                image.verify()
            good.append((path, label))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            bad += 1
    if bad:
        warnings.warn(f"skipped {bad} unreadable or truncated image file(s)", stacklevel=2)
    return good


def load_rgb(path: Path) -> Image.Image:
    """Decode an image as 3-channel RGB (grey, palette, CMYK and alpha images are converted)."""
    with Image.open(path) as image:
        return image.convert("RGB")


class ImageFiles(Dataset):
    """(image tensor, label) pairs from labelled files."""

    def __init__(self, samples: List[Sample], transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(load_rgb(path)), label


def _resize(image_size: int) -> Callable:
    return transforms.Resize((image_size, image_size))


def _after_resize(augment: bool) -> Callable:
    """What follows the resize: the seeds' augmentation when ``augment`` (rotation up to 40
    degrees, shifts up to 20%, shear 0.2 (radians, as Keras' shear_range), zoom 0.2, horizontal
    flip), then pixels scaled to [0, 1]."""
    if not augment:
        return transforms.ToTensor()
    return transforms.Compose([
        transforms.RandomAffine(degrees=40, translate=(0.2, 0.2), scale=(0.8, 1.2),
                                shear=11.46, fill=0),  # 0.2 rad = 11.46 degrees
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])


def eval_transform(image_size: int) -> Callable:
    """Resize to a square and scale pixels to [0, 1], as the seeds' ImageDataGenerator(rescale=1/255)."""
    return transforms.Compose([_resize(image_size), _after_resize(False)])


def train_transform(image_size: int, augment: bool) -> Callable:
    """Resize to a square, then the seeds' augmentation (see ``_after_resize``) when ``augment``."""
    return transforms.Compose([_resize(image_size), _after_resize(augment)])


class _ResizedFiles(Dataset):
    """Decoded, resized images as uint8 arrays [H, W, 3]: the work :class:`DecodedImages` does once."""

    def __init__(self, samples: List[Sample], image_size: int) -> None:
        self.samples, self.resize = samples, _resize(image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return torch.from_numpy(np.asarray(self.resize(load_rgb(self.samples[index][0]))).copy())


class DecodedImages(Dataset):
    """(image tensor, label) pairs like :class:`ImageFiles` with :func:`train_transform`, but each
    file is decoded and resized once, up front, and kept in memory (image_size^2 * 3 bytes an
    image: 200 MB for 3,000 images at 150x150); each epoch then only augments. Items are the
    same as ImageFiles' under the same random state: the cached image is exactly what the first
    step of the transform makes."""

    def __init__(self, samples: List[Sample], image_size: int, augment: bool, workers: int = 0,
                 desc: str = "decoding images", progress: bool = True) -> None:
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        self.labels = [label for _, label in samples]
        self.after_resize = _after_resize(augment)
        self.pixels = torch.empty(len(samples), image_size, image_size, 3, dtype=torch.uint8)
        # Its own generator: a loader draws a seed, which must not move torch's global one (the
        # run would then depend on whether photos are cached).
        loader = DataLoader(_ResizedFiles(samples, image_size), batch_size=32, num_workers=workers,
                            generator=torch.Generator())
        at = 0
        for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not progress):
            self.pixels[at:at + len(batch)] = batch
            at += len(batch)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.after_resize(Image.fromarray(self.pixels[index].numpy())), self.labels[index]


class SyntheticStripes(Dataset):
    """A deterministic two-class image set for demos and tests (clearly not photos).

    Class 0 ("horizontal") shows horizontal stripes, class 1 ("vertical") vertical ones, each
    with a random period, phase and colour over a noisy background, so a small CNN learns it in
    an epoch or two. Image ``i`` depends only on ``(seed, i)``.
    """

    classes = ["horizontal", "vertical"]

    def __init__(self, n: int, image_size: int = 64, seed: int = 0) -> None:
        self.n, self.image_size, self.seed = n, image_size, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        s = self.image_size
        label = index % 2
        period = 4 + 8 * torch.rand(1, generator=g).item()
        phase = period * torch.rand(1, generator=g).item()
        coords = torch.arange(s, dtype=torch.float32)
        wave = (torch.sin(2 * math.pi * (coords + phase) / period) > 0).float()
        pattern = wave[:, None].expand(s, s) if label == 0 else wave[None, :].expand(s, s)
        colour = 0.4 + 0.6 * torch.rand(3, 1, 1, generator=g)
        image = 0.35 * torch.rand(3, s, s, generator=g) + 0.65 * colour * pattern
        return image.clamp(0, 1), label


def build_datasets(data: Optional[str], image_size: int, augment: bool, limit: Optional[int] = None,
                   val_fraction: float = 0.2, seed: int = 0, cache: bool = False, workers: int = 0,
                   progress: bool = True):
    """(train set, validation set, class names, description) for a data folder, or the synthetic
    demo set when ``data`` is None. ``cache`` decodes and resizes every photo once, up front
    (with ``workers`` processes), into memory (:class:`DecodedImages`)."""
    if data is None:
        n_train, n_val = (limit or 512), max(64, (limit or 512) // 4)
        return (SyntheticStripes(n_train, image_size, seed), SyntheticStripes(n_val, image_size, seed + 1),
                SyntheticStripes.classes,
                f"SYNTHETIC demo data: {n_train} train / {n_val} validation generated images (not photos)")
    splits = discover(data, val_fraction, seed)
    train, val = splits.train, splits.val
    if limit is not None:
        rng = random.Random(seed)
        train = rng.sample(train, min(limit, len(train)))
        val = rng.sample(val, min(limit, len(val)))
    train, val = drop_unreadable(train), drop_unreadable(val)
    description = (f"{data} ({splits.layout} layout): {len(train)} train / {len(val)} validation images, "
                   f"classes {splits.classes}")
    if cache:
        return (DecodedImages(train, image_size, augment, workers, "decoding training images", progress),
                DecodedImages(val, image_size, False, workers, "decoding validation images", progress),
                splits.classes, description + " (decoded once, kept in memory)")
    return (ImageFiles(train, train_transform(image_size, augment)),
            ImageFiles(val, eval_transform(image_size)), splits.classes, description)
