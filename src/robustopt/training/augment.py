"""Training-data augmentation: the random crop and horizontal flip of CIFAR-10 training.

Madry et al. (2018) train their CIFAR-10 model on random 32x32 crops of the image
zero-padded by 4 pixels, flipped left-right with probability 1/2 (as do Wong et al.
2020 and Zhang et al. 2019). MNIST is trained without augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "augment", "crop_flip"]

AUGMENTATIONS = ("none", "crop-flip")


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop of the zero-padded images and random horizontal flip, per example.

    Args:
        x: images (N, C, H, W).
        generator: CPU generator for the crop offsets and flips (drawn for the whole batch).
        padding: pixels of zero padding on each side; crop offsets are uniform in [0, 2 * padding].

    Returns:
        A new tensor like ``x``.
    """
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)  # (n, h) rows of the padded image
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    rows, cols = rows.to(x.device), cols.to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def augment(name: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply augmentation ``name`` ("none" returns ``x`` itself)."""
    if name == "none":
        return x
    if name == "crop-flip":
        return crop_flip(x, generator)
    raise ValueError(f"unknown augmentation {name!r}; choose one of {AUGMENTATIONS}.")
