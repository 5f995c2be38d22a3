"""The tiny synthetic problem several training tests share (also imported by distributed_worker.py)."""

from __future__ import annotations

import torch
from torch import nn


def separable(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 1x6x6 images: the left half bright (class 1) or dark (class 0).

    The margin per pixel is 0.3, so the classes stay separable under l_inf eps < 0.3.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.5 + 0.05 * torch.randn(n, 1, 6, 6, generator=g)
    x[:, :, :, :3] += 0.35 * (2 * y.view(-1, 1, 1, 1).float() - 1)
    return x.clamp(0, 1), y


def mlp(seed: int = 0) -> nn.Module:
    """A 36-16-2 ReLU network, initialized from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 2))


# `robustopt train` options for a run of a few seconds on the shipped mnist-mini (add --epochs and --out).
TINY_TRAIN = ["--data", "mnist-mini", "--model", "small-cnn", "--train-size", "300", "--steps", "2",
              "--step-size", "0.1", "--batch-size", "100", "--lr", "1e-3"]
