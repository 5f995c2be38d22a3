"""The l_p balls of the library: :class:`Linf` (the paper's), :class:`L2` and :class:`L1`.

Each gives its steepest-ascent step and its projection onto the ball intersected with the box
of valid inputs, exact up to rounding; importing this module registers the three names
"linf", "l2" and "l1" in :data:`robustopt.threat.NORMS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from robustopt.threat.base import ThreatModel, _exponentials, _flat_norm, _view, random_signs

__all__ = ["Linf", "L2", "L1"]


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
