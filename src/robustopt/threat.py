"""Threat models: the set S of allowed perturbations, and its geometry.

Each threat model is the intersection of an l_p ball of radius ``eps`` around
the clean input with the box ``bounds`` of valid pixel values. It provides the
two primitives every gradient attack needs (Madry et al. 2018, Sec. 2):

* ``step(grad)``: the steepest-ascent direction of unit norm,
  ``argmax_{||d||_p <= 1} <d, grad>``; an attack moves by ``step_size * step(grad)``.
* ``project(x_adv, x)``: the Euclidean projection onto ``S(x)``, the ball around
  ``x`` intersected with the box.

Example:
    >>> t = Linf(0.3)
    >>> x_adv = t.project(x + 0.5 * torch.randn_like(x), x)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = ["ThreatModel", "Linf", "L2", "L1", "check_images"]


def check_images(x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0), name: str = "x") -> None:
    """Raise a clear error unless ``x`` is a finite floating batch inside ``bounds``."""
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
    if x.numel() and (x.min() < lo or x.max() > hi):
        raise ValueError(
            f"{name} has values in [{x.min().item():.4g}, {x.max().item():.4g}], outside the bounds {bounds}. "
            "robustopt expects un-normalized images (e.g. in [0, 1]); put mean/std normalization "
            "inside the model (robustopt.models.Normalize) or pass the right bounds to the threat model."
        )


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _flat_norm(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(x.flatten(1), ord=p, dim=1)


@dataclass(frozen=True)
class ThreatModel:
    """Base class: the l_p ball of radius ``eps`` around x intersected with ``bounds``.

    Args:
        eps: radius of the ball in pixel space (inputs in ``bounds``), >= 0.
        bounds: (low, high) of valid input values, (0, 1) for images.
    """

    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)

    norm: ClassVar[str] = ""
    p: ClassVar[float] = 0.0  # the l_p exponent
    dual_p: ClassVar[float] = 0.0  # exponent of the dual norm

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
        lo, hi = self.bounds
        lo_rel, hi_rel = lo - x, hi - x
        delta = self._project_delta(x_adv - x, lo_rel, hi_rel)
        out = torch.where(delta >= hi_rel, hi, torch.where(delta <= lo_rel, lo, x + delta))
        return out.clamp(lo, hi)

    def contains(self, x_adv: torch.Tensor, x: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Per-example bool: inside the ball (up to ``atol``, relative to eps) and the box."""
        lo, hi = self.bounds
        in_box = ((x_adv >= lo - atol) & (x_adv <= hi + atol)).flatten(1).all(dim=1)
        in_ball = self.distance(x, x_adv) <= self.eps * (1 + atol) + atol
        return in_box & in_ball & torch.isfinite(x_adv).flatten(1).all(dim=1)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A point drawn uniformly from the ball around ``x``, then projected into the box."""
        delta = self._uniform_ball(x, generator)
        return self.project(x + delta, x)

    def step(self, grad: torch.Tensor, x_adv: torch.Tensor | None = None) -> torch.Tensor:
        """Steepest-ascent direction ``d`` with ``||d||_p = 1`` maximizing ``<d, grad>``.

        Examples whose gradient is zero get a zero direction.
        """
        raise NotImplementedError

    # --- per norm -------------------------------------------------------------------
    def _project_delta(self, delta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _uniform_ball(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Linf(ThreatModel):
    """l_inf ball (the paper's threat model): ``||delta||_inf <= eps``. Projection is exact."""

    norm: ClassVar[str] = "Linf"
    p: ClassVar[float] = math.inf
    dual_p: ClassVar[float] = 1.0

    def _project_delta(self, delta, lo, hi):
        # The ball and the box are both boxes: their intersection is clipped coordinate-wise.
        return torch.minimum(torch.maximum(delta.clamp(-self.eps, self.eps), lo), hi)

    def step(self, grad, x_adv=None):
        return grad.sign()

    def _uniform_ball(self, x, generator):
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * self.eps


def _bisect_multiplier(feasible_norm, eps: float, hi: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """Find per example the smallest multiplier lam >= 0 with ``feasible_norm(lam) <= eps``.

    ``feasible_norm`` is non-increasing in ``lam``; ``hi`` (N,) is a value where it is 0 <= eps.
    Returns the upper end of the bracket, so the result is always feasible.
    """
    lo_lam = torch.zeros_like(hi)
    hi_lam = hi
    for _ in range(iters):
        mid = (lo_lam + hi_lam) / 2
        ok = feasible_norm(mid) <= eps
        hi_lam = torch.where(ok, mid, hi_lam)
        lo_lam = torch.where(ok, lo_lam, mid)
    return hi_lam


@dataclass(frozen=True)
class L2(ThreatModel):
    """l_2 ball: ``||delta||_2 <= eps``.

    Projection onto ball ∩ box is exact up to bisection tolerance: by the KKT
    conditions the solution is ``clip(v / (1 + lam), box)`` for the smallest
    ``lam >= 0`` whose norm is at most eps, found by bisection per example.
    """

    norm: ClassVar[str] = "L2"
    p: ClassVar[float] = 2.0
    dual_p: ClassVar[float] = 2.0

    def _project_delta(self, delta, lo, hi):
        clipped = torch.minimum(torch.maximum(delta, lo), hi)
        norms = _flat_norm(clipped, 2)
        outside = norms > self.eps
        if not outside.any():
            return clipped
        idx = outside.nonzero().squeeze(1)
        v, lo_i, hi_i = delta[idx], lo[idx], hi[idx]
        shape = (-1,) + (1,) * (delta.dim() - 1)

        def norm_at(lam):
            return _flat_norm(torch.minimum(torch.maximum(v / (1 + lam.view(shape)), lo_i), hi_i), 2)

        if self.eps == 0:
            projected = torch.zeros_like(v)
        else:
            upper = _flat_norm(v, 2) / self.eps  # at lam = upper, ||v / (1 + lam)|| <= eps
            lam = _bisect_multiplier(norm_at, self.eps, upper)
            projected = torch.minimum(torch.maximum(v / (1 + lam.view(shape)), lo_i), hi_i)
        out = clipped.clone()
        out[idx] = projected
        return out

    def step(self, grad, x_adv=None):
        norms = _flat_norm(grad, 2)
        return grad / _view(norms.clamp_min(1e-12), grad) * _view(norms > 0, grad)

    def _uniform_ball(self, x, generator):
        n, d = x.shape[0], x[0].numel()
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / _view(_flat_norm(direction, 2).clamp_min(1e-12), x)
        radius = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
        return direction * _view(radius * self.eps, x)


@dataclass(frozen=True)
class L1(ThreatModel):
    """l_1 ball: ``||delta||_1 <= eps``.

    Projection onto ball ∩ box: ``clip(soft_threshold(v, lam), box)`` for the
    smallest ``lam >= 0`` that makes it feasible (exact up to bisection tolerance).
    The ascent step is sparse (Tramer & Boneh 2019, "SLIDE"): it moves the
    coordinates whose |grad| is in the top ``1 - step_quantile`` fraction, skipping
    coordinates that sit on the box and would be pushed out of it; with
    ``step_quantile=1`` it is the exact steepest l_1 step (one coordinate).

    Args:
        step_quantile: quantile of |grad| above which coordinates move, in [0, 1].
    """

    step_quantile: float = 0.99

    norm: ClassVar[str] = "L1"
    p: ClassVar[float] = 1.0
    dual_p: ClassVar[float] = math.inf

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.step_quantile <= 1.0:
            raise ValueError(f"step_quantile must be in [0, 1], got {self.step_quantile}.")

    def _project_delta(self, delta, lo, hi):
        clipped = torch.minimum(torch.maximum(delta, lo), hi)
        outside = _flat_norm(clipped, 1) > self.eps
        if not outside.any():
            return clipped
        idx = outside.nonzero().squeeze(1)
        v, lo_i, hi_i = delta[idx], lo[idx], hi[idx]
        shape = (-1,) + (1,) * (delta.dim() - 1)

        def shrink(lam):
            soft = v.sign() * (v.abs() - lam.view(shape)).clamp_min(0)
            return torch.minimum(torch.maximum(soft, lo_i), hi_i)

        upper = v.flatten(1).abs().amax(dim=1)  # at lam = max|v| everything is 0
        lam = _bisect_multiplier(lambda l: _flat_norm(shrink(l), 1), self.eps, upper)
        out = clipped.clone()
        out[idx] = shrink(lam)
        return out

    def step(self, grad, x_adv=None):
        g = grad
        if x_adv is not None:  # coordinates on the box pushed outward cannot move
            lo, hi = self.bounds
            blocked = ((x_adv <= lo) & (g < 0)) | ((x_adv >= hi) & (g > 0))
            g = g.masked_fill(blocked, 0)
        flat = g.flatten(1).abs()
        d = flat.shape[1]
        k = max(1, int(round((1 - self.step_quantile) * d)))
        kth = flat.topk(k, dim=1).values[:, -1:]
        mask = (flat >= kth) & (flat > 0)
        count = mask.sum(dim=1, keepdim=True).clamp_min(1)
        direction = g.flatten(1).sign() * mask / count
        return direction.view_as(grad)

    def _uniform_ball(self, x, generator):
        # Uniform in the l_1 ball: exponential spacings normalized by one extra exponential.
        n, d = x.shape[0], x[0].numel()
        e = -torch.rand((n, d + 1), generator=generator, device=x.device, dtype=x.dtype).clamp_min(1e-12).log()
        magnitude = e[:, :d] / e.sum(dim=1, keepdim=True)
        signs = torch.randint(0, 2, (n, d), generator=generator, device=x.device).to(x.dtype) * 2 - 1
        return (magnitude * signs * self.eps).view_as(x)
