"""Device names used across robustopt: "cpu", "cuda", "cuda:N", "auto", or another torch device present here."""

from __future__ import annotations

import torch

__all__ = ["check_device_name", "resolve_device"]

_USE = "use cpu, cuda, cuda:N or auto"


def check_device_name(name: str) -> torch.device | None:
    """The parsed device of ``name`` (None for ``"auto"``), checked for spelling only, not for presence.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: not a torch device name, or ``"meta"`` (shapes without data: nothing can be computed on it).
    """
    if not isinstance(name, str):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda' or 'auto', got {type(name).__name__}.")
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; {_USE}.") from None
    if device.type == "meta":
        raise ValueError(f"device {name!r} holds shapes without data, so nothing can be trained or attacked on it; "
                         f"{_USE}.")
    return device


def _absent(device: torch.device) -> str | None:
    """Why ``device`` cannot be used on this machine, or None when it can."""
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available here"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA device{'s' * (count != 1)} (cuda:0 to cuda:{count - 1})"
        return None
    module = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    try:
        if callable(getattr(module, "is_available", None)):
            present = bool(module.is_available())
        else:  # a backend without an availability probe: try to place an empty tensor there
            torch.empty(0, device=device)
            present = True
    except Exception:  # an unsupported backend raises its own error types (RuntimeError, AssertionError, ...)
        present = False
    return None if present else f"this PyTorch build has no usable {device.type} device here"


def resolve_device(name: str) -> torch.device:
    """The device ``name`` stands for, once it is known to be usable on this machine.

    ``"auto"`` is CUDA when available, else CPU; any other name is a torch device string
    ("cpu", "cuda", "cuda:1", "mps", "xpu", ...) whose device must be present here.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: an unknown name, ``"meta"``, or a device this machine lacks (e.g. CUDA without a GPU,
            ``cuda:3`` with one GPU, ``mps`` off a Mac).
    """
    device = check_device_name(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    why = _absent(device)
    if why is not None:
        raise ValueError(f"device {name!r} was requested but {why}; use cpu, or auto (CUDA when available).")
    return device
