"""Shared fixtures: the backends every test runs on and seeded randomness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import fastconv

DATA_DIR = Path(os.environ.get("FASTCONV_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CATS_AND_DOGS = DATA_DIR / "cats_and_dogs_filtered"

# "cpu" and "simt" always run; "cuda" joins where a GPU is present.
BACKENDS = [b for b in fastconv.available_backends()]


def device_of(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs the test on each backend, inside ``fastconv.backend(name)``."""
    with fastconv.backend(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() and fastconv.cuda_compiled():
        return
    skip = pytest.mark.skip(reason="needs a GPU and a fastconv built with its CUDA kernels")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
