"""fastconv.visualize: feature maps, filter patterns by gradient ascent, Grad-CAM, the CLI."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastconv
from fastconv import checkpoint, visualize
from fastconv import nn as fnn


def _small_cnn(num_classes: int = 1) -> nn.Sequential:
    return nn.Sequential(
        fnn.Conv2d(3, 8, 3, padding=1), fnn.ReLU(inplace=True), fnn.MaxPool2d(2),
        fnn.Conv2d(8, 16, 3, padding=1), fnn.ReLU(inplace=True), fnn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 8 * 8, num_classes))


def test_visual_layers_show_each_conv_after_its_relu():
    model = fastconv.models.convnet4(image_size=64)
    shown = visualize.visual_layers(model)
    assert list(shown) == ["0", "2", "3", "5", "6", "8", "9", "11"]
    assert shown["0"] is model[1] and shown["2"] is model[2]
    bn = fastconv.models.convnet4_bn(image_size=64)
    # conv, BatchNorm, ReLU: shown after the ReLU; the ascent's objective is the BatchNorm output
    assert list(visualize.visual_layers(bn)) == ["0", "3", "4", "7", "8", "11", "12", "15"]
    assert visualize.visual_layers(bn)["0"] is bn[2] and visualize._conv_stages(bn)["0"] == (bn[1], bn[2])
    plain = nn.Sequential(fnn.Conv2d(3, 4, 3), nn.Flatten())
    assert visualize._conv_stages(plain)["0"] == (plain[0], plain[0])


def test_feature_maps_match_the_layers_outputs():
    model = fastconv.models.convnet4(image_size=64).eval()
    image = torch.rand(3, 64, 64)
    maps = visualize.feature_maps(model, image)
    with torch.no_grad():
        relu1 = torch.relu(nn.functional.conv2d(image[None], model[0].weight, model[0].bias))[0]
        pool1 = nn.functional.max_pool2d(relu1[None], 2)[0]
    torch.testing.assert_close(maps["0"], relu1)
    torch.testing.assert_close(maps["2"], pool1)
    assert maps["11"].shape == (128, 2, 2)
    with pytest.raises(ValueError, match="not a convolution or pooling layer"):
        visualize.feature_maps(model, image, layers=["13"])
    with pytest.raises(ValueError, match="one image"):
        visualize.feature_maps(model, torch.rand(2, 3, 64, 64))


def test_gradient_ascent_raises_each_filters_mean_activation():
    torch.manual_seed(0)
    model = fastconv.models.convnet4(image_size=64)
    for layer in ("3", "9"):
        start, filters = visualize.ascend_filters(model, layer, filters=[0, 5, 17], image_size=64, steps=0)
        end, _ = visualize.ascend_filters(model, layer, filters=[0, 5, 17], image_size=64, steps=15)
        with torch.no_grad():
            before = visualize.filter_activation(model, layer, start, filters)
            after = visualize.filter_activation(model, layer, end, filters)
        assert (after > before).all(), (layer, before, after)
    bn = fastconv.models.convnet4_bn(image_size=64)
    bn.train()(torch.rand(8, 3, 64, 64))  # running statistics away from their defaults
    start, filters = visualize.ascend_filters(bn, "4", filters=[1, 9], image_size=64, steps=0)
    end, _ = visualize.ascend_filters(bn, "4", filters=[1, 9], image_size=64, steps=15)
    bn.eval()
    with torch.no_grad():
        before, after = (visualize.filter_activation(bn, "4", x, filters) for x in (start, end))
        # the objective is what the ReLU sees: the BatchNorm's output, in eval mode
        reference = bn[5](bn[4](bn[3](bn[2](bn[1](bn[0](end))))))
    assert (after > before).all()
    torch.testing.assert_close(after, reference[[0, 1], [1, 9]].mean(dim=(1, 2)))
    patterns = visualize.filter_patterns(model, "0", filters=4, image_size=64, steps=3)
    assert patterns.shape == (4, 3, 64, 64) and patterns.min() >= 0 and patterns.max() <= 1
    assert model.training, "the model's mode is restored"
    with pytest.raises(ValueError, match="out of range"):
        visualize.ascend_filters(model, "0", filters=[32], image_size=64)
    with pytest.raises(ValueError, match="not a convolution"):
        visualize.ascend_filters(model, "2", image_size=64)


class _OpRecorder(TorchDispatchMode):
    """Records the name of every op that reaches the dispatcher."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_gradient_ascent_runs_on_fastconvs_backward_kernels():
    model = _small_cnn()
    x = (0.5 + 0.08 * torch.rand(1, 3, 32, 32)).requires_grad_(True)
    with _OpRecorder() as ops:
        (grad,) = torch.autograd.grad(visualize.filter_activation(model, "3", x, [2]).sum(), x)
    assert {"fastconv.conv2d_backward_input", "fastconv.max_pool2d_backward_from_taps", "fastconv.relu_backward"} <= ops.names
    reference = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1))
    reference.load_state_dict({"0.weight": model[0].weight, "0.bias": model[0].bias,
                               "3.weight": model[3].weight, "3.bias": model[3].bias})
    x2 = x.detach().clone().requires_grad_(True)
    (grad2,) = torch.autograd.grad(reference(x2)[0, 2].mean(), x2)
    torch.testing.assert_close(grad, grad2, rtol=1e-4, atol=1e-6)


def _quadrant_data(n: int, size: int = 32, seed: int = 0):
    """Noise images; class 1 carries a bright 6x6 square somewhere in the top-left quadrant,
    class 0 none: all the class evidence lies in that quadrant."""
    g = torch.Generator().manual_seed(seed)
    images = 0.4 * torch.rand(n, 3, size, size, generator=g)
    labels = torch.arange(n) % 2
    half = size // 2
    for i in range(n):
        if labels[i] == 1:
            r, c = torch.randint(0, half - 6, (2,), generator=g).tolist()
            images[i, :, r:r + 6, c:c + 6] = 1.0
    return images, labels


def test_grad_cam_heat_lies_in_the_quadrant_with_the_evidence():
    torch.manual_seed(0)
    model = _small_cnn(num_classes=1)
    images, labels = _quadrant_data(256)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(12):
        for batch in range(0, 256, 32):
            x, y = images[batch:batch + 32], labels[batch:batch + 32].float()
            loss = nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test_images, test_labels = _quadrant_data(64, seed=1)
    with torch.no_grad():
        accuracy = ((model.eval()(test_images)[:, 0] > 0).long() == test_labels).float().mean()
    assert accuracy > 0.95, f"the small model did not learn the task ({accuracy:.2f})"
    wins = 0
    positives = test_images[test_labels == 1]
    for image in positives:
        cam = visualize.grad_cam(model, image, classes=["plain", "square"])
        assert cam.heatmap.shape == (32, 32) and 0 <= cam.heatmap.min() and cam.heatmap.max() <= 1
        assert cam.class_index == 1 and cam.class_name == "square" and cam.layer == "3"
        quadrants = [cam.heatmap[:16, :16], cam.heatmap[:16, 16:], cam.heatmap[16:, :16], cam.heatmap[16:, 16:]]
        heat = torch.stack([q.mean() for q in quadrants])
        wins += int(heat.argmax() == 0)
    assert wins >= 0.9 * len(positives), f"top-left strongest in {wins} of {len(positives)}"


def test_grad_cam_matches_the_definition():
    """Against Grad-CAM computed by hand with torch: channel weights = the spatial mean of the
    class score's gradient at the activation; heat = ReLU of the weighted channel sum,
    upsampled bilinearly and scaled to [0, 1]."""
    torch.manual_seed(3)
    model = fastconv.models.convnet4_bn(num_classes=2, image_size=64)
    model.train()(torch.rand(8, 3, 64, 64))
    model.eval()
    image = torch.rand(3, 64, 64)
    cam = visualize.grad_cam(model, image, target=1)
    x = image[None]
    head = model[:15]  # up to the last conv block's ReLU (index 14)
    activation = head(x).detach().requires_grad_(True)
    score = model[15:](activation)[0, 1]
    (gradient,) = torch.autograd.grad(score, activation)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    heat = torch.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    heat = torch.nn.functional.interpolate(heat, size=(64, 64), mode="bilinear")[0, 0]
    heat = heat / heat.max()
    assert cam.layer == "12" and cam.class_index == 1
    torch.testing.assert_close(cam.heatmap, heat, rtol=1e-4, atol=1e-5)


def test_grad_cam_explains_either_class_of_a_one_logit_head():
    model = _small_cnn(num_classes=1).eval()
    image = torch.rand(3, 32, 32)
    with torch.no_grad():
        p = torch.sigmoid(model(image[None])[0, 0]).item()
    a, b = visualize.grad_cam(model, image, target=0), visualize.grad_cam(model, image, target=1)
    assert a.probability == pytest.approx(1 - p) and b.probability == pytest.approx(p)
    with pytest.raises(ValueError, match="out of range"):
        visualize.grad_cam(model, image, target=2)


def _png_size(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_cli_writes_every_picture(tmp_path):
    model = fastconv.models.convnet4(image_size=64)
    meta = {"model": "convnet4", "num_classes": 1, "image_size": 64, "classes": ["cats", "dogs"]}
    checkpoint.save(tmp_path / "model.pt", model, meta)
    photo = tmp_path / "photo.png"
    Image.fromarray((torch.rand(80, 100, 3) * 255).byte().numpy()).save(photo)
    written = visualize.main(["--checkpoint", str(tmp_path / "model.pt"), "--image", str(photo),
                              "--out", str(tmp_path / "viz"), "--filters", "4", "--channels", "16",
                              "--steps", "2", "--layers", "0", "9", "--dpi", "50"])
    names = sorted(p.name for p in written)
    assert names == sorted([f"feature_maps_{i:02d}_{n}.png" for i, n in enumerate(["0", "2", "3", "5", "6", "8", "9", "11"])]
                           + ["filters_0.png", "filters_9.png", "grad_cam.png"])
    # Figure sizes at 50 dpi: feature maps 8 columns x 2 rows of 1.6 in (+0.5 in title); filter
    # patterns 4 x 1 of 1.8 in (+0.5); Grad-CAM 8 x 4.3 in.
    assert _png_size(tmp_path / "viz" / "feature_maps_00_0.png") == (640, 185)
    assert _png_size(tmp_path / "viz" / "filters_9.png") == (360, 115)
    assert _png_size(tmp_path / "viz" / "grad_cam.png") == (400, 215)


def test_pretrained_names_are_checked(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown pretrained model"):
        checkpoint.load_pretrained("imagenet")
    with pytest.raises(SystemExit):  # argparse: not one of the shipped names
        visualize.main(["--pretrained", "imagenet", "--image", "x.jpg"])
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not in this installation"):
        fastconv.models.convnet4(pretrained="cats-vs-dogs")
    with pytest.raises(ValueError, match="exactly one"):
        checkpoint.load_source(None, None)


def test_exported_weights_load_as_a_pretrained_model(tmp_path, monkeypatch):
    model = fastconv.models.convnet4_bn(image_size=64)
    model.train()(torch.rand(4, 3, 64, 64))  # moves the BatchNorm running statistics off their defaults
    meta = {"model": "convnet4_bn", "num_classes": 1, "image_size": 64, "classes": ["cats", "dogs"]}
    checkpoint.save(tmp_path / "best.pt", model, meta, optimizer={"big": torch.zeros(1000)})
    weights = tmp_path / "weights" / "cats_vs_dogs.pt"
    checkpoint.export_weights(tmp_path / "best.pt", weights, half=True, val_accuracy=0.5)
    saved = torch.load(weights, weights_only=False)
    assert set(saved) == {"state_dict", "meta"} and saved["meta"]["val_accuracy"] == 0.5
    assert saved["state_dict"]["0.weight"].dtype == torch.float16
    assert saved["state_dict"]["1.running_var"].dtype == torch.float32  # buffers stay as they were
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "weights")
    loaded = fastconv.models.convnet4_bn(image_size=64, pretrained="cats-vs-dogs")
    assert loaded.training and loaded[0].weight.dtype == torch.float32
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match="is a convnet4_bn, not a convnet4"):
        fastconv.models.convnet4(image_size=64, pretrained="cats-vs-dogs")
    with pytest.raises(ValueError, match="not num_classes=2, image_size=64"):
        fastconv.models.convnet4_bn(num_classes=2, image_size=64, pretrained="cats-vs-dogs")
