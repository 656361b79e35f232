"""Train a cats-vs-dogs CNN on fastconv's kernels.

    python -m fastconv.train                                   # synthetic demo data, under a minute
    python -m fastconv.train --data ../shared/data/cats_and_dogs_filtered --epochs 30
    torchrun --nproc_per_node=2 -m fastconv.train --data DIR    # DistributedDataParallel

Writes into --out: history.json (per epoch: training and validation loss and accuracy, seconds,
and lr, the learning rate after the epoch's last step), curves.png, best.pt (lowest validation
loss) and last.pt. Ctrl-C stops after the current batch and saves last.pt (an epoch cut short is
not counted, so --resume runs it again in full); --resume continues a run from last.pt, with the
settings its learning-rate schedule was built from.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from . import checkpoint
from .data import build_datasets
from .models import MODELS, num_outputs
from .plots import plot_history


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fastconv-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", help="image folder (see fastconv.data); omit for the synthetic demo set")
    p.add_argument("--model", default="convnet4", choices=sorted(MODELS))
    p.add_argument("--image-size", type=int, default=None, help="default 150 (64 for the demo set)")
    p.add_argument("--epochs", type=int, default=None, help="default 30 (5 for the demo set)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "rmsprop"])
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (adam), 1e-2 (sgd), 1e-4 (rmsprop)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine", "onecycle"],
                   help="learning rate per batch: constant; cosine decay towards 0 after --warmup-epochs of "
                        "linear warm-up; or one-cycle (torch's OneCycleLR with peak --lr, which also cycles "
                        "SGD's momentum and Adam's beta1 between 0.95 and 0.85; not RMSprop's)")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up for --schedule cosine")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="targets move this far towards uniform (0 and 1 become eps/2 and 1 - eps/2)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cache-images", action=argparse.BooleanOptionalAction, default=True,
                   help="decode and resize each photo once, into memory (image-size^2 * 3 bytes a photo), "
                        "so that epochs only augment")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", default=None,
                   help="stop after PATIENCE epochs without a lower validation loss")
    p.add_argument("--limit", type=int, default=None, help="use at most N images per split")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="autocast to float16 on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/latest")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a last.pt")
    args = p.parse_args(argv)
    demo = args.data is None
    args.image_size = args.image_size or (64 if demo else 150)
    args.epochs = args.epochs if args.epochs is not None else (5 if demo else 30)
    args.lr = args.lr or {"adam": 1e-3, "sgd": 1e-2, "rmsprop": 1e-4}[args.optimizer]
    if args.amp and args.device != "cuda":
        p.error("--amp needs --device cuda")
    if not 0.0 <= args.label_smoothing < 1.0:
        p.error("--label-smoothing must be in [0, 1)")
    if args.warmup_epochs and args.schedule != "cosine":
        p.error("--warmup-epochs goes with --schedule cosine")
    if not 0.0 <= args.warmup_epochs < max(args.epochs, 1):
        p.error("--warmup-epochs must be at least 0 and less than --epochs")
    return args


class Distributed:
    """Rank bookkeeping for torchrun; a single process is rank 0 of 1."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device("cuda", self.local_rank) if device == "cuda" else torch.device("cpu")
        if self.world > 1:
            if device == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if device == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: List[float]) -> List[float]:
        """Element-wise sum over ranks (NCCL reduces CUDA tensors only, gloo CPU ones)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (so all ranks stop at the same batch)."""
        return self.sum([float(flag)])[0] > 0

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()


def make_optimizer(args, params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)


def make_schedule(args, optimizer, steps_per_epoch: int):
    """The per-batch learning-rate schedule of ``--schedule`` (None for a constant rate)."""
    total = max(1, args.epochs * steps_per_epoch)
    if args.schedule == "onecycle":
        # RMSprop's momentum is 0 by default: cycling it would switch momentum on.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total,
                                                   cycle_momentum=args.optimizer != "rmsprop")
    if args.schedule == "cosine":
        warmup = int(args.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


# What the learning-rate schedule is made from: a resumed run must keep them.
SCHEDULE_ARGS = ("schedule", "epochs", "lr", "warmup_epochs", "batch_size", "limit", "optimizer")


def check_schedule_unchanged(args, saved_args: Dict) -> None:
    """A scheduled run resumes only with the settings its schedule was built from (the schedule
    is rebuilt from them, then moved on to where the run stopped)."""
    if args.schedule == "constant" and saved_args.get("schedule", "constant") == "constant":
        return  # a constant rate: more epochs, or another --lr, simply apply from here on
    changed = [f"--{k.replace('_', '-')} {saved_args.get(k)!r} -> {getattr(args, k)!r}"
               for k in SCHEDULE_ARGS if saved_args.get(k) != getattr(args, k)]
    if changed:
        raise ValueError("--resume with a learning-rate schedule needs the settings it started with; changed: "
                         + ", ".join(changed))


def fast_forward(schedule, steps: int) -> None:
    """Moves a fresh schedule to where ``steps`` finished batches left it. Resuming this way,
    rather than from a saved state, keeps it on whole epochs: an epoch cut short by Ctrl-C runs
    again in full, and its batches must not count twice."""
    if schedule is None:
        return
    with warnings.catch_warnings():  # stepping a schedule without optimizer steps is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            schedule.step()


def loss_and_correct(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0):
    """Summed loss and number of correct predictions for a one-logit or multi-logit head, with
    targets smoothed by ``smoothing`` (torch's rule for cross-entropy, its two-class twin for BCE)."""
    if logits.shape[1] == 1:
        targets = labels.float() * (1 - smoothing) + smoothing / 2
        loss = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], targets, reduction="sum")
        correct = ((logits[:, 0] > 0).long() == labels).sum()
    else:
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum", label_smoothing=smoothing)
        correct = (logits.argmax(1) == labels).sum()
    return loss, correct


class StopRequest:
    """Ctrl-C sets a flag; the epoch in progress finishes its current batch and training stops."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C aborts at once
            signal.signal(signal.SIGINT, self._previous)
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this batch (Ctrl-C again to abort)...", file=sys.stderr)

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


def run_epoch(model, loader, device, ranks: Distributed, optimizer=None, desc="", amp=False, stop=None,
              scaler=None, schedule=None, smoothing: float = 0.0):
    """One pass over ``loader``; trains when an optimizer is given.

    Returns (mean loss, accuracy, completed): ``completed`` is False when a stop request
    (Ctrl-C) ended the pass early."""
    training = optimizer is not None
    model.train(training)
    total_loss, total_correct, total_n = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not ranks.main, dynamic_ncols=True)
    with torch.set_grad_enabled(training):
        for images, labels in bar:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                logits = model(images)
            loss, correct = loss_and_correct(logits.float(), labels, smoothing if training else 0.0)
            if training:
                optimizer.zero_grad(set_to_none=True)
                # The scaler keeps small float16 gradients from underflowing under --amp; disabled,
                # it passes the loss and the step through unchanged.
                scaler.scale(loss / len(labels)).backward()
                scaler.step(optimizer)
                scaler.update()
                if schedule is not None:
                    schedule.step()
            total_loss += loss.item()
            total_correct += int(correct)
            total_n += len(labels)
            bar.set_postfix(loss=f"{total_loss / total_n:.4f}", acc=f"{total_correct / total_n:.3f}")
            if stop is not None and ranks.any(stop.requested):
                completed = False
                break
        else:
            completed = True
    loss_sum, correct_sum, n = ranks.sum([total_loss, total_correct, total_n])
    return loss_sum / max(n, 1), correct_sum / max(n, 1), completed


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    ranks = Distributed(args.device)
    device = ranks.device
    random.seed(args.seed)
    torch.manual_seed(args.seed + ranks.rank)

    train_set, val_set, classes, description = build_datasets(
        args.data, args.image_size, args.augment, args.limit, args.val_fraction, args.seed, args.cache_images,
        args.workers, progress=ranks.main)
    if ranks.main:
        print(f"data: {description}")
    train_sampler = DistributedSampler(train_set, seed=args.seed) if ranks.world > 1 else None
    if ranks.world > 1:  # a plain shard: DistributedSampler would pad it with repeated images
        val_set = Subset(val_set, range(ranks.rank, len(val_set), ranks.world))
    # Workers are not persistent: each epoch reseeds them from the loader's generator, whose state
    # the checkpoints keep, so a resumed run draws the same shuffles and augmentations.
    loader_args = dict(batch_size=args.batch_size, num_workers=args.workers, pin_memory=device.type == "cuda")
    loader_rng = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_set, shuffle=train_sampler is None, sampler=train_sampler,
                              generator=loader_rng, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)

    num_classes = num_outputs(args.model, len(classes))
    meta = {"model": args.model, "num_classes": num_classes, "image_size": args.image_size,
            "classes": classes, "preprocessing": "resize to image_size x image_size, RGB, pixels / 255"}
    model = checkpoint.build_model(args.model, num_classes, args.image_size).to(device)
    optimizer = make_optimizer(args, model.parameters())
    schedule = make_schedule(args, optimizer, len(train_loader))
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
    history: List[Dict] = []
    start_epoch, best_loss, stale = 0, math.inf, 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location=device, weights_only=False)
        check_schedule_unchanged(args, ckpt.get("args", {}))
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        best_loss, stale = ckpt["best_loss"], ckpt["stale"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        loader_rng.set_state(ckpt["rng"]["loader"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        if ranks.world > 1:  # the checkpoint holds rank 0's generator: give each rank its own again
            torch.manual_seed(args.seed + ranks.rank + 1000 * start_epoch)
        fast_forward(schedule, start_epoch * len(train_loader))
        if ranks.main:
            print(f"resumed from {args.resume} after epoch {start_epoch}")
    if ranks.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    out = Path(args.out)
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    stop = StopRequest()
    try:
        def save(epochs_done: int, improved: bool = False) -> None:
            state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "history": history,
                     "epoch": epochs_done, "best_loss": best_loss, "stale": stale, "args": vars(args),
                     "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "loader": loader_rng.get_state(),
                             "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}}
            if improved:
                checkpoint.save(out / "best.pt", model, meta, **state)
            checkpoint.save(out / "last.pt", model, meta, **state)

        for epoch in range(start_epoch, args.epochs):
            if train_sampler is not None:
                train_sampler.set_epoch(epoch)
            began = time.perf_counter()
            label = f"epoch {epoch + 1}/{args.epochs}"
            train_loss, train_acc, completed = run_epoch(model, train_loader, device, ranks, optimizer,
                                                         f"{label} train", args.amp, stop, scaler, schedule,
                                                         args.label_smoothing)
            if not completed:
                # Ctrl-C mid-epoch: keep the weights, but count only finished epochs, so that
                # --resume runs this epoch again in full.
                if ranks.main:
                    save(epoch)
                    print(f"interrupted during {label}: saved {out / 'last.pt'} after {epoch} finished "
                          f"epoch(s); continue with --resume {out / 'last.pt'}")
                break
            val_loss, val_acc, _ = run_epoch(model, val_loader, device, ranks, None, f"{label} val", args.amp)
            seconds = time.perf_counter() - began
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                            "val_loss": val_loss, "val_acc": val_acc, "seconds": seconds,
                            "lr": optimizer.param_groups[0]["lr"]})
            improved = val_loss < best_loss
            best_loss, stale = (val_loss, 0) if improved else (best_loss, stale + 1)
            if ranks.main:
                print(f"{label}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                      f"val loss {val_loss:.4f} acc {val_acc:.4f} | {seconds:.1f}s"
                      + (" (best)" if improved else ""), flush=True)
                save(epoch + 1, improved)
                (out / "history.json").write_text(json.dumps(history, indent=2))
                plot_history(history, out / "curves.png")
            if ranks.any(stop.requested):  # Ctrl-C while validating or saving: this epoch is whole
                if ranks.main:
                    print(f"interrupted after {label}: saved {out / 'last.pt'}; "
                          f"continue with --resume {out / 'last.pt'}")
                break
            if args.early_stopping is not None and stale >= args.early_stopping:
                if ranks.main:
                    print(f"early stopping: no lower validation loss for {stale} epochs")
                break
    finally:
        stop.restore()
        ranks.close()
    return {"history": history, "out": str(out)}


if __name__ == "__main__":
    main()
