"""Threat models: the set S of allowed perturbations, and its geometry.

Each threat model is the intersection of an l_p ball of radius ``eps`` around
the clean input with the box ``bounds`` of valid pixel values. It provides the
two primitives every gradient attack needs (Madry et al. 2018, Sec. 2):

* ``step(grad)``: the steepest-ascent direction of unit norm,
  ``argmax_{||d||_p <= 1} <d, grad>``; an attack moves by ``step_size * step(grad)``.
* ``project(x_adv, x)``: the Euclidean projection onto ``S(x)``, the ball around
  ``x`` intersected with the box; ``projector(x)`` is the same map with what depends
  on ``x`` alone computed once, for an attack's iterates.

Result files store a threat model as ``to_dict()`` (``{"norm": "Linf", "eps": 0.3,
"bounds": [0.0, 1.0]}``); ``ThreatModel.from_dict`` reads it back. :data:`NORMS` is the one
table from norm names ("linf", "l2", "l1", any case) to classes (a
:class:`~robustopt._registry.Registry`; :func:`by_name` looks a name up in any case).

Example:
    >>> t = Linf(0.3)
    >>> x_adv = t.project(x + 0.5 * torch.randn_like(x), x)
    >>> ThreatModel.from_dict(t.to_dict()) == t
    True
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

__all__ = ["ThreatModel", "Linf", "L2", "L1", "NORMS", "by_name", "names", "threat_from_name", "check_norm",
           "check_images", "random_signs"]


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


@dataclass(frozen=True)
class Linf(ThreatModel):
    """l_inf ball (the paper's threat model): ``||delta||_inf <= eps``. Projection is exact."""

    norm: ClassVar[str] = "Linf"
    p: ClassVar[float] = math.inf
    dual_p: ClassVar[float] = 1.0

    def projector(self, x):
        if self._rounds_off_the_box(x):
            return super().projector(x)  # the general path puts clipped coordinates on the box
        # x + d rounds monotonically in d, and x + (lo - x) = lo, x + (hi - x) = hi here, so clipping
        # x + clamp(d, -eps, eps) to the box gives the general path's point bit for bit; two scalar
        # clamps, in place.
        lo, hi = self.bounds
        eps = self.eps

        def project(x_adv: torch.Tensor) -> torch.Tensor:
            delta = (x_adv - x).clamp_(-eps, eps)
            return torch.add(x, delta, out=delta).clamp_(lo, hi)

        return project

    def _delta_box(self, lo, hi):
        # The ball and the box are both boxes: their intersection is one box, clipped coordinate-wise.
        return lo.clamp(min=-self.eps), hi.clamp(max=self.eps)

    def _project_delta(self, delta, lo, hi):
        return torch.clamp(delta, lo, hi)

    def step(self, grad, x_adv=None):
        return grad.sign()

    def _uniform_ball(self, x, generator):
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * self.eps

    def _sphere_direction(self, x, generator):
        return 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1


def _l2_scale(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float) -> torch.Tensor:
    """Per row, the largest ``t`` in (0, 1) with ``||clip(t * v, lo, hi)||_2 <= eps``, exactly.

    For rows with ``||clip(v, lo, hi)||_2 > eps``, ``lo <= 0 <= hi`` and ``eps > 0``; returns ``t`` (N,).
    Coordinate i is clipped exactly when ``t > b_i = c_i / v_i`` (``c_i`` the bound ``v_i`` points
    to), so ``||clip(t v)||^2 = C + t^2 V`` with ``C`` the sum of ``c_i^2`` over the clipped
    coordinates and ``V`` the sum of ``v_i^2`` over the others. Active-set iteration from the ball's
    own answer ``t = eps / ||v||``: ``t <- sqrt((eps^2 - C) / V)`` with the coordinates clipped at
    ``t``. Every iterate is feasible and at least the previous one (clipped coordinates stay clipped
    as ``t`` grows, the others contribute at most ``t^2 v_i^2``), so the clipped set only grows; once
    it stops growing, ``C + t^2 V = eps^2`` holds exactly and ``t`` solves the KKT conditions. That
    takes at most ``d + 1`` rounds of a few elementwise passes; in practice 2-3, and one when the
    scaled point lies in the box.
    """
    v, lo, hi = v.flatten(1), lo.flatten(1), hi.flatten(1)
    # Float arithmetic only, in place on few buffers: comparisons, bool masks and fresh large
    # tensors each cost more than a float pass on CPU.
    c = torch.clamp(v * math.inf, lo, hi).nan_to_num_(nan=0.0)  # the bound v points to; 0 where v = 0
    b = torch.div(c, v).nan_to_num_(nan=math.inf)  # breakpoints; a zero coordinate is never clipped
    c2, v2, eps2 = c.square_(), v * v, eps * eps
    t = eps / v2.sum(dim=1).sqrt()
    mask, tmp = torch.empty_like(v), torch.empty_like(v)

    def clipped_at(t):  # 1.0 where clipped (b < t), else 0.0 (at b = t both readings agree)
        return torch.sub(t[:, None], b, out=mask).sign_().clamp_min_(0)

    count = clipped_at(t).sum(dim=1)
    for _ in range(v.shape[1] + 1):
        big_c = torch.mul(c2, mask, out=tmp).sum(dim=1)
        big_v = torch.addcmul(v2, v2, mask, value=-1, out=tmp).sum(dim=1)  # v2 * (1 - mask), exactly
        t = torch.where(big_v > 0, torch.maximum(t, ((eps2 - big_c).clamp_min(0) / big_v).sqrt()), t)
        new_count = clipped_at(t).sum(dim=1)
        if torch.equal(new_count, count):
            break
        count = new_count
    return t


def _l1_threshold(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float, newton_iters: int = 30,
                  bisect_iters: int = 45) -> torch.Tensor:
    """Per row, the smallest ``lam >= 0`` with ``||clip(soft_threshold(v, lam), lo, hi)||_1 <= eps``.

    For rows with ``||clip(v, lo, hi)||_1 > eps``, ``lo <= 0 <= hi`` and ``eps > 0``; returns ``lam`` (N,).
    ``psi(lam) = sum_i clamp(|v_i| - lam, 0, u_i)`` (``u_i`` the room the box leaves in the direction
    of ``v_i``) is piecewise linear and non-increasing. Newton steps on it, kept inside a bracket
    (a bisection step when one would leave it): a step is exact when no coordinate changes state
    (zero / shrinking / on the box) on its way, usually within 5-12 steps. A row that does not get
    there within ``newton_iters`` steps is bisected further and gets the feasible end of a bracket
    narrowed to 2^-40 of its start (as 40 bisection steps) or to rounding.
    """
    v, lo, hi = v.flatten(1), lo.flatten(1), hi.flatten(1)
    room = torch.where(v > 0, hi, -lo)
    a = torch.where(room > 0, v.abs(), -1.0)  # no room: the coordinate is 0 for every lam
    stuck = (room == 0).sum(dim=1).to(a.dtype)

    def evaluate(lam):
        # psi, #(|v| - lam > 0) and #(below the box): float passes only (bool masks are slow on CPU);
        # shrinking coordinates are counted in both, every other one with room in exactly one.
        g = (a - lam[:, None]).clamp_min_(0)
        capped = torch.minimum(g, room)
        return capped.sum(dim=1), g.sign_().sum(dim=1), (room - capped).sign_().sum(dim=1)

    d = a.shape[1]
    lo_lam = torch.zeros(len(a), dtype=a.dtype, device=a.device)  # psi(lo_lam) > eps
    hi_lam = a.amax(dim=1).clamp_min(0)  # psi(hi_lam) = 0 <= eps
    tol = hi_lam * max(2.0**-40, 4 * torch.finfo(a.dtype).eps)
    lam, (psi, moving, below) = lo_lam, evaluate(lo_lam)
    result, exact = hi_lam, torch.zeros(len(a), dtype=torch.bool, device=a.device)
    for it in range(newton_iters + bisect_iters):
        shrinking = moving + below - (d - stuck)
        newton = lam + (psi - eps) / shrinking.clamp_min(1)
        use_newton = (shrinking > 0) & (newton > lo_lam) & (newton < hi_lam)
        if it >= newton_iters:
            use_newton = torch.zeros_like(use_newton)
        cand = torch.where(use_newton, newton, (lo_lam + hi_lam) / 2)
        psi_c, moving_c, below_c = evaluate(cand)
        hit = (use_newton & (moving_c == moving) & (below_c == below)) | (psi_c == eps)
        result = torch.where(hit & ~exact, cand, result)
        exact |= hit
        feasible = psi_c <= eps
        hi_lam = torch.where(feasible, cand, hi_lam)
        lo_lam = torch.where(feasible, lo_lam, cand)
        if bool((exact | (hi_lam - lo_lam <= tol)).all()):
            break
        lam, psi, moving, below = cand, psi_c, moving_c, below_c
    return torch.where(exact, result, hi_lam)


@dataclass(frozen=True)
class L2(ThreatModel):
    """l_2 ball: ``||delta||_2 <= eps``.

    Projection onto ball ∩ box is exact (up to rounding): by the KKT conditions the
    solution is ``clip(t * v, box)`` for the largest ``t`` in (0, 1] whose norm is at most
    eps, found per example by a finite active-set iteration (``_l2_scale``; 2-3 rounds in
    practice, one when the scaled point lies in the box).
    """

    norm: ClassVar[str] = "L2"
    p: ClassVar[float] = 2.0
    dual_p: ClassVar[float] = 2.0

    def _project_outside(self, v, lo, hi):
        return torch.clamp(v * _view(_l2_scale(v, lo, hi, self.eps), v), lo, hi)

    def step(self, grad, x_adv=None):
        norms = _flat_norm(grad, 2)
        scale = torch.where(norms > 0, 1 / norms.clamp_min(1e-12), 0.0)  # per example: one pass over grad
        return grad * _view(scale, grad)

    def _uniform_ball(self, x, generator):
        n, d = x.shape[0], x[0].numel()
        direction = self.sphere(x, generator)
        radius = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
        return direction * _view(radius * self.eps, x)

    def _sphere_direction(self, x, generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@dataclass(frozen=True)
class L1(ThreatModel):
    """l_1 ball: ``||delta||_1 <= eps``.

    Projection onto ball ∩ box: ``clip(soft_threshold(v, lam), box)`` for the
    smallest ``lam >= 0`` that makes it feasible (exact up to rounding in practice: Newton
    steps safeguarded by bisection, ``_l1_threshold``).
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

    def _project_outside(self, v, lo, hi):
        lam = _l1_threshold(v, lo, hi, self.eps)
        return torch.clamp(v.sign() * (v.abs() - _view(lam, v)).clamp_min_(0), lo, hi)

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

    def top_k_step(self, grad: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        """The sparse ascent direction of L1-APGD with an adaptive sparsity (Croce & Hein 2021, "Mind the box").

        Per example, the coordinates whose ``|grad|`` is at least its value at rank
        ``floor((1 - fraction) * d)`` of ``d`` (ascending; at least the largest one) move by the
        sign of the gradient, all by the same amount, so that the direction has unit l_1 norm:
        about the top ``fraction`` of the coordinates (ties included). Zero gradient: zero direction.

        Args:
            grad: gradients (N, ...).
            fraction: per example, the share of coordinates to move (N,), in [0, 1].

        Returns:
            The direction, shape of ``grad``.
        """
        flat = grad.flatten(1)
        d = flat.shape[1]
        rank = ((1 - fraction.to(flat.dtype)) * d).floor().clamp(0, d - 1).long()
        threshold = flat.abs().sort(dim=1).values.gather(1, rank[:, None])
        signs = flat.sign() * (flat.abs() >= threshold)
        return (signs / signs.abs().sum(dim=1, keepdim=True).clamp_min(1)).view_as(grad)

    def _uniform_ball(self, x, generator):
        # Uniform in the l_1 ball: exponential spacings normalized by one extra exponential.
        n, d = x.shape[0], x[0].numel()
        e = _exponentials((n, d + 1), generator, x)
        magnitude = e[:, :d] / e.sum(dim=1, keepdim=True)
        return (magnitude * random_signs((n, d), generator, x) * self.eps).view_as(x)

    def _sphere_direction(self, x, generator):
        # i.i.d. Laplace coordinates: normalized, uniform on the l_1 sphere
        return _exponentials(x.shape, generator, x) * random_signs(x.shape, generator, x)



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
