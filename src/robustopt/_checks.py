"""Sanity checks of a request against the data it runs on: counts, eps, eps grids, model input shapes.

A wrong request is an error, never a number. These checks run where the data are
known (``fit``, ``evaluate``, ``sweep``, and ``train_run`` / ``eval_run`` /
``sweep_run`` behind the CLI) and their messages say what to do.

Limits on eps (pixel space; inputs in ``bounds = (lo, hi)``; ``d`` values per image;
``p`` the exponent of the norm, read from the threat model's class, so a threat model of the
user's is checked the same way; a class without an exponent ``p > 0`` is not checked):

* refused (ValueError): eps above the diameter of the box of inputs,
  ``(hi - lo) * d**(1/p)`` (L-inf: ``hi - lo``; L2: ``(hi - lo) * sqrt(d)``; L1:
  ``(hi - lo) * d``). The ball then holds every input and a larger eps changes
  nothing; such a value is a unit mistake (8 for 8/255, or pixels in [0, 255]).
* warned (:class:`EpsWarning`): eps above half the diameter, where every image can
  reach the same mid-gray image, so no model can be robust beyond the share of the
  largest class; and L-inf above 32/255 on 3-channel (natural) images, twice the
  largest radius of the literature on CIFAR-10 and ImageNet (16/255).

A sweep grid holds at most :data:`MAX_GRID` values: each one is a full attack on
every image, and 1,000 points already resolve a curve far beyond plotting needs.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Sequence

from robustopt.threat import ThreatModel

__all__ = ["EpsWarning", "MAX_GRID", "check_count", "check_eps", "eps_warning", "warn_eps", "check_grid_size",
           "check_input_shape"]

MAX_GRID = 1000
NATURAL_IMAGE_LINF = 32 / 255  # L-inf above this on 3-channel images is warned about


class EpsWarning(UserWarning):
    """An eps inside the input range but beyond what is meaningful or usual (see the module docstring)."""


def check_count(name: str, n: object) -> int:
    """``n`` as an int >= 1, else ValueError/TypeError naming ``name`` (e.g. "--n/limit")."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be a whole number >= 1, got {n!r}.")
    if n < 1:
        raise ValueError(f"{name} must be >= 1 (a number of images), got {n}.")
    return n


class _Geometry(NamedTuple):
    """What the eps checks need of a norm on a box of inputs."""

    label: str  # "L-inf", "L2", "L1", ...
    p: float  # the exponent
    diameter: float  # the largest distance between two inputs


def _geometry(threat: ThreatModel, shape: Sequence[int]) -> _Geometry | None:
    """The norm's exponent (from the threat model's class) and the diameter of its box; None without an exponent.

    Raises:
        TypeError: ``threat`` is not a threat model.
    """
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"the eps checks take a threat model such as ro.Linf(0.3), got {threat!r}.")
    p, bounds = getattr(threat, "p", 0.0), threat.bounds
    if not (isinstance(p, (int, float)) and p > 0):
        return None
    span = bounds[1] - bounds[0]
    if math.isinf(p):
        return _Geometry("L-inf", p, span)
    return _Geometry(f"L{p:g}", p, span * math.prod(shape) ** (1 / p))


def _describe(shape: Sequence[int], bounds: tuple[float, float]) -> str:
    dims = "x".join(str(s) for s in shape)
    return f"{dims} inputs in [{bounds[0]:g}, {bounds[1]:g}]"


def check_eps(threat: ThreatModel, shape: Sequence[int]) -> None:
    """Refuse a threat model whose eps exceeds the diameter of its input box (a unit mistake; see the module docstring).

    Args:
        threat: the threat model: its norm, its eps (pixel space) and its bounds, the box of the inputs.
        shape: shape of one input, e.g. (1, 28, 28).

    Raises:
        ValueError: eps above the diameter; the message gives the largest meaningful eps.
    """
    _refuse(_geometry(threat, shape), threat.eps, shape, threat.bounds)


def _refuse(geometry: _Geometry | None, eps: float, shape: Sequence[int], bounds: tuple[float, float]) -> None:
    if geometry is not None and eps > geometry.diameter * (1 + 1e-9):
        raise ValueError(
            f"eps={eps:g} ({geometry.label}) exceeds {geometry.diameter:.4g}, the largest distance between two "
            f"{_describe(shape, bounds)}: the ball would hold every image. eps is in pixel units of "
            f"inputs in [{bounds[0]:g}, {bounds[1]:g}]; write e.g. 8/255, not 8."
        )


def eps_warning(threat: ThreatModel, shape: Sequence[int]) -> str | None:
    """Why the eps of ``threat`` is beyond the meaningful or usual range (see the module docstring), or None."""
    return _warning(_geometry(threat, shape), threat.eps, shape, threat.bounds)


def _warning(geometry: _Geometry | None, eps: float, shape: Sequence[int], bounds: tuple[float, float]) -> str | None:
    if geometry is None:
        return None
    half = geometry.diameter / 2
    if eps > half * (1 + 1e-9):
        return (f"eps={eps:g} ({geometry.label}) is above {half:.4g}, half the diameter of "
                f"{_describe(shape, bounds)}: every image can then be turned into the same mid-gray image, "
                "so no model can be robust beyond the share of its largest class.")
    color = len(shape) == 3 and shape[0] == 3
    if math.isinf(geometry.p) and color and eps > NATURAL_IMAGE_LINF * (bounds[1] - bounds[0]):
        return (f"eps={eps:g} (L-inf) on 3-channel images is above 32/255 = {NATURAL_IMAGE_LINF:.4f}, twice the "
                "largest radius used on CIFAR-10 and ImageNet (16/255; 8/255 is the standard); is it meant?")
    return None


def warn_eps(threat: ThreatModel, shape: Sequence[int]) -> None:
    """:func:`check_eps`, then an :class:`EpsWarning` if :func:`eps_warning` has something to say.

    The norm's geometry is computed once for both.
    """
    geometry = _geometry(threat, shape)
    _refuse(geometry, threat.eps, shape, threat.bounds)
    message = _warning(geometry, threat.eps, shape, threat.bounds)
    if message:
        warnings.warn(message, EpsWarning, stacklevel=3)


def check_grid_size(count: int) -> None:
    """Refuse an eps grid of more than :data:`MAX_GRID` values, saying why."""
    if count > MAX_GRID:
        raise ValueError(
            f"the eps grid has {count:,} values; at most {MAX_GRID:,} are allowed, since every value is a "
            "full attack on every image. Use a larger step (e.g. 0:0.5:0.05 is 11 values)."
        )


def check_input_shape(what: str, expected: Sequence[int], data: str, shape: Sequence[int],
                      hint: str = "") -> None:
    """Refuse a model built for ``expected`` (C, H, W) inputs on data of another ``shape``.

    Args:
        what: the model, e.g. "model preact-resnet18 (built for cifar10)".
        expected: (C, H, W) the model takes.
        data: the dataset's name.
        shape: (C, H, W) of the data.
        hint: appended to the message, e.g. the models that fit.
    """
    if tuple(expected) != tuple(shape):
        raise ValueError(f"{what} expects {_image(expected)} images, but {data} has {_image(shape)} images.{hint}")


def _image(shape: Sequence[int]) -> str:
    c, *hw = shape
    return f"{c}-channel {'x'.join(str(s) for s in hw)}"
