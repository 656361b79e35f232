"""The seed networks, convert(), summary() and torch.compile on converted models."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fastconv
import fastconv.nn as fnn
from fastconv.models import convnet3, convnet4, convnet4_bn, num_outputs, vgg16

TORCH_KERNELS = ("aten::convolution", "aten::_convolution", "aten::convolution_backward", "aten::mkldnn_convolution",
                 "aten::max_pool2d", "aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward",
                 "aten::relu", "aten::relu_", "aten::threshold_backward", "aten::native_dropout",
                 "aten::bernoulli", "aten::bernoulli_")


def _seq():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, bias=False), nn.ReLU(inplace=True)),
        nn.Dropout(0.2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 2),
    )


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleDict({"a": nn.Conv2d(3, 4, 3), "b": nn.ReLU()})
        self.extra = nn.ModuleList([nn.MaxPool2d(2), nn.Dropout(0.1)])

    def forward(self, x):
        x = self.blocks["b"](self.blocks["a"](x))
        for layer in self.extra:
            x = layer(x)
        return x


def test_convert_swaps_every_layer_and_keeps_state():
    torch.manual_seed(0)
    model = _Custom().eval()
    converted = fastconv.convert(model)
    assert converted is not model
    kinds = {type(m) for m in converted.modules()}
    assert {fnn.Conv2d, fnn.ReLU, fnn.MaxPool2d, fnn.Dropout} <= kinds
    assert not kinds & {nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Dropout}
    assert type(model.blocks["a"]) is nn.Conv2d  # the original is untouched
    assert list(converted.state_dict()) == list(model.state_dict())
    assert not converted.training
    x = torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(converted(x), model(x))


def test_convert_inplace_and_mode():
    model = _seq().train()
    same = fastconv.convert(model, inplace=True)
    assert same is model and type(model[0]) is fnn.Conv2d and model.training


def test_convert_leaves_unsupported_layers_with_a_warning():
    model = nn.Sequential(nn.Conv2d(3, 3, 1).to(torch.float16), nn.ReLU())
    with pytest.warns(UserWarning, match="left these layers"):
        converted = fastconv.convert(model)
    assert type(converted[0]) is nn.Conv2d and type(converted[1]) is fnn.ReLU


def test_converted_model_runs_no_torch_kernels():
    model = fastconv.convert(_seq()).train()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    with torch.profiler.profile() as prof:
        model(x).sum().backward()
    names = {e.name for e in prof.events()}
    assert not names & set(TORCH_KERNELS), names & set(TORCH_KERNELS)
    # Pooling saves one-byte taps on the cpu backend (max_pool2d_with_taps).
    assert {"fastconv::conv2d", "fastconv::max_pool2d_with_taps", "fastconv::relu", "fastconv::dropout"} <= names
    assert {"fastconv::conv2d_backward_input", "fastconv::max_pool2d_backward_from_taps"} <= names


@pytest.mark.parametrize("factory,size", [(torchvision.models.resnet18, 64), (torchvision.models.vgg11, 32)])
def test_torchvision_models_match_after_convert_and_train(factory, size):
    torch.manual_seed(0)
    model = factory(num_classes=10).eval()
    converted = fastconv.convert(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-4)
    converted.train()
    opt = torch.optim.SGD(converted.parameters(), lr=0.01)
    loss = F.cross_entropy(converted(x), torch.tensor([1, 2]))
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in converted.parameters() if p.requires_grad)


def test_small_converted_cnn_learns():
    torch.manual_seed(0)
    model = fastconv.convert(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                           nn.Linear(8 * 5 * 5, 2)))
    x = torch.randn(32, 1, 12, 12)
    y = (x[:, 0, :6].mean((1, 2)) > x[:, 0, 6:].mean((1, 2))).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_state_dict_round_trip_between_torch_and_fastconv():
    torch_model = _seq()
    ours = fastconv.convert(_seq())
    ours.load_state_dict(torch_model.state_dict())
    back = _seq()
    back.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 16, 16)
    torch_model.eval(), ours.eval(), back.eval()
    torch.testing.assert_close(ours(x), torch_model(x))
    torch.testing.assert_close(back(x), torch_model(x))


def test_compile_fullgraph_on_converted_model_matches_eager():
    torch.manual_seed(0)
    model = fastconv.convert(_seq()).eval()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))
    compiled(x).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    model(x).sum().backward()
    torch.testing.assert_close(grad, x.grad)


@pytest.mark.parametrize("size", [150, 96])
def test_convnet4_shapes(size):
    model = convnet4(image_size=size)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128]
    assert all(type(m).__module__ == "fastconv.nn" for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Dropout)))


@pytest.mark.parametrize("name, two_classes", [("convnet4", 1), ("convnet4_bn", 1), ("convnet3", 2), ("vgg16", 2)])
def test_num_outputs_keeps_a_one_logit_head_for_two_classes(name, two_classes):
    """Two classes get one logit where the model's default head is one logit (the seeds' convnet4
    and convnet4_bn); otherwise, and for more classes, one output per class."""
    assert num_outputs(name, 2) == two_classes
    assert num_outputs(name, 3) == 3 and num_outputs(name, 10) == 10
    if name != "vgg16":  # 138M parameters: not built here
        assert fastconv.models.MODELS[name](image_size=64)[-1].out_features == two_classes, "the default head"


def test_convnet4_bn_matches_torch_layers():
    """convnet4_bn is convnet4 with BatchNorm after each bias-free conv: the same network built
    from torch.nn layers with its weights gives the same outputs, in training and eval mode."""
    model = convnet4_bn(image_size=64)
    reference = nn.Sequential(*[
        type(m).__bases__[0](**{k: getattr(m, k) for k in ("in_channels", "out_channels", "kernel_size")},
                             bias=False) if isinstance(m, nn.Conv2d)
        else nn.MaxPool2d(2) if isinstance(m, nn.MaxPool2d)
        else nn.ReLU() if isinstance(m, nn.ReLU)
        else nn.Dropout(m.p) if isinstance(m, nn.Dropout)
        else copy.deepcopy(m)
        for m in model])
    reference.load_state_dict(model.state_dict())
    assert [type(m).__name__ for m in model[:4]] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(4, 3, 64, 64)
    model.eval(), reference.eval()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
    model.train(), reference.train()
    for layer in (model, reference):  # dropout's masks differ: compare the features only
        layer[-4].p = 0.0
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_convnet3_shapes():
    model = convnet3(image_size=64)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.5]


def test_too_small_image_is_a_clear_error():
    with pytest.raises(ValueError, match="image size 20 is too small for this network"):
        convnet4(image_size=20)


def test_vgg16_loads_torchvision_state_dict_unchanged():
    reference = torchvision.models.vgg16(num_classes=10)
    ours = vgg16(num_classes=10)
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    reference.eval(), ours.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_summary_table():
    table = fastconv.summary(convnet4(), (3, 150, 150), print_table=False)
    assert "(1, 32, 148, 148)" in table and "(1, 128, 7, 7)" in table
    total = sum(p.numel() for p in convnet4().parameters())
    assert f"Total params: {total:,}" in table
