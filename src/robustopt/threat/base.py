"""The threat-model base class, the registry of norm names, and the checks every norm shares.

:class:`ThreatModel` holds what every l_p ball intersected with a box has in common: the
fields (``eps``, ``bounds``), the projection built on a per-norm ``_project_delta``, the
membership test, random starts, and the ``to_dict`` / ``from_dict`` round trip of result
files. A subclass that names its ``norm`` is registered in :data:`NORMS`; the built-in
ones are in :mod:`robustopt.threat.lp`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from robustopt._registry import Registry

__all__ = ["ThreatModel", "NORMS", "by_name", "names", "threat_from_name", "check_norm", "check_images",
           "random_signs"]



def check_images(x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0), name: str = "x") -> None:
    """Raise a clear error unless ``x`` is a finite floating batch inside ``bounds``.

    The bounds are met up to a few rounding errors of ``x``'s dtype at their scale, so data normalized
    in float32 with the same mean and std as bounds computed in float64 is inside.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor with pixels in {bounds}, got dtype {x.dtype}; "
            "convert uint8 images with x.float() / 255."
        )
    if x.dim() < 2:
        raise ValueError(f"{name} must be a batch (N, ...) of inputs, got shape {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean the inputs before attacking.")
    lo, hi = bounds
    slack = 4 * torch.finfo(x.dtype).eps * max(1.0, abs(lo), abs(hi))
    if x.numel() and (x.min() < lo - slack or x.max() > hi + slack):
        raise ValueError(
            f"{name} has values in [{x.min().item():.4g}, {x.max().item():.4g}], outside the bounds {bounds}. "
            "robustopt expects un-normalized images (e.g. in [0, 1]); put mean/std normalization "
            "inside the model (robustopt.models.Normalize) or pass the right bounds to the threat model."
        )


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _flat_norm(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(x.flatten(1), ord=p, dim=1)


def random_signs(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Independent uniform signs +-1 of the given shape, with ``like``'s dtype and device."""
    return torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1


def _exponentials(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Independent standard exponential variables (``-log U``, U uniform in (0, 1])."""
    return -torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype).clamp_min(1e-12).log()


NORMS: Registry[type[ThreatModel]] = Registry("norm")  # lower-case norm name -> class; every subclass naming its norm


@dataclass(frozen=True)
class ThreatModel:
    """Base class: the l_p ball of radius ``eps`` around x intersected with ``bounds``.

    A subclass that sets ``norm`` is registered in :data:`NORMS` under that name in lower case,
    for :func:`by_name` and :meth:`from_dict` (a name that another class holds is refused), and
    sets ``p``, the exponent of its l_p norm, which the eps checks read.

    Args:
        eps: radius of the ball in pixel space (inputs in ``bounds``), >= 0.
        bounds: (low, high) of valid input values, (0, 1) for images.
    """

    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)

    norm: ClassVar[str] = ""
    p: ClassVar[float] = 0.0  # the l_p exponent
    dual_p: ClassVar[float] = 0.0  # exponent of the dual norm

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "norm" in cls.__dict__ and cls.norm:  # its own name, not one inherited from Linf & co.
            NORMS.register(cls.norm.lower(), cls)

    def __post_init__(self) -> None:
        if isinstance(self.eps, torch.Tensor):
            object.__setattr__(self, "eps", float(self.eps))
        if not isinstance(self.eps, numbers.Real) or isinstance(self.eps, bool):
            raise TypeError(f"eps must be a number, got {type(self.eps).__name__} ({self.eps!r}).")
        if not math.isfinite(self.eps) or self.eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps}.")
        object.__setattr__(self, "eps", float(self.eps))
        try:
            lo, hi = (float(b) for b in self.bounds)
        except (TypeError, ValueError):
            raise TypeError(f"bounds must be a pair (low, high) of numbers, got {self.bounds!r}.") from None
        if not lo < hi:
            raise ValueError(f"bounds must satisfy low < high, got {self.bounds}.")
        object.__setattr__(self, "bounds", (lo, hi))

    def __str__(self) -> str:
        return f"{self.norm}(eps={self.eps:.4g})"

    # --- as data --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the norm and every field, e.g. ``{"norm": "Linf", "eps": 0.3, "bounds": [0.0, 1.0]}``."""
        out: dict[str, Any] = {"norm": self.norm}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThreatModel:
        """The inverse of :meth:`to_dict`: the threat model of the class ``d["norm"]`` names.

        Raises:
            ValueError: ``d`` names no known norm, or holds a field that norm does not have.
        """
        if not isinstance(d, Mapping) or "norm" not in d:
            raise ValueError(f"a threat model dict needs a 'norm' and an 'eps', got {d!r}.")
        kind = by_name(d["norm"])
        fields = {k: v for k, v in d.items() if k != "norm"}
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(kind)})
        if unknown:
            raise ValueError(f"{kind.__name__} has no field(s) {unknown}; got {dict(d)!r}.")
        return kind(**fields)

    # --- geometry -------------------------------------------------------------------
    def distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Per-example l_p distance ``||x_adv - x||_p``, shape (N,)."""
        return _flat_norm(x_adv - x, self.p)

    def clip_box(self, x_adv: torch.Tensor) -> torch.Tensor:
        return x_adv.clamp(*self.bounds)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project ``x_adv`` onto the ball around ``x`` intersected with the box.

        Args:
            x_adv: candidate points (N, ...).
            x: clean inputs (N, ...), inside ``bounds``.

        Returns:
            The closest point (Euclidean) of the feasible set, same shape/dtype/device.
        """
        return self.projector(x)(x_adv)

    def projector(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x_adv -> project(x_adv, x)`` for many points around the same ``x`` (an attack's iterates).

        What depends on ``x`` alone is computed once. Coordinates clipped by the box land exactly
        on it: for the usual bounds ``x + (hi - x)`` rounds to ``hi`` (and ``x + (lo - x)`` to
        ``lo``), so the final clamp does it; otherwise they are put there explicitly.
        """
        lo, hi = self.bounds
        lo_rel, hi_rel = lo - x, hi - x
        snap = self._rounds_off_the_box(x)
        box = self._delta_box(lo_rel, hi_rel)

        def project(x_adv: torch.Tensor) -> torch.Tensor:
            delta = self._project_delta(x_adv - x, *box)
            if snap:
                return torch.where(delta >= hi_rel, hi, torch.where(delta <= lo_rel, lo, x + delta)).clamp(lo, hi)
            return (x + delta).clamp_(lo, hi)

        return project

    def _rounds_off_the_box(self, x: torch.Tensor) -> bool:
        """Whether ``x + (hi - x)`` rounds below ``hi`` (or ``x + (lo - x)`` above ``lo``) anywhere.

        Never for the bounds (0, 1): ``x + (0 - x)`` is 0, and ``1 - x`` is off by at most half the
        float spacing below 1, so ``x + (1 - x)`` rounds (to nearest, ties to even) back to 1
        (checked for every float32 in [0, 1]).
        """
        if self.bounds == (0.0, 1.0):
            return False
        lo, hi = self.bounds
        return bool(((x + (hi - x)) < hi).any() or ((x + (lo - x)) > lo).any())

    def contains(self, x_adv: torch.Tensor, x: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Per-example bool: inside the ball (up to ``atol``, relative to eps) and the box.

        Measured in at least float32, so that low-precision points (float16, bfloat16) are judged by
        where they are, not by a rounded difference.
        """
        wide = torch.promote_types(torch.promote_types(x.dtype, x_adv.dtype), torch.float32)
        x_adv, x = x_adv.to(wide), x.to(wide)
        lo, hi = self.bounds
        in_box = ((x_adv >= lo - atol) & (x_adv <= hi + atol)).flatten(1).all(dim=1)
        in_ball = self.distance(x, x_adv) <= self.eps * (1 + atol) + atol
        return in_box & in_ball & torch.isfinite(x_adv).flatten(1).all(dim=1)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A point drawn uniformly from the ball around ``x``, then projected into the box."""
        delta = self._uniform_ball(x, generator)
        return self.project(x + delta, x)

    def sphere(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random directions (N, ...) of unit l_p norm, one per example of ``x`` (its shape, dtype, device).

        Uniform on the l_2 and l_1 spheres (normalized Gaussian and Laplace vectors); for l_inf
        a uniform point of the cube, scaled onto the sphere.
        """
        v = self._sphere_direction(x, generator)
        return v / _view(_flat_norm(v, self.p).clamp_min(1e-12), x)

    def step(self, grad: torch.Tensor, x_adv: torch.Tensor | None = None) -> torch.Tensor:
        """Steepest-ascent direction ``d`` with ``||d||_p = 1`` maximizing ``<d, grad>``.

        Examples whose gradient is zero get a zero direction.
        """
        raise NotImplementedError

    # --- per norm -------------------------------------------------------------------
    def _delta_box(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounds ``_project_delta`` gets, from the box relative to x (computed once per x)."""
        return lo, hi

    def _project_delta(self, delta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """The projection of ``delta`` onto the ball intersected with the box ``_delta_box(lo, hi)``.

        Rows whose box clip is inside the ball are that clip; the others are ``_project_outside``'s.
        """
        clipped = torch.clamp(delta, lo, hi)
        outside = _flat_norm(clipped, self.p) > self.eps
        if not outside.any():
            return clipped
        if self.eps == 0:
            return torch.where(_view(outside, delta), 0.0, clipped)
        every = bool(outside.all())  # the usual case in PGD: no gather / scatter of rows
        idx = None if every else outside.nonzero().squeeze(1)
        projected = self._project_outside(*((delta, lo, hi) if every else (delta[idx], lo[idx], hi[idx])))
        if every:
            return projected
        out = clipped.clone()
        out[idx] = projected
        return out

    def _project_outside(self, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """The projection of rows ``v`` whose clip to the box ``[lo, hi]`` lies outside the ball (eps > 0)."""
        raise NotImplementedError

    def _uniform_ball(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _sphere_direction(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random vectors (N, ...) whose direction ``sphere`` returns."""
        raise NotImplementedError


def names() -> list[str]:
    """The norm names of the command line and of ``run.json``: ``["linf", "l2", "l1"]`` (and any of the user's)."""
    return NORMS.names()


def by_name(norm: str) -> type[ThreatModel]:
    """The threat-model class of a norm name, in any case: ``by_name("linf") is by_name("Linf") is Linf``.

    Raises:
        ValueError: an unknown name (the message names a close one and lists the known ones).
    """
    if not isinstance(norm, str) or norm.lower() not in NORMS:
        raise ValueError(NORMS.unknown_message(norm))
    return NORMS[norm.lower()]


def check_norm(norm: object, what: str = "norm") -> type[ThreatModel]:
    """``norm`` itself if it is a threat-model class (``ro.Linf``, ``ro.L2``, ``ro.L1`` or a user's), else an error.

    Args:
        norm: the value to check.
        what: its name in the error message.

    Raises:
        TypeError: a name such as "linf" (the message says to pass ``by_name("linf")``), an
            instance such as ``Linf(0.3)``, or anything else.
    """
    if isinstance(norm, type) and issubclass(norm, ThreatModel) and norm.norm:
        return norm
    if isinstance(norm, str):
        hint = f"ro.threat.by_name({norm!r}) gives the class of a name"
    elif isinstance(norm, ThreatModel):
        hint = f"pass type(threat), here {type(norm).__name__}; the eps is given separately"
    else:
        hint = f"got {type(norm).__name__}"
    raise TypeError(f"{what} must be a threat-model class such as ro.Linf, ro.L2 or ro.L1, not {norm!r}: {hint}.")


def threat_from_name(norm: str, eps: float, **kwargs: Any) -> ThreatModel:
    """The threat model of a norm name and eps, e.g. ``threat_from_name("linf", 8 / 255)``.

    Args:
        norm: "linf", "l2" or "l1" (any case).
        eps: radius in pixel space.
        **kwargs: other fields of the threat model (``bounds``, L1's ``step_quantile``).
    """
    return by_name(norm)(eps, **kwargs)
