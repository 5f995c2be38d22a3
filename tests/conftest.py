"""Shared fixtures: tiny analytic models, seeded data, one small trained model.

Everything here is small enough for a 2-core CPU. Models are built from a fixed
seed so that every test sees the same weights; data comes from explicit
``torch.Generator`` objects, never from the global RNG.
"""

from __future__ import annotations

import os

import pytest
import torch
from masking_models import prototype_data, train_base
from torch import nn

# Tiny tensors: on a shared 2-core machine one intra-op thread is many times
# faster than two (OpenMP spinning dominates). Override with ROBUSTOPT_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("ROBUSTOPT_TEST_THREADS", "1")))

IMAGE_SHAPE = (1, 4, 4)  # C, H, W of the toy inputs
NUM_CLASSES = 5


def make_linear(
    shape: tuple[int, ...] = IMAGE_SHAPE,
    classes: int = NUM_CLASSES,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
) -> nn.Sequential:
    """A linear classifier ``logits = W flatten(x) + b`` with fixed random weights."""
    g = torch.Generator().manual_seed(seed)
    d = 1
    for s in shape:
        d *= s
    linear = nn.Linear(d, classes)
    with torch.no_grad():
        linear.weight.copy_(scale * torch.randn(classes, d, generator=g))
        linear.bias.copy_(0.1 * torch.randn(classes, generator=g))
    return nn.Sequential(nn.Flatten(), linear).to(dtype).eval()


def make_convnet(seed: int = 0, classes: int = NUM_CLASSES, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A small conv net for 1x8x8 inputs (conv, relu, pool, linear)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, classes),
    )
    return model.to(dtype).eval()


def make_data(
    n: int = 16,
    shape: tuple[int, ...] = IMAGE_SHAPE,
    classes: int = NUM_CLASSES,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform images inside ``bounds`` and uniform labels, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = bounds
    x = lo + (hi - lo) * torch.rand((n, *shape), generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


@pytest.fixture
def linear_model() -> nn.Sequential:
    return make_linear()


@pytest.fixture
def convnet() -> nn.Sequential:
    return make_convnet()


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """16 images of shape 1x4x4 in [0, 1] and labels in [0, 5)."""
    return make_data()


@pytest.fixture
def image_data() -> tuple[torch.Tensor, torch.Tensor]:
    """32 images of shape 1x8x8 in [0, 1] for ``convnet``."""
    return make_data(n=32, shape=(1, 8, 8))


# --- one small trained model, shared by the tests that need a real decision boundary ------
@pytest.fixture(scope="session")
def trained_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The prototype CNN of masking_models trained naturally (400 Adam steps, ~1 s) and a held-out test
    set of 400 examples.

    Clean accuracy is ~99%; at Linf eps=0.1 FGSM leaves ~36% robust and PGD-20 ~28%.
    """
    g = torch.Generator().manual_seed(0)
    x_train, y_train = prototype_data(4000, g)
    x_test, y_test = prototype_data(400, g)
    model = train_base(x_train, y_train, g, steps=400).eval()
    for p in model.parameters():
        p.grad = None
    return model, x_test, y_test


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder made by `robustopt train` (PGD, 1 epoch, mnist-mini; seconds), one per test module."""
    from click.testing import CliRunner

    from robustopt.cli import main
    from tiny_problem import TINY_TRAIN

    out = tmp_path_factory.mktemp("tiny_run") / "a"
    res = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--epochs", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out
