"""Device names used across robustopt: "cpu", "cuda", "cuda:N", or "auto"."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; any other name is a torch device string.

    Raises:
        ValueError: unknown name, or CUDA requested on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was requested but CUDA is not available; use device='cpu' or 'auto'.")
    return device
