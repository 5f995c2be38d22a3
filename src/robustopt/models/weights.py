"""Loading plain PyTorch state dicts into models, safely (e.g. RobustBench-style weights).

:func:`load_weights` is what ``ro.models.create(name, weights=...)`` calls; the
checkpoint format (:mod:`robustopt.checkpoint`) loads through the same key checks,
so a file that does not fit the model is refused with the keys that differ named.

    model = ro.models.create("preact-resnet18")
    ro.models.load_weights(model, "PreActResNet18.pt")
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from robustopt.models.layers import Normalize

__all__ = ["load_weights"]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # {"state_dict": {...}, "epoch": ...} and the like
_PREFIXES = ("module.", "model.")  # DataParallel / DistributedDataParallel, and wrapper modules


def unwrap(model: nn.Module) -> nn.Module:
    """Strip torch.compile / DataParallel / DDP wrappers so keys carry no prefix."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def describe_keys(keys: list[str], limit: int = 10) -> str:
    """The first ``limit`` keys and their count, for error messages."""
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"


def load_state(target: nn.Module, state: dict[str, torch.Tensor], source: str,
               optional: frozenset[str] = frozenset()) -> None:
    """``target.load_state_dict(state)``, with a ValueError that names the missing, unexpected and
    mis-shaped keys; keys in ``optional`` may be missing (the model keeps its own values)."""
    expected = target.state_dict()
    missing_keys = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: weights {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing_keys or unexpected or mismatched:
        parts = []
        if missing_keys:
            parts.append(f"missing keys {describe_keys(missing_keys)}")
        if unexpected:
            parts.append(f"unexpected keys {describe_keys(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches {describe_keys(mismatched)}")
        raise ValueError(f"{source} does not fit {type(target).__name__}: " + "; ".join(parts))
    try:
        target.load_state_dict({**{k: expected[k] for k in optional if k not in state}, **state}, strict=True)
    except RuntimeError as e:
        raise ValueError(f"cannot load the weights of {source} into {type(target).__name__}: {e}") from None


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a plain PyTorch state dict file into ``model``, safely (e.g. RobustBench-style weights).

    ``.safetensors`` files are read with safetensors; anything else (``.pt``, ``.pth``, ...) with
    ``torch.load(weights_only=True)``, so a file that would run code when unpickled is refused.
    The file may hold the state dict itself or a dict with it under "state_dict",
    "model_state_dict" or "model". A ``module.`` or ``model.`` prefix that every key carries
    (DataParallel, wrappers) is stripped unless the model's own keys carry it too. The model's
    Normalize buffers (``*.mean``, ``*.std``) may be missing from the file: the model then keeps
    its own, so pass the right ``mean``/``std`` to ``ro.models.create``.

    Args:
        model: the model to load into (in place).
        path: the weights file.

    Returns:
        ``model``, in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a state dict of tensors (or needs unpickling beyond
            tensors), or its keys or shapes do not fit ``model`` (the message names them).

    Example:
        >>> model = load_weights(ro.models.create("preact-resnet18"), "PreActResNet18.pt")  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}.")
    try:
        if path.suffix == ".safetensors":
            state = load_file(os.fspath(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and safetensors errors alike
        why = ("it holds pickled Python objects other than tensors, which could run code: refused"
               if isinstance(e, pickle.UnpicklingError) else f"{type(e).__name__}: {str(e).splitlines()[0]}")
        raise ValueError(
            f"cannot read {path} as a state dict of tensors ({why}). "
            "Only tensors are loaded (torch.load(weights_only=True)), nothing that runs code: save the weights "
            "with torch.save(model.state_dict(), path) or as .safetensors."
        ) from None
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        state = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        found = (f"a dict with keys {describe_keys([str(k) for k in state])}" if isinstance(state, dict)
                 else type(state).__name__)
        raise ValueError(f"{path} holds {found}, not a state dict (names -> tensors).")
    target = unwrap(model)
    expected = target.state_dict()
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in expected):
            state = {k[len(prefix):]: v for k, v in state.items()}
    normalize = frozenset(f"{name}.{buf}".lstrip(".") for name, m in target.named_modules()
                          if isinstance(m, Normalize) for buf in ("mean", "std"))
    load_state(target, state, f"weights {path}", optional=normalize)
    return model.eval()
