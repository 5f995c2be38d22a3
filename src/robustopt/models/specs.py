"""Your own model: build it from a model SPEC, load its weights, wrap its normalization.

A model SPEC is one of

* a registry name (``madry-mnist``, see ``robustopt models list``);
* ``FILE.py:factory`` or ``package.module:factory``: ``factory()`` returns the ``nn.Module``
  (the file or module is imported, as Python runs it);
* ``torchscript:PATH``: a TorchScript archive (``torch.jit.save``);
* ``export:PATH``: a ``torch.export`` archive (``torch.export.save``), exported with a
  dynamic batch dimension.

Weights (``--weights``) are a state dict in ``.safetensors`` or a ``.pt`` read with
``torch.load(weights_only=True)``: nothing in them runs code. Archives are read by TorchScript's
and ``torch.export``'s own loaders, not by Python's pickle.

Example:
    >>> model, description = build("net.py:make", weights="net.safetensors", mean=(0.5,), std=(0.25,))
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from robustopt._io import sha256_file as file_sha256
from robustopt.models.layers import Normalize
from robustopt.models.registry import create, names
from robustopt.models.weights import load_weights

__all__ = ["Wrapped", "wrap", "build", "rebuild", "NormalizationWarning", "check_normalization"]


class NormalizationWarning(UserWarning):
    """The inputs a model sees look normalized twice, or not at all."""


class Wrapped(nn.Module):
    """``model(Normalize(mean, std)(x))``: a model that expects normalized inputs, fed [0, 1] images.

    Attributes:
        normalize: the :class:`Normalize` layer. model: the wrapped model.
    """

    def __init__(self, model: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def wrap(model: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]) -> Wrapped:
    """Put a model that expects ``(x - mean) / std`` behind robustopt's [0, 1] input convention.

    Attacks, eps and bounds then stay in pixel space; the normalization is the model's first layer.

    Args:
        model: maps normalized images to logits.
        mean / std: per-channel values (or one number), in pixel units of [0, 1] images, e.g.
            ImageNet's ``(0.485, 0.456, 0.406)`` / ``(0.229, 0.224, 0.225)``.

    Returns:
        The wrapped model, in ``model``'s train/eval mode.

    Example:
        >>> net = ro.models.wrap(torchvision_resnet, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    return Wrapped(model, mean, std).train(model.training)


class _Exported(nn.Module):
    """A ``torch.export`` program as a module whose train()/eval() only set the flag (the graph is fixed)."""

    def __init__(self, program: Any) -> None:
        super().__init__()
        self.graph = program.module()

    def train(self, mode: bool = True) -> "_Exported":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def build(spec: str, *, weights: str | os.PathLike[str] | None = None, mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a SPEC names (see the module docstring), in eval mode, on the CPU.

    Args:
        spec: registry name | ``FILE.py:factory`` | ``package.module:factory`` |
            ``torchscript:PATH`` | ``export:PATH``.
        weights: a state dict file to load (not for archives, which hold their weights).
        mean / std: wrap the model with :func:`wrap` (both or neither).

    Returns:
        ``(model, description)``: the description is JSON-ready (the spec, absolute paths and
        sha256 of the files involved, mean/std) and :func:`rebuild` makes the same model from it.

    Raises:
        ValueError: a malformed spec, a missing file, a factory that raises or returns no
            module, weights that do not fit or would need unpickling beyond tensors.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a registry name, FILE.py:factory, package.module:factory, "
                         f"torchscript:PATH or export:PATH; got {spec!r}.")
    if (mean is None) != (std is None):
        raise ValueError("give both --mean and --std (mean=, std=), or neither.")
    kind, sep, rest = spec.partition(":")
    description: dict[str, Any] = {"spec": spec}
    if sep and kind in ("torchscript", "export"):
        path = _existing(rest, f"{kind} archive")
        if weights is not None:
            raise ValueError(f"{kind}: archives hold their own weights; drop --weights.")
        model = _load_archive(kind, path)
        description["file"], description["sha256"] = str(path.resolve()), file_sha256(path)
    elif sep:
        model = _from_factory(kind, rest, description)
    else:
        if spec not in names():
            raise ValueError(f"unknown model {spec!r}: pass a registry name ({', '.join(names())}), "
                             "FILE.py:factory, package.module:factory, torchscript:PATH or export:PATH.")
        model = create(spec)
    if weights is not None:
        wpath = _existing(weights, "weights file")
        load_weights(model, wpath)
        description["weights"], description["weights_sha256"] = str(wpath.resolve()), file_sha256(wpath)
    if mean is not None and std is not None:
        model = wrap(model, mean, std)
        description["mean"], description["std"] = [float(m) for m in mean], [float(s) for s in std]
    return model.eval(), description


def rebuild(description: dict[str, Any]) -> nn.Module:
    """The model of a :func:`build` description, after checking that its files are unchanged.

    Raises:
        ValueError: a file is missing or its sha256 differs from the recorded one.
    """
    for key in ("file", "weights"):
        if key in description:
            path = Path(description[key])
            if not path.is_file():
                raise ValueError(f"the model's {key} {path} is gone; put it back to use this run.")
            if file_sha256(path) != description[f"{'weights_' if key == 'weights' else ''}sha256"]:
                raise ValueError(f"{path} changed since the run was made (sha256 differs); evaluate the new "
                                 "file into a new run folder.")
    model, _ = build(description["spec"], weights=description.get("weights"), mean=description.get("mean"),
                     std=description.get("std"))
    return model


def check_normalization(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """Warnings (also issued as :class:`NormalizationWarning`) when the inputs ``model`` sees look
    normalized twice or not at all.

    Twice: a :class:`Wrapped` model whose inner model has a normalization layer of its own
    (a module with ``mean`` and ``std`` tensors), or whose first layer sees values far outside
    a standardized range. Not at all: no normalization anywhere, the first layer sees [0, 1]
    pixels and fewer than half of the examples are classified correctly.

    Args:
        model: the model as it will be evaluated. x: a batch of [0, 1] images. y: its labels.
    """
    inner = model.model if isinstance(model, Wrapped) else model
    own = [name for name, m in inner.named_modules() if _normalizes(m)]
    seen: dict[str, float] = {}
    handle = _first_layer_hook(model, seen)
    try:
        with torch.no_grad():
            accuracy = float((model(x).argmax(1) == y).float().mean())
    finally:
        if handle is not None:
            handle.remove()
    found = []
    if isinstance(model, Wrapped) and own:
        found.append(f"inputs look normalized twice: --mean/--std normalizes them and the model's own layer "
                     f"{own[0]!r} normalizes them again; drop --mean/--std.")
    elif seen and (seen["max_abs"] > 20 or (isinstance(model, Wrapped) and seen["std"] > 4)):
        found.append(f"inputs look normalized twice: the model's first layer sees values with std {seen['std']:.2f} "
                     f"and up to {seen['max_abs']:.1f} in magnitude; check --mean/--std.")
    elif not isinstance(model, Wrapped) and not own and seen.get("min", -1) >= 0 and seen.get("max", 2) <= 1 \
            and accuracy < 0.5:
        found.append(f"inputs look not normalized at all: the model has no normalization layer and sees [0, 1] "
                     f"pixels, and classifies {100 * accuracy:.0f}% of the first {len(y)} images correctly; if it "
                     "was trained on normalized images, pass --mean/--std (ro.models.wrap).")
    for message in found:
        warnings.warn(message, NormalizationWarning, stacklevel=2)
    return found


# --- helpers ---------------------------------------------------------------------------------


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"no {what} {p}.")
    return p


def _load_archive(kind: str, path: Path) -> nn.Module:
    how = "torch.jit.save(torch.jit.script(model), PATH)" if kind == "torchscript" else "torch.export.save(program, PATH)"
    if not zipfile.is_zipfile(path):  # both archives are zip files; anything else is refused unread
        raise ValueError(f"{path} is not a {kind} archive (not a zip file); write it with {how}.")
    try:
        if kind == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, its archives live on
                return torch.jit.load(str(path), map_location="cpu")
        return _Exported(torch.export.load(str(path)))
    except Exception as err:  # noqa: BLE001  (any reader error: a file of another format)
        raise ValueError(f"{path} is not a {kind} archive ({type(err).__name__}: {_first_line(err)}); "
                         f"write it with {how}.") from None


def _from_factory(where: str, factory: str, description: dict[str, Any]) -> nn.Module:
    if not factory.isidentifier():
        raise ValueError(f"model spec {where}:{factory}: {factory!r} is not a function name; write FILE.py:factory "
                         "or package.module:factory.")
    if where.endswith(".py"):
        path = _existing(where, "model file")
        name = f"_robustopt_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"cannot import {path} as Python.")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001  (the user's file: report it in one line)
            raise ValueError(f"importing {path} failed: {type(err).__name__}: {_first_line(err)}") from None
        description["file"], description["sha256"] = str(path.resolve()), file_sha256(path)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"cannot import module {where!r} ({type(err).__name__}: {_first_line(err)}); "
                             "is its package installed or on PYTHONPATH?") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ValueError(f"{where} has no function {factory!r}.")
    try:
        model = fn()
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"the model factory {where}:{factory} raised {type(err).__name__}: {_first_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"the model factory {where}:{factory} returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def _normalizes(m: nn.Module) -> bool:
    return isinstance(m, Normalize) or (isinstance(getattr(m, "mean", None), torch.Tensor)
                                        and isinstance(getattr(m, "std", None), torch.Tensor))


def _first_layer_hook(model: nn.Module, seen: dict[str, float]) -> Any:
    """Record min/max/std of the input of the first Conv/Linear layer the model calls (None if none)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]

    def hook(_: nn.Module, args: tuple) -> None:
        if not seen and args and isinstance(args[0], torch.Tensor):
            t = args[0].detach().float()
            seen.update(min=float(t.min()), max=float(t.max()), std=float(t.std()), max_abs=float(t.abs().max()))

    try:
        handles = [m.register_forward_pre_hook(hook) for m in layers]
    except (RuntimeError, AttributeError):  # TorchScript modules take no hooks
        return None

    class _Handles:
        def remove(self) -> None:
            for h in handles:
                h.remove()

    return _Handles()


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0]
