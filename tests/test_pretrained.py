"""The shipped cats-vs-dogs model: it loads with no training and keeps its recorded accuracy."""

from __future__ import annotations

import json

import pytest
import torch

import fastconv
from conftest import CATS_AND_DOGS
from fastconv import checkpoint, evaluate, predict

WEIGHTS = checkpoint.WEIGHTS_DIR / checkpoint.PRETRAINED["cats-vs-dogs"]


def test_the_weights_ship_with_the_package():
    assert WEIGHTS.is_file(), f"{WEIGHTS} is missing from the package"
    assert WEIGHTS.stat().st_size < 15 * 2**20
    saved = torch.load(WEIGHTS, map_location="cpu", weights_only=False)
    assert set(saved) == {"state_dict", "meta"}  # weights only: no optimizer state
    meta = saved["meta"]
    assert meta["classes"] == ["cats", "dogs"] and meta["model"] in fastconv.models.MODELS
    assert 0.85 <= meta["val_accuracy"] <= 1


def test_the_pretrained_model_builds_from_its_builder():
    meta = torch.load(WEIGHTS, map_location="cpu", weights_only=False)["meta"]
    model = fastconv.models.MODELS[meta["model"]](pretrained="cats-vs-dogs")
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, meta["image_size"], meta["image_size"]))
    assert out.shape == (2, meta["num_classes"]) and torch.isfinite(out).all()
    assert all(type(m).__module__ == "fastconv.nn" for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.ReLU, torch.nn.Dropout)))


@pytest.mark.data
@pytest.mark.skipif(not CATS_AND_DOGS.is_dir(), reason="cats-vs-dogs photos not present")
def test_the_pretrained_model_reaches_its_recorded_accuracy(capsys):
    meta = torch.load(WEIGHTS, map_location="cpu", weights_only=False)["meta"]
    result = evaluate.main(["--pretrained", "cats-vs-dogs", "--data", str(CATS_AND_DOGS), "--json",
                            "--workers", "0"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["n"] == 1000
    # Float16 weights and the CPU kernels' summation order may move a borderline photo.
    assert result["accuracy"] >= meta["val_accuracy"] - 0.003
    assert result["accuracy"] >= 0.85
    cat = sorted((CATS_AND_DOGS / "validation" / "cats").iterdir())[0]
    (path, name, probability), = predict.predict(None, [str(cat)], pretrained="cats-vs-dogs")
    assert path == str(cat) and name in ("cats", "dogs") and 0.5 <= probability <= 1
