"""Model registry in the style of timm: ``@register_model`` + ``create(name, **kw)``.

A factory is a function with keyword parameters ``num_classes``, ``in_channels``,
``mean`` and ``std`` (plus any architecture arguments) that returns an
``nn.Module`` mapping images in [0, 1] to logits. :func:`create` validates the
keyword arguments, calls the factory and attaches a :class:`ModelConfig` as
``model.config``, which is all a checkpoint needs to rebuild the model.

Nothing else in robustopt requires the registry: any ``nn.Module`` that maps
[0, 1] images to logits works everywhere.

    import robustopt as ro
    model = ro.models.create("madry-mnist")
    model.config.mean        # (0.1307,)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from robustopt._registry import Registry
from robustopt.models.layers import channel_stats
from robustopt.models.weights import load_weights

__all__ = [
    "MODELS",
    "ModelEntry",
    "ModelConfig",
    "register_model",
    "create",
    "from_config",
    "names",
    "default_config",
    "count_parameters",
    "description",
]

_REQUIRED_PARAMS = ("num_classes", "in_channels", "mean", "std")

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a registered model.

    Attributes:
        name: Registry name, e.g. ``"madry-mnist"``.
        num_classes: Number of logits.
        in_channels: Input channels C.
        input_size: Expected input shape ``(C, H, W)``, without the batch dim.
        mean: Per-channel mean used by the model's Normalize layer.
        std: Per-channel std used by the model's Normalize layer.
        dataset: Dataset family the architecture was designed for (``"mnist"``,
            ``"cifar10"``); informational.
        kwargs: Further architecture arguments passed to the factory (e.g.
            ``{"depth": 34, "widen_factor": 10}``). Treat as read-only.
    """

    name: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["kwargs"] = dict(self.kwargs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: If required fields are missing or unknown ones present.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        unknown = sorted(set(d) - known)
        if missing or unknown:
            raise ValueError(
                f"invalid model config: missing fields {missing}, unknown fields {unknown}"
            )
        return cls(
            name=str(d["name"]),
            num_classes=int(d["num_classes"]),
            in_channels=int(d["in_channels"]),
            input_size=tuple(int(v) for v in d["input_size"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            dataset=d.get("dataset"),
            kwargs=dict(d.get("kwargs") or {}),
        )


@dataclass(frozen=True)
class ModelEntry:
    """A registered model factory (see :func:`register_model`).

    Attributes:
        name: the registry name.
        factory: the function that builds the model.
        signature: the factory's signature (its keyword arguments are checked against it).
        image_size: the ``(H, W)`` of the inputs.
        dataset: the dataset family the architecture targets (informational), or None.
    """

    name: str
    factory: Callable[..., nn.Module]
    signature: inspect.Signature
    image_size: tuple[int, int]
    dataset: str | None


MODELS: Registry[ModelEntry] = Registry("model")  # the factories by name; add one with register_model


def register_model(
    name: str, *, image_size: tuple[int, int], dataset: str | None = None
) -> Callable[[F], F]:
    """Decorator that registers a model factory under ``name``.

    Args:
        name: Registry name (lowercase, dash-separated by convention).
        image_size: Expected ``(H, W)`` of the input images.
        dataset: Dataset family the architecture targets (informational).

    Returns:
        The decorator; the factory itself is returned unchanged.

    Raises:
        ValueError: If ``name`` is already registered.
        TypeError: If the factory lacks keyword parameters ``num_classes``,
            ``in_channels``, ``mean``, ``std`` with defaults, or takes
            ``*args``/``**kwargs``.

    Example:
        >>> @register_model("my-net", image_size=(28, 28))  # doctest: +SKIP
        ... def my_net(*, num_classes=10, in_channels=1, mean=0.5, std=0.5): ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty str, got {name!r}")
    if len(image_size) != 2 or not all(isinstance(v, int) and v > 0 for v in image_size):
        raise ValueError(f"image_size must be (H, W) positive ints, got {image_size!r}")

    def decorator(factory: F) -> F:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        sig = inspect.signature(factory)
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise TypeError(
                    f"factory for {name!r}: parameter {p.name!r} must be a named keyword"
                )
            if p.default is p.empty:
                raise TypeError(f"factory for {name!r}: parameter {p.name!r} needs a default")
        missing = [p for p in _REQUIRED_PARAMS if p not in sig.parameters]
        if missing:
            raise TypeError(f"factory for {name!r} must accept keyword parameters {missing}")
        size = (int(image_size[0]), int(image_size[1]))
        MODELS.register(name, ModelEntry(name, factory, sig, size, dataset))
        return factory

    return decorator


def names() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(MODELS)


def _lookup(name: str) -> ModelEntry:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name in MODELS:
        return MODELS[name]
    known = names()
    # Match on a normalized spelling so "madry_mnist" / "MadryMNIST" still get a hint.
    norm = {k.replace("-", "").lower(): k for k in known}
    key = name.replace("-", "").replace("_", "").lower()
    close = difflib.get_close_matches(key, list(norm), n=1, cutoff=0.6)
    hint = f" Did you mean {norm[close[0]]!r}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Registered models: {', '.join(known)}")


def _bind(entry: ModelEntry, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``kwargs`` against the factory and return the full argument dict."""
    valid = list(entry.signature.parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(
            f"create({entry.name!r}) got unexpected keyword argument(s) {unknown}; "
            f"valid ones are: {', '.join(valid)}"
        )
    bound = entry.signature.bind(**kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    for key in ("num_classes", "in_channels"):
        v = args[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{key} must be a positive int, got {v!r}")
    c = args["in_channels"]
    args["mean"] = channel_stats(args["mean"], c, "mean")
    args["std"] = channel_stats(args["std"], c, "std")
    if any(s <= 0 for s in args["std"]):
        raise ValueError(f"std must be > 0 for every channel, got {args['std']}")
    return args


def description(name: str) -> str:
    """The first line of the model factory's docstring, e.g. for ``robustopt models list``."""
    doc = inspect.getdoc(_lookup(name).factory) or ""
    return doc.splitlines()[0] if doc else ""


def default_config(name: str, **kwargs: Any) -> ModelConfig:
    """The :class:`ModelConfig` that ``create(name, **kwargs)`` would attach.

    Builds no model, so it is cheap (useful to learn a model's input size).
    """
    entry = _lookup(name)
    return _make_config(entry, _bind(entry, kwargs))


def _make_config(entry: ModelEntry, args: dict[str, Any]) -> ModelConfig:
    rest = {k: v for k, v in args.items() if k not in _REQUIRED_PARAMS}
    return ModelConfig(
        name=entry.name,
        num_classes=args["num_classes"],
        in_channels=args["in_channels"],
        input_size=(args["in_channels"], *entry.image_size),
        mean=args["mean"],
        std=args["std"],
        dataset=entry.dataset,
        kwargs=rest,
    )


def create(name: str, *, weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model; the result carries ``model.config``.

    Args:
        name: Registry name, see :func:`names`.
        weights: a plain PyTorch state dict file (``.pt``/``.pth`` read with
            ``torch.load(weights_only=True)``, or ``.safetensors``) to load, e.g. weights
            trained elsewhere; ``module.``/``model.`` prefixes are stripped. See
            :func:`robustopt.models.load_weights`. None: random initialization.
        **kwargs: Factory arguments: ``num_classes``, ``in_channels``, ``mean``,
            ``std`` and architecture-specific ones.

    Returns:
        A ``nn.Module`` (CPU, float32) mapping ``(N, C, H, W)`` images in [0, 1] to
        ``(N, num_classes)`` logits, with a :class:`ModelConfig` attribute ``config``:
        freshly initialized in train mode, or with ``weights`` loaded, in eval mode.

    Raises:
        ValueError: Unknown name (the message suggests the closest one), invalid
            argument values, or weights that are not a state dict or do not fit
            (the message names the missing and unexpected keys).
        TypeError: Unknown keyword arguments (the message lists valid ones).
        FileNotFoundError: ``weights`` does not exist.

    Example:
        >>> model = create("small-cnn", num_classes=10)
        >>> model(torch.rand(2, 1, 28, 28)).shape  # doctest: +SKIP
        torch.Size([2, 10])
        >>> model = create("preact-resnet18", weights="PreActResNet18.pt")  # doctest: +SKIP
    """
    entry = _lookup(name)
    args = _bind(entry, kwargs)
    model = entry.factory(**args)
    if not isinstance(model, nn.Module):
        raise TypeError(f"factory for {name!r} returned {type(model).__name__}, not nn.Module")
    model.config = _make_config(entry, args)
    if weights is not None:
        load_weights(model, weights)
    return model


def from_config(config: ModelConfig | Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from a :class:`ModelConfig` or its dict form.

    Args:
        config: As stored by :mod:`robustopt.checkpoint`.

    Returns:
        A freshly initialized model with the same architecture and Normalize
        statistics (weights still have to be loaded).
    """
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    return create(
        config.name,
        num_classes=config.num_classes,
        in_channels=config.in_channels,
        mean=config.mean,
        std=config.std,
        **config.kwargs,
    )


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter scalars in ``model``.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
