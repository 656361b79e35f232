"""Look inside a trained CNN: feature maps, filter patterns and Grad-CAM heatmaps.

    python -m fastconv.visualize --checkpoint runs/latest/best.pt --image cat.jpg --out viz/
    python -m fastconv.visualize --pretrained cats-vs-dogs --image cat.jpg --out viz/

For notebooks, the functions return tensors (:func:`feature_maps`, :func:`filter_patterns`,
:func:`grad_cam`) and matplotlib figures (the ``plot_*`` functions). Everything runs through the
model's own layers, so on a fastconv model the forward and backward passes (the input gradients of
the filter patterns and Grad-CAM's gradients included) run on fastconv's kernels.

1. **Feature maps**: the activations of every convolution and pooling layer for one image. A
   convolution directly followed by a ReLU is shown after it, as the seeds' Keras layers (which
   carry their activation) show it.
2. **Filter patterns**: the input that maximises a filter's mean activation, found by gradient
   ascent from a grey noise image with normalised gradient steps.
3. **Grad-CAM** (Selvaraju et al., 2017) on the last convolution's activation, for the predicted
   class, from captum's ``LayerGradCam``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import matplotlib

matplotlib.use("Agg")  # files only; notebooks that set a backend first keep theirs
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor, nn  # noqa: E402

__all__ = ["visual_layers", "feature_maps", "plot_feature_maps", "ascend_filters", "filter_patterns",
           "plot_filter_patterns", "GradCam", "grad_cam", "plot_grad_cam", "main"]


# ---------------------------------------------------------------- layers


def _leaves(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if name and not list(m.children())]


# Per-channel affine layers that sit between a convolution and its activation.
_CHANNEL_AFFINE = (nn.BatchNorm2d, nn.Identity)
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _conv_stages(model: nn.Module) -> Dict[str, Tuple[nn.Module, nn.Module]]:
    """For each convolution (by name): (the module whose output is its pre-activation, the module
    whose output is its activation). Walking the leaves in registration order past batch
    normalisation: conv, BatchNorm, ReLU gives (BatchNorm, ReLU); conv, ReLU gives (conv, ReLU);
    a convolution with no ReLU after it gives (last of them, last of them)."""
    leaves = _leaves(model)
    stages = {}
    for i, (name, module) in enumerate(leaves):
        if not isinstance(module, nn.Conv2d):
            continue
        pre, j = module, i + 1
        while j < len(leaves) and isinstance(leaves[j][1], _CHANNEL_AFFINE):
            pre, j = leaves[j][1], j + 1
        post = leaves[j][1] if j < len(leaves) and isinstance(leaves[j][1], nn.ReLU) else pre
        stages[name] = (pre, post)
    return stages


def visual_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """The convolution and pooling layers by name, each mapped to the module whose output shows
    it: for a convolution, its activation (the ReLU that follows it, past any batch
    normalisation, in registration order), as the seeds' Keras layers carry theirs; else the
    layer itself."""
    stages = _conv_stages(model)
    return {name: stages[name][1] if name in stages else module for name, module in model.named_modules()
            if name in stages or isinstance(module, _POOLING)}


def _conv_layers(model: nn.Module) -> Dict[str, nn.Conv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _check_conv(model: nn.Module, layer: str) -> None:
    if layer not in _conv_layers(model):
        raise ValueError(f"{layer!r} is not a convolution; choose from {list(_conv_layers(model))}")


def _batched(image: Tensor) -> Tensor:
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image [3, H, W] or [1, 3, H, W], got {list(image.shape)}")
    return image


def _model_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


# ---------------------------------------------------------------- feature maps


def feature_maps(model: nn.Module, image: Tensor, layers: Optional[Sequence[str]] = None) -> Dict[str, Tensor]:
    """Activations ``[C, h, w]`` of each convolution and pooling layer (or of ``layers``, names
    from :func:`visual_layers`) for one preprocessed image ``[3, H, W]``, in eval mode."""
    shown = visual_layers(model)
    names = list(shown) if layers is None else list(layers)
    unknown = [n for n in names if n not in shown]
    if unknown:
        raise ValueError(f"not a convolution or pooling layer: {unknown}; choose from {list(shown)}")
    captured: Dict[str, Tensor] = {}
    handles = []
    for name in names:
        def hook(module, inputs, output, name=name):
            # A clone: a later in-place op (ReLU(inplace=True)) would change the tensor.
            captured[name] = output[0].detach().clone()
        handles.append(shown[name].register_forward_hook(hook))
    device, dtype = _model_device_dtype(model)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(_batched(image).to(device, dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name: captured[name] for name in names}


def _grid(count: int, columns: int) -> Tuple[int, int]:
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def plot_feature_maps(maps: Dict[str, Tensor], max_channels: Optional[int] = 32, columns: int = 8,
                      cmap: str = "viridis") -> Dict[str, Figure]:
    """One figure per layer: a grid of its first ``max_channels`` channels (all with ``None``),
    each scaled to its own range, titled with the layer's name."""
    figures = {}
    for name, act in maps.items():
        channels = act.shape[0] if max_channels is None else min(max_channels, act.shape[0])
        rows, cols = _grid(channels, columns)
        fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.5), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < channels:
                ax.imshow(act[i].float().cpu().numpy(), cmap=cmap)
                ax.set_title(str(i), fontsize=7)
        fig.suptitle(f"{name}: {channels} of {act.shape[0]} channels, {act.shape[1]}x{act.shape[2]}")
        fig.tight_layout()
        figures[name] = fig
    return figures


# ---------------------------------------------------------------- filter patterns


class _StopForward(Exception):
    """Raised by a hook once the layer of interest has run: the rest of the network is not needed."""


def _layer_output(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    out: List[Tensor] = []

    def hook(module, inputs, output):
        out.append(output)
        raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not out:
        raise RuntimeError("the layer did not run in the model's forward pass")
    return out[0]


def _filter_indices(layer: nn.Conv2d, filters: Union[int, Sequence[int]]) -> List[int]:
    indices = list(range(min(filters, layer.out_channels))) if isinstance(filters, int) else list(filters)
    bad = [f for f in indices if not 0 <= f < layer.out_channels]
    if bad or not indices:
        raise ValueError(f"filter indices {bad or indices} out of range for {layer.out_channels} filters")
    return indices


def filter_activation(model: nn.Module, layer: str, images: Tensor, filters: Sequence[int]) -> Tensor:
    """Mean pre-activation of filter ``filters[i]`` of conv layer ``layer`` on ``images[i]``,
    shape [N]: the convolution's output, after its batch normalisation where it has one (what
    the ReLU then sees; the ReLU itself would give no gradient where a filter is negative)."""
    _check_conv(model, layer)
    out = _layer_output(model, _conv_stages(model)[layer][0], images)
    index = torch.as_tensor(list(filters), device=out.device)
    return out[torch.arange(len(index), device=out.device), index].mean(dim=(1, 2))


def ascend_filters(model: nn.Module, layer: str, filters: Union[int, Sequence[int]] = 8,
                   image_size: Union[int, Tuple[int, int]] = 150, steps: int = 40, step_size: float = 0.01,
                   seed: int = 0) -> Tuple[Tensor, List[int]]:
    """Gradient ascent on the input: for each filter, ``steps`` steps of ``step_size`` along the
    gradient of its mean pre-activation (:func:`filter_activation`) divided by the gradient's root mean
    square, from grey noise (0.5 plus up to 0.08, in the [0, 1] pixels the models take). All
    filters run as one batch. Returns the raw inputs ``[N, 3, H, W]`` and the filter indices."""
    _check_conv(model, layer)
    indices = _filter_indices(_conv_layers(model)[layer], filters)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    device, dtype = _model_device_dtype(model)
    generator = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.08 * torch.rand(len(indices), 3, h, w, generator=generator)).to(device, dtype)
    was_training = model.training
    model.eval()
    try:
        for _ in range(steps):
            x.requires_grad_(True)
            objective = filter_activation(model, layer, x, indices).sum()
            (grad,) = torch.autograd.grad(objective, x)
            # Each image is its own problem: normalise each one's gradient on its own.
            rms = grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            x = (x.detach() + step_size * grad / (rms + 1e-5)).detach()
    finally:
        model.train(was_training)
    return x, indices


def deprocess(images: Tensor) -> Tensor:
    """Raw ascent results as viewable images: each centred, scaled to a standard deviation of
    0.1 around grey and clipped to [0, 1] (the seeds' ``deprocess_image``)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    std = images.std(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) / (std + 1e-5) * 0.1 + 0.5).clamp(0, 1)


def filter_patterns(model: nn.Module, layer: str, filters: Union[int, Sequence[int]] = 8,
                    image_size: Union[int, Tuple[int, int]] = 150, steps: int = 40, step_size: float = 0.01,
                    seed: int = 0) -> Tensor:
    """The patterns the first ``filters`` filters (or those listed) of conv layer ``layer``
    respond to most, as images ``[N, 3, H, W]`` in [0, 1] (:func:`ascend_filters`, deprocessed)."""
    raw, _ = ascend_filters(model, layer, filters, image_size, steps, step_size, seed)
    return deprocess(raw.detach().float().cpu())


def plot_filter_patterns(patterns: Tensor, layer: str, filters: Optional[Sequence[int]] = None,
                         columns: int = 8) -> Figure:
    """A grid of filter patterns ``[N, 3, H, W]``, titled with the layer and filter indices."""
    n = patterns.shape[0]
    filters = list(range(n)) if filters is None else list(filters)
    rows, cols = _grid(n, columns)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.8 * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(patterns[i].permute(1, 2, 0).numpy())
            ax.set_title(f"filter {filters[i]}", fontsize=7)
    fig.suptitle(f"{layer}: filter patterns")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- Grad-CAM


@dataclass
class GradCam:
    """A Grad-CAM result: ``heatmap`` [H, W] in [0, 1] at the image's size, for class
    ``class_index`` (its name where known) predicted with ``probability``; ``layer`` is the name
    of the convolution whose activation (after its batch normalisation and ReLU) was used."""

    heatmap: Tensor
    class_index: int
    probability: float
    layer: str
    class_name: Optional[str] = None


def _class_scores(model: nn.Module):
    """The model's logits with a one-logit (sigmoid) head turned into two class scores
    (-logit, logit), so that every class has a score to explain."""
    def forward(x: Tensor) -> Tensor:
        logits = model(x)
        return torch.cat([-logits, logits], dim=1) if logits.shape[1] == 1 else logits
    return forward


def _last_conv(model: nn.Module) -> str:
    convs = list(_conv_layers(model))
    if not convs:
        raise ValueError("the model has no convolution layer")
    return convs[-1]


def grad_cam(model: nn.Module, image: Tensor, target: Optional[int] = None, layer: Optional[str] = None,
             classes: Optional[Sequence[str]] = None) -> GradCam:
    """Grad-CAM of one preprocessed image ``[3, H, W]`` for class ``target`` (default: the
    predicted one), on the activation of the last convolution (or of conv layer ``layer``; the
    activation is the ReLU's output that follows it, past any batch normalisation),
    with captum's ``LayerGradCam``: the activation channels weighted by the mean gradient of the
    class score, summed, ReLU'd, upsampled bilinearly to the image and scaled to [0, 1]."""
    from captum.attr import LayerAttribution, LayerGradCam

    x = _batched(image)
    device, dtype = _model_device_dtype(model)
    x = x.to(device, dtype)
    from .checkpoint import predict_proba

    layer = _last_conv(model) if layer is None else layer
    _check_conv(model, layer)
    module = _conv_stages(model)[layer][1]
    was_training = model.training
    model.eval()
    try:
        scores = _class_scores(model)
        with torch.no_grad():
            probs = predict_proba(model, x)[0]
        index = int(probs.argmax()) if target is None else int(target)
        if not 0 <= index < probs.numel():
            raise ValueError(f"target {index} out of range for {probs.numel()} classes")
        cam = LayerGradCam(scores, module).attribute(x, target=index, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")[0, 0]
    finally:
        model.train(was_training)
    cam = cam.detach().float().cpu().clamp_min(0)
    peak = float(cam.max())
    heatmap = cam / peak if peak > 0 else cam
    name = classes[index] if classes is not None and index < len(classes) else None
    return GradCam(heatmap, index, float(probs[index]), layer, name)


def plot_grad_cam(image: Tensor, cam: GradCam, alpha: float = 0.45, cmap: str = "jet") -> Figure:
    """The photo, and the heatmap over it, titled with the predicted class."""
    picture = _batched(image)[0].detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4.3))
    left.imshow(picture)
    left.set_title("image")
    right.imshow(picture)
    right.imshow(cam.heatmap.numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    label = cam.class_name or f"class {cam.class_index}"
    right.set_title(f"Grad-CAM ({cam.layer}): {label} {cam.probability:.2f}")
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- command line


def _save(fig: Figure, path: Path, written: List[Path], dpi: int) -> None:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    written.append(path)


def _file_name(layer: str) -> str:
    return layer.replace(".", "_")


def visualize(model: nn.Module, meta: Dict, image_path: str, out: Union[str, Path],
              conv_layers: Optional[Sequence[str]] = None, filters: int = 8, channels: int = 32,
              steps: int = 40, dpi: int = 100) -> List[Path]:
    """Writes feature maps, filter patterns and Grad-CAM for one photo into ``out`` as PNG files
    at ``dpi`` dots per inch; returns their paths."""
    from .data import eval_transform, load_rgb

    names = list(_conv_layers(model)) if conv_layers is None else list(conv_layers)
    for name in names:  # checked before anything is written
        _check_conv(model, name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image = eval_transform(meta["image_size"])(load_rgb(Path(image_path)))
    written: List[Path] = []
    maps = feature_maps(model, image)
    for i, (name, fig) in enumerate(plot_feature_maps(maps, max_channels=channels).items()):
        _save(fig, out / f"feature_maps_{i:02d}_{_file_name(name)}.png", written, dpi)
    for name in names:
        indices = _filter_indices(_conv_layers(model)[name], filters)
        patterns = filter_patterns(model, name, filters, meta["image_size"], steps)
        _save(plot_filter_patterns(patterns, name, indices), out / f"filters_{_file_name(name)}.png", written, dpi)
    cam = grad_cam(model, image, classes=meta.get("classes"))
    _save(plot_grad_cam(image, cam), out / "grad_cam.png", written, dpi)
    return written


def main(argv: Optional[List[str]] = None) -> List[Path]:
    p = argparse.ArgumentParser(prog="python -m fastconv.visualize", description=__doc__.split("\n\n")[0])
    from . import checkpoint

    checkpoint.add_source_arguments(p)
    p.add_argument("--image", required=True, help="the photo to look at")
    p.add_argument("--out", default="viz", help="folder for the PNG files")
    p.add_argument("--layers", nargs="+", help="conv layers for the filter patterns (default: all)")
    p.add_argument("--filters", type=int, default=8, help="filter patterns per layer (the first N)")
    p.add_argument("--channels", type=int, default=32, help="feature-map channels per layer (the first N)")
    p.add_argument("--steps", type=int, default=40, help="gradient-ascent steps per filter pattern")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNG files")
    args = p.parse_args(argv)
    for name, value in (("--filters", args.filters), ("--channels", args.channels), ("--dpi", args.dpi)):
        if value < 1:
            p.error(f"{name} must be at least 1")
    if args.steps < 0:
        p.error("--steps must be at least 0")
    model, meta, _ = checkpoint.load_source(args.checkpoint, args.pretrained)
    unknown = [name for name in args.layers or [] if name not in _conv_layers(model)]
    if unknown:
        p.error(f"--layers: not convolutions of this model: {unknown}; choose from {list(_conv_layers(model))}")
    written = visualize(model, meta, args.image, args.out, args.layers, args.filters, args.channels, args.steps,
                        args.dpi)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
