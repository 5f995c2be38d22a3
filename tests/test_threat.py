"""Geometry of the threat models: projection, steepest step, random start, validation.

The properties are the mathematical definitions (CleverHans ``test_utils.py``,
Foolbox ``test_distances.py`` style):

* ``project`` is the Euclidean projection onto ball ∩ box: it lands in the set,
  is idempotent, leaves feasible points alone, puts large perturbations exactly
  on the sphere, satisfies the variational inequality ``<v - p, z - p> <= 0`` for
  every feasible ``z`` (built without robustopt), beats every feasible point of
  a brute-force 2-D grid, and matches Duchi et al.'s l1-ball projection when
  the box does not bind.
* ``step(g)`` attains the dual norm: ``<step(g), g> = ||g||_*`` with ``||step(g)||_p = 1``.
* ``random_init`` is uniform in the ball (checked by statistics with known values).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import robustopt as ro
from robustopt.threat import check_images

NORMS = [ro.Linf, ro.L2, ro.L1]
BOUNDS = [(0.0, 1.0), (-1.0, 2.0), (-0.5, 0.25)]
EPSILONS = [0.0, 0.01, 0.1, 0.5, 2.0, 10.0]
SHAPE = (4, 2, 3, 3)  # N, C, H, W: 18 coordinates per example

HYP = settings(max_examples=25, deadline=None, derandomize=True)


def flat_norm(v: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), ord=p, dim=1)


def sample_problem(seed, norm, eps, bounds, scale, dtype=torch.float64, shape=SHAPE):
    """A threat model, clean points ``x`` in the box (some coordinates exactly on it), and targets ``v``."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = bounds
    x = lo + (hi - lo) * torch.rand(shape, generator=g, dtype=dtype)
    on_box = torch.rand(shape, generator=g) < 0.2
    corner = torch.where(torch.rand(shape, generator=g) < 0.5, lo, hi).to(dtype)
    x = torch.where(on_box, corner, x)
    v = x + scale * torch.randn(shape, generator=g, dtype=dtype)
    return norm(eps, bounds=bounds), x, v


# (seed, eps, bounds, scale of v - x); the norm is a pytest parameter so that every norm gets its share
params = st.tuples(
    st.integers(0, 2**16),
    st.sampled_from(EPSILONS),
    st.sampled_from(BOUNDS),
    st.sampled_from([0.01, 0.3, 3.0]),
)


def tol_for(t) -> float:
    """Absolute tolerance: Linf is exact; L2/L1 use a 40-step bisection (relative ~1e-12 of the bracket)."""
    return 1e-12 if isinstance(t, ro.Linf) else 1e-7 * max(1.0, t.eps)


# --- reference projections -----------------------------------------------------------------
def ball_projection(delta: torch.Tensor, t) -> torch.Tensor:
    """Euclidean projection onto the l_p ball alone (no box), independent of robustopt."""
    flat = delta.flatten(1)
    if isinstance(t, ro.Linf):
        out = flat.clamp(-t.eps, t.eps)
    elif isinstance(t, ro.L2):
        norms = flat.norm(dim=1, keepdim=True)
        out = flat * torch.where(norms > t.eps, t.eps / norms.clamp_min(1e-300), torch.ones_like(norms))
    else:  # Duchi, Shalev-Shwartz, Singer, Chandra (2008), Fig. 1, applied to |delta|, row-wise
        a = flat.abs()
        mu = a.sort(dim=1, descending=True).values
        css = mu.cumsum(dim=1)
        j = torch.arange(1, a.shape[1] + 1, dtype=a.dtype)
        rho = (mu - (css - t.eps) / j > 0).sum(dim=1, keepdim=True).clamp_min(1)  # support size
        theta = (css.gather(1, rho - 1) - t.eps) / rho
        shrunk = flat.sign() * (a - theta).clamp_min(0)
        out = torch.where(a.sum(dim=1, keepdim=True) <= t.eps, flat, shrunk)
    return out.view_as(delta)


def clip_then_scale(w: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
    """A feasible point built without robustopt: clip into the box, then shrink towards x into the ball.

    Shrinking towards x keeps box feasibility because x is in the (convex) box.
    """
    lo, hi = t.bounds
    delta = torch.minimum(torch.maximum(w - x, lo - x), hi - x)
    norms = flat_norm(delta, t.p)
    factor = torch.where(norms > t.eps, t.eps / norms.clamp_min(1e-300), torch.ones_like(norms))
    return x + delta * factor.view(-1, *([1] * (x.dim() - 1)))


# --- projection -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
@HYP
@given(params)
def test_projection_lands_in_ball_and_box(norm, problem):
    t, x, v = sample_problem(problem[0], norm, *problem[1:])
    p = t.project(v, x)
    assert p.shape == x.shape and p.dtype == x.dtype
    assert t.contains(p, x, atol=1e-9).all()
    lo, hi = t.bounds
    assert (p >= lo).all() and (p <= hi).all()  # the box holds exactly, not just up to atol
    assert (flat_norm(p - x, t.p) <= t.eps * (1 + 1e-9) + 1e-12).all()


@pytest.mark.parametrize("norm", NORMS)
@HYP
@given(params)
def test_projection_is_idempotent(norm, problem):
    t, x, v = sample_problem(problem[0], norm, *problem[1:])
    p = t.project(v, x)
    torch.testing.assert_close(t.project(p, x), p, atol=tol_for(t), rtol=0)


@pytest.mark.parametrize("norm", NORMS)
@HYP
@given(params, st.floats(0.0, 0.999))
def test_feasible_points_are_unchanged(norm, problem, shrink):
    t, x, v = sample_problem(problem[0], norm, *problem[1:])
    inside = x + shrink * (t.project(v, x) - x)  # convex combination of x and a feasible point
    torch.testing.assert_close(t.project(inside, x), inside, atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm", NORMS)
@HYP
@given(params)
def test_projection_is_the_euclidean_projection(norm, problem):
    """p = proj(v) iff <v - p, z - p> <= 0 for every feasible z (hence ||p - v|| <= ||z - v||).

    The feasible z are built without robustopt (clip into the box, shrink into the ball): points
    near p moved towards v or randomly (they expose any suboptimal p), and far ones.
    """
    t, x, v = sample_problem(problem[0], norm, *problem[1:])
    p = t.project(v, x)
    g = torch.Generator().manual_seed(problem[0] + 1)
    candidates = [x, clip_then_scale(v, x, t)]
    for h in (1e-4, 1e-3, 1e-2, 1e-1, 0.5, 1.0):
        candidates.append(clip_then_scale(p + h * (v - p), x, t))
        candidates.append(clip_then_scale(p + h * torch.randn(x.shape, generator=g, dtype=x.dtype), x, t))
    for _ in range(4):
        candidates.append(clip_then_scale(x + 3 * torch.randn(x.shape, generator=g, dtype=x.dtype), x, t))
    dist_p = flat_norm(p - v, 2)
    scale = 1.0 + flat_norm(v - x, 2)
    for z in candidates:
        assert t.contains(z, x, atol=1e-9).all()
        inner = ((v - p) * (z - p)).flatten(1).sum(dim=1)
        assert (inner <= 1e-9 * scale**2).all(), inner.max()
        assert (dist_p <= flat_norm(z - v, 2) + 1e-9 * scale).all()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("eps", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("bounds", BOUNDS)
def test_projection_beats_a_brute_force_grid_in_2d(norm, eps, bounds):
    """In 2-D, no feasible point of a fine grid is closer to v than proj(v)."""
    t = norm(eps, bounds=bounds)
    lo, hi = bounds
    g = torch.Generator().manual_seed(int(100 * eps))
    x = lo + (hi - lo) * torch.rand(6, 2, generator=g, dtype=torch.float64)
    x[0, 0], x[1, 1] = lo, hi  # on the box
    v = x + torch.randn(6, 2, generator=g, dtype=torch.float64)
    p = t.project(v, x)
    axis = torch.linspace(lo, hi, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (401^2, 2)
    for i in range(6):
        feasible = grid[torch.linalg.vector_norm(grid - x[i], ord=t.p, dim=1) <= eps]
        feasible = torch.cat([feasible, x[i : i + 1]])
        best = (feasible - v[i]).norm(dim=1).min()
        assert (p[i] - v[i]).norm() <= best + 1e-9
        step = (hi - lo) / 400
        assert (p[i] - v[i]).norm() >= best - 2 * step  # and the grid finds (nearly) the same point


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@HYP
@given(params)
def test_linf_projection_is_two_clamps(dtype, problem):
    """Linf: clamp(x + clamp(v - x, -eps, eps), box), to the last bit."""
    _, x, v = sample_problem(problem[0], ro.Linf, *problem[1:], dtype=dtype)
    eps, bounds = problem[1], problem[2]
    p = ro.Linf(eps, bounds=bounds).project(v, x)
    expected = (x + (v - x).clamp(-eps, eps)).clamp(*bounds)
    on_box = (expected == bounds[0]) | (expected == bounds[1])
    assert torch.equal(p[~on_box], expected[~on_box])
    ulp = torch.finfo(dtype).eps * max(abs(bounds[0]), abs(bounds[1]))
    torch.testing.assert_close(p[on_box], expected[on_box], rtol=0, atol=ulp)


@pytest.mark.parametrize("norm", NORMS)
def test_coordinates_clipped_by_the_box_land_exactly_on_it(norm):
    x = torch.tensor([[-0.47132333527827336]], dtype=torch.float64)
    p = norm(2.0, bounds=(-0.5, 0.25)).project(torch.tensor([[1.0]], dtype=torch.float64), x)
    assert p.item() == 0.25


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_perturbations_land_exactly_on_the_sphere(norm, dtype):
    """x = 0.5 and eps small: the box never binds, so the projection is the ball's."""
    eps = 0.1
    t = norm(eps)
    g = torch.Generator().manual_seed(0)
    x = torch.full((8, 1, 4, 4), 0.5, dtype=dtype)
    direction = torch.randn(x.shape, generator=g, dtype=dtype)
    v = x + 5.0 * direction
    p = t.project(v, x)
    # float32: the multiplier lives on the scale of |v| (~5), so one ulp of it is ~1e-5 of eps
    rtol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(t.distance(x, p), torch.full((8,), eps, dtype=dtype), rtol=rtol, atol=0)
    if norm is ro.L2:  # scaled back along the ray
        expected = x + eps * direction / flat_norm(direction, 2).view(-1, 1, 1, 1)
        torch.testing.assert_close(p, expected, rtol=0, atol=10 * rtol)
    else:
        torch.testing.assert_close(p - x, ball_projection(v - x, t), rtol=0, atol=10 * rtol)


@pytest.mark.parametrize("norm", NORMS)
def test_small_perturbations_are_left_alone(norm):
    eps = 0.1
    t = norm(eps)
    x = torch.full((4, 1, 4, 4), 0.5, dtype=torch.float64)
    delta = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    delta = 0.9 * eps * delta / flat_norm(delta, t.p).view(-1, 1, 1, 1)
    torch.testing.assert_close(t.project(x + delta, x), x + delta, rtol=0, atol=1e-15)


def test_box_binds_before_ball():
    """x on the upper bound pushed up: only the box acts, the ball does not shrink other coordinates."""
    t = ro.L2(1.0)
    x = torch.tensor([[1.0, 0.5]])
    v = torch.tensor([[3.0, 0.6]])  # clipped: [1.0, 0.6], distance 0.1 <= eps
    torch.testing.assert_close(t.project(v, x), torch.tensor([[1.0, 0.6]]))


def test_clip_box():
    t = ro.L2(0.1, bounds=(-1.0, 2.0))
    assert torch.equal(t.clip_box(torch.tensor([[-3.0, 0.5, 2.5]])), torch.tensor([[-1.0, 0.5, 2.0]]))


def test_contains_rejects_points_outside():
    x = torch.full((1, 4), 0.5)
    for t, outside in [
        (ro.Linf(0.1), x + torch.tensor([[0.11, 0, 0, 0]])),
        (ro.L2(0.1), x + torch.tensor([[0.08, 0.08, 0, 0]])),
        (ro.L1(0.1), x + torch.tensor([[0.06, 0.06, 0, 0]])),
        (ro.Linf(1.0), x + torch.tensor([[0.6, 0, 0, 0]])),  # in the ball, out of the box
        (ro.Linf(1.0), x + torch.tensor([[float("nan"), 0, 0, 0]])),
    ]:
        assert not t.contains(outside, x).any(), t


@pytest.mark.parametrize("norm", NORMS)
def test_distance_is_the_lp_norm(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 2, 3, 3, generator=g)
    x_adv = torch.rand(5, 2, 3, 3, generator=g)
    t = norm(0.3)
    d = t.distance(x, x_adv)
    assert d.shape == (5,)
    expected = [np.linalg.norm((x_adv[i] - x[i]).flatten().numpy(), ord=t.p) for i in range(5)]
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-6)


# --- steepest-ascent step -------------------------------------------------------------------
def gradients(seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 10, 10, generator=g, dtype=dtype) * 10 ** torch.empty(6, 1, 1, 1, dtype=dtype).uniform_(
        -3, 3, generator=g
    )


@HYP
@given(st.integers(0, 2**16), st.sampled_from([(ro.Linf(0.1), 1.0), (ro.L2(0.1), 2.0), (ro.L1(0.1, step_quantile=1.0), math.inf)]))
def test_step_attains_the_dual_norm(seed, case):
    t, dual = case
    grad = gradients(seed)
    d = t.step(grad)
    assert d.shape == grad.shape and d.dtype == grad.dtype
    torch.testing.assert_close(flat_norm(d, t.p), torch.ones(6, dtype=grad.dtype))
    torch.testing.assert_close((d * grad).flatten(1).sum(1), flat_norm(grad, dual), rtol=1e-10, atol=0)


@HYP
@given(st.integers(0, 2**16), st.sampled_from([ro.Linf(0.1), ro.L2(0.1), ro.L1(0.1, step_quantile=1.0)]))
def test_step_beats_every_unit_direction(seed, t):
    """step(g) is the argmax of <d, g> over the unit ball: no random unit direction does better."""
    grad = gradients(seed)
    best = (t.step(grad) * grad).flatten(1).sum(1)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(20):
        u = torch.randn(grad.shape, generator=g, dtype=grad.dtype)
        u = u / flat_norm(u, t.p).view(-1, 1, 1, 1)
        assert ((u * grad).flatten(1).sum(1) <= best * (1 + 1e-12)).all()


@pytest.mark.parametrize("quantile", [0.99, 0.9, 0.5])
def test_l1_sparse_step_averages_the_top_k(quantile):
    """Default l1 step (SLIDE): moves the top-k |g| coordinates, k = round((1 - q) d), ||d||_1 = 1."""
    t = ro.L1(1.0, step_quantile=quantile)
    grad = gradients(3)
    d = t.step(grad)
    k = max(1, round((1 - quantile) * grad[0].numel()))
    top = grad.flatten(1).abs().topk(k, dim=1).values
    torch.testing.assert_close(flat_norm(d, 1), torch.ones(6, dtype=grad.dtype))
    torch.testing.assert_close((d * grad).flatten(1).sum(1), top.mean(dim=1), rtol=1e-10, atol=0)
    assert ((d != 0).flatten(1).sum(1) == k).all()
    assert (d.sign() * grad.sign() >= 0).all()  # every moved coordinate goes uphill


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_l1_top_k_step_moves_the_top_fraction_by_equal_amounts(fraction):
    """L1-APGD's step: the coordinates at or above |g|'s rank floor((1 - s) d), all by 1 / k, uphill."""
    t = ro.L1(1.0)
    grad = gradients(4)
    d = t.top_k_step(grad, torch.full((6,), fraction, dtype=grad.dtype))
    n = grad[0].numel()
    k = n - min(math.floor((1 - fraction) * n), n - 1)  # distinct |g|: exactly these many move
    top = grad.flatten(1).abs().topk(k, dim=1).values
    torch.testing.assert_close(flat_norm(d, 1), torch.ones(6, dtype=grad.dtype))
    torch.testing.assert_close((d * grad).flatten(1).sum(1), top.mean(dim=1), rtol=1e-10, atol=0)
    assert ((d != 0).flatten(1).sum(1) == k).all()
    assert (d.sign() == grad.sign() * (d != 0)).all()


def test_l1_top_k_step_takes_a_fraction_per_example_and_a_zero_gradient_stays_put():
    t = ro.L1(1.0)
    grad = gradients(5)[:3]
    grad[2] = 0
    d = t.top_k_step(grad, torch.tensor([0.1, 0.6, 0.5], dtype=grad.dtype))
    n = grad[0].numel()
    assert [(d[i] != 0).sum().item() for i in range(3)] == [n - math.floor(0.9 * n), n - math.floor(0.4 * n), 0]
    assert torch.equal(d[2], torch.zeros_like(d[2]))


def dykstra_l1_box(v: torch.Tensor, x: torch.Tensor, t, rounds: int = 200) -> torch.Tensor:
    """The projection onto the l1 ball ∩ box by Dykstra's alternating projections (an independent solver)."""
    lo, hi = t.bounds
    z, p, q = v - x, torch.zeros_like(v), torch.zeros_like(v)
    for _ in range(rounds):
        y = ball_projection(z + p, t)
        p = z + p - y
        z_new = torch.minimum(torch.maximum(y + q, lo - x), hi - x)
        q = y + q - z_new
        z = z_new
    return x + z


@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("bounds", BOUNDS)
def test_l1_box_projection_solves_the_kkt_conditions_and_matches_a_convex_solver(eps, bounds):
    """p - x = clip(soft(v - x, lam), box - x) with lam >= 0, and lam > 0 only where ||p - x||_1 = eps."""
    t, x, v = sample_problem(7, ro.L1, eps, bounds, 1.0, shape=(5, 1, 2, 3))
    p = t.project(v, x)
    delta, target = (p - x).flatten(1), (v - x).flatten(1)
    lo, hi = (torch.as_tensor(b, dtype=x.dtype) - x.flatten(1) for b in bounds)
    for i in range(len(x)):
        free = (delta[i] != 0) & (delta[i] > lo[i]) & (delta[i] < hi[i])  # neither zero nor on the box
        lam = (target[i] - delta[i])[free].abs()
        if free.any():  # the free coordinates share one threshold lam >= 0
            assert lam.max() - lam.min() <= 1e-9 and lam.min() >= -1e-12
            lam = float(lam.mean())
        else:
            lam = float((target[i].abs() - delta[i].abs()).clamp_min(0).max())
        soft = target[i].sign() * (target[i].abs() - lam).clamp_min(0)
        torch.testing.assert_close(delta[i], torch.minimum(torch.maximum(soft, lo[i]), hi[i]), rtol=0, atol=1e-9)
        if lam > 1e-9:  # complementary slackness
            assert abs(float(delta[i].abs().sum()) - eps) <= 1e-9
    torch.testing.assert_close(p, dykstra_l1_box(v, x, t), rtol=0, atol=1e-6)


def test_l1_step_has_unit_norm_when_fewer_than_k_coordinates_are_nonzero():
    t = ro.L1(1.0, step_quantile=0.5)  # k = 150 of 300 coordinates
    grad = torch.zeros(2, 3, 10, 10, dtype=torch.float64)
    grad[0, 0, 0, :2] = torch.tensor([2.0, -1.0])
    grad[1, 2, 5, 5] = -0.5
    d = t.step(grad)
    torch.testing.assert_close(flat_norm(d, 1), torch.ones(2, dtype=grad.dtype))
    torch.testing.assert_close((d * grad).flatten(1).sum(1), torch.tensor([1.5, 0.5], dtype=grad.dtype))
    assert d[0, 0, 0, 0] == 0.5 and d[0, 0, 0, 1] == -0.5 and d[1, 2, 5, 5] == -1.0


def test_l1_step_skips_coordinates_blocked_by_the_box():
    t = ro.L1(1.0, step_quantile=1.0)
    x_adv = torch.tensor([[0.0, 0.5, 1.0]])
    grad = torch.tensor([[-5.0, 1.0, 3.0]])  # the two largest |g| push out of [0, 1]
    d = t.step(grad, x_adv)
    assert torch.equal(d, torch.tensor([[0.0, 1.0, 0.0]]))


@pytest.mark.parametrize("t", [ro.Linf(0.1), ro.L2(0.1), ro.L1(0.1), ro.L1(0.1, step_quantile=1.0)])
def test_zero_gradient_gives_zero_step(t):
    grad = gradients(0)
    grad[2] = 0
    d = t.step(grad)
    assert torch.isfinite(d).all()
    assert (d[2] == 0).all()
    assert (flat_norm(d[[0, 1, 3, 4, 5]], t.p) > 0.99).all()


# --- random start ---------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
@HYP
@given(params)
def test_random_init_is_inside_ball_and_box(norm, problem):
    t, x, _ = sample_problem(problem[0], norm, *problem[1:])
    z = t.random_init(x, torch.Generator().manual_seed(problem[0]))
    assert z.shape == x.shape and z.dtype == x.dtype
    assert t.contains(z, x, atol=1e-9).all()


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_is_seeded(norm):
    t = norm(0.3)
    x = torch.full((4, 1, 4, 4), 0.5)
    a = t.random_init(x, torch.Generator().manual_seed(7))
    b = t.random_init(x, torch.Generator().manual_seed(7))
    c = t.random_init(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_linf_random_init_is_uniform_in_the_cube():
    eps = 0.1
    t = ro.Linf(eps)
    x = torch.full((2000, 1, 4, 4), 0.5, dtype=torch.float64)
    delta = t.random_init(x, torch.Generator().manual_seed(0)) - x  # 32000 coordinates, U[-eps, eps]
    assert delta.abs().max() <= eps
    assert delta.abs().max() > 0.999 * eps
    assert abs(delta.mean().item()) < 0.02 * eps
    assert delta.abs().mean().item() == pytest.approx(eps / 2, rel=0.02)
    assert (delta.abs() < eps / 2).double().mean().item() == pytest.approx(0.5, abs=0.015)


@pytest.mark.parametrize("norm", [ro.L2, ro.L1])
def test_lp_random_init_is_uniform_in_the_ball(norm):
    """Uniform in a d-ball: ||delta|| / eps ~ Beta(d, 1): mean d/(d+1), P(r <= s) = s^d; symmetric."""
    eps, d = 0.3, 16
    t = norm(eps)
    x = torch.full((4000, 1, 4, 4), 0.5, dtype=torch.float64)
    delta = t.random_init(x, torch.Generator().manual_seed(0)) - x
    r = flat_norm(delta, t.p) / eps
    assert (r <= 1 + 1e-12).all()
    assert r.mean().item() == pytest.approx(d / (d + 1), abs=0.006)
    assert (r <= 0.9).double().mean().item() == pytest.approx(0.9**d, abs=0.03)
    assert delta.mean(dim=0).abs().max().item() < 0.1 * eps / math.sqrt(d)
    if norm is ro.L1:  # marginal of a coordinate of the uniform l1 ball: E|delta_i| = eps / (d + 1)
        assert delta.abs().mean().item() == pytest.approx(eps / (d + 1), rel=0.03)
    else:  # isotropy: directions have no preferred coordinate
        unit = delta.flatten(1) / flat_norm(delta, 2)[:, None]
        assert (unit**2).mean(dim=0).sub(1 / d).abs().max().item() < 0.01


# --- dtype, validation ----------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_float64_in_float64_out(norm):
    t = norm(0.2, bounds=(-1.0, 2.0))
    x = torch.rand(3, 2, 2, 2, dtype=torch.float64)
    v = x + torch.randn(3, 2, 2, 2, dtype=torch.float64)
    assert t.project(v, x).dtype == torch.float64
    assert t.random_init(x).dtype == torch.float64
    assert t.step(v).dtype == torch.float64
    assert t.distance(x, v).dtype == torch.float64
    # float64 precision is really used (a float32 round trip would be off by ~1e-8)
    inside = x + 1e-3 * torch.tanh(v - x)
    torch.testing.assert_close(t.project(inside, x), inside, rtol=0, atol=1e-15)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("eps", [-0.1, -1e-12, float("nan"), float("inf"), -float("inf")])
def test_bad_eps_raises_value_error(norm, eps):
    with pytest.raises(ValueError, match="eps"):
        norm(eps)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("eps", ["0.3", "8/255", None, True, [0.3]])
def test_non_numeric_eps_raises_type_error(norm, eps):
    with pytest.raises(TypeError, match="eps must be a number"):
        norm(eps)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.5, 0.5), (0.0, float("nan"))])
def test_bad_bounds_raise_value_error(norm, bounds):
    with pytest.raises(ValueError, match="bounds"):
        norm(0.1, bounds=bounds)


@pytest.mark.parametrize("norm", NORMS)
def test_bounds_that_are_not_a_pair_raise_type_error(norm):
    with pytest.raises(TypeError, match="bounds"):
        norm(0.1, bounds=("a", "b"))


@pytest.mark.parametrize("quantile", [-0.1, 1.5])
def test_l1_bad_step_quantile(quantile):
    with pytest.raises(ValueError, match="step_quantile"):
        ro.L1(1.0, step_quantile=quantile)


def test_valid_eps_forms_are_normalized():
    assert ro.Linf(0).eps == 0.0 and isinstance(ro.Linf(0).eps, float)
    assert ro.L2(torch.tensor(0.5)).eps == 0.5
    assert ro.Linf(np.float64(0.3)).eps == 0.3
    assert ro.Linf(0.3, bounds=(0, 1)).bounds == (0.0, 1.0)
    assert ro.Linf(0.3) == ro.Linf(0.3) and ro.Linf(0.3) != ro.L2(0.3)


@pytest.mark.parametrize("eps", [np.float32(0.25), np.int64(1)])
def test_numpy_scalar_eps_is_accepted(eps):
    assert ro.Linf(eps).eps == float(eps)


def test_threat_models_are_frozen():
    t = ro.Linf(0.3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.eps = 0.5  # type: ignore[misc]


def test_check_images_messages():
    with pytest.raises(TypeError, match="uint8"):
        check_images(torch.zeros(2, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_images(np.zeros((2, 1, 2, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        check_images(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(ValueError, match="outside the bounds"):
        check_images(torch.tensor([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="batch"):
        check_images(torch.tensor([0.5, 0.5]))
    check_images(torch.tensor([[-1.0, 2.0]]), bounds=(-1.0, 2.0))


@pytest.mark.parametrize("mean, std", [((0.1307,), (0.3081,)), ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))])
def test_data_normalized_in_float32_lies_in_bounds_computed_from_mean_and_std(mean, std):
    # Bounds given exactly, in float64, for data normalized in float32: rounding puts pixels a hair outside.
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    pixels = torch.linspace(0, 1, 256).repeat(len(mean), 1).view(len(mean), 16, 16)[None]
    x = (pixels - m) / s
    lo, hi = min((0 - a) / b for a, b in zip(mean, std)), max((1 - a) / b for a, b in zip(mean, std))
    for channel, (a, b) in enumerate(zip(mean, std)):  # each channel's own bounds, as Linf(bounds=...) takes one pair
        check_images(x[:, channel : channel + 1], bounds=((0 - a) / b, (1 - a) / b))
    check_images(x, bounds=(lo, hi))
    atk = ro.attacks.PGD(ro.Linf(0.1, bounds=((0 - mean[0]) / std[0], (1 - mean[0]) / std[0])), steps=1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    atk(model, x[:, :1], torch.zeros(1, dtype=torch.long))  # accepted by an attack too
    with pytest.raises(ValueError, match="outside the bounds"):  # beyond rounding: refused
        check_images(x[:, :1] + 1e-4, bounds=((0 - mean[0]) / std[0], (1 - mean[0]) / std[0]))


# --- threat models as data: the one name table, and the dict form of result files -----------------


@pytest.mark.parametrize("threat", [ro.Linf(8 / 255), ro.L2(0.5, bounds=(-1.0, 2.0)), ro.L1(12.0, step_quantile=0.9)])
def test_dict_round_trip_is_exact_through_json(threat):
    import json

    d = json.loads(json.dumps(threat.to_dict()))
    assert d["norm"] == threat.norm and d["eps"] == threat.eps and d["bounds"] == list(threat.bounds)
    back = ro.ThreatModel.from_dict(d)
    assert back == threat and type(back) is type(threat)  # eps to the last bit, bounds and L1's quantile too


def test_names_and_lookup():
    from robustopt.threat import by_name, names, threat_from_name

    assert names() == ["linf", "l2", "l1"]
    assert [by_name(n) for n in names()] == [ro.Linf, ro.L2, ro.L1]
    assert by_name("Linf") is by_name("LINF") is ro.Linf  # the class names (result files) and the CLI names
    assert threat_from_name("l2", 0.5, bounds=(-1, 1)) == ro.L2(0.5, bounds=(-1.0, 1.0))
    with pytest.raises(ValueError, match=r"unknown norm 'l3'; choose one of: linf, l2, l1"):
        by_name("l3")
    with pytest.raises(ValueError, match="unknown norm"):
        ro.ThreatModel.from_dict({"norm": "l0", "eps": 1.0})
    with pytest.raises(ValueError, match="step_quantile"):
        ro.ThreatModel.from_dict({"norm": "Linf", "eps": 0.3, "step_quantile": 0.5})  # L1's field on Linf


def test_check_norm_takes_a_class_and_says_how_to_get_one():
    from robustopt.threat import check_norm

    assert [check_norm(c) for c in (ro.Linf, ro.L2, ro.L1)] == [ro.Linf, ro.L2, ro.L1]
    with pytest.raises(TypeError, match=r"by_name\('linf'\)"):
        check_norm("linf")
    with pytest.raises(TypeError, match="type\\(threat\\), here Linf"):
        check_norm(ro.Linf(0.3))
    with pytest.raises(TypeError, match="threat-model class"):
        check_norm(ro.ThreatModel)  # the base class names no norm


def test_a_threat_model_of_ones_own_is_found_by_name_and_read_back():
    from dataclasses import dataclass
    from typing import ClassVar

    from robustopt._checks import check_eps, eps_warning
    from robustopt.threat import NORMS, by_name

    @dataclass(frozen=True)
    class Box(ro.Linf):  # inherits Linf's name: does not take its place
        pass

    @dataclass(frozen=True)
    class Cube(ro.Linf):
        norm: ClassVar[str] = "Cube"

    @dataclass(frozen=True)
    class LThree(ro.L1):
        norm: ClassVar[str] = "lthree"
        p: ClassVar[float] = 3.0  # an exponent of its own: the eps checks read it

    try:
        assert by_name("linf") is ro.Linf and by_name("cube") is Cube and by_name("LTHREE") is LThree
        assert ro.ThreatModel.from_dict(Cube(0.2).to_dict()) == Cube(0.2)
        assert NORMS.names()[-2:] == ["cube", "lthree"]
        check_eps(Cube(1.0), (1, 28, 28))  # a user's norm is checked like the others, with its own exponent
        with pytest.raises(ValueError, match=r"eps=1.01 \(L-inf\) exceeds 1"):
            check_eps(Cube(1.01), (1, 28, 28))
        with pytest.raises(ValueError, match=r"eps=13 \(L3\) exceeds 12,"):  # the diameter (3 * 24 * 24) ** (1/3)
            check_eps(LThree(13.0), (3, 24, 24))
        assert "mid-gray" in eps_warning(LThree(6.01), (3, 24, 24))
        with pytest.raises(ValueError, match="already taken"):
            @dataclass(frozen=True)
            class Other(ro.Linf):
                norm: ClassVar[str] = "CUBE"  # the name of another class, in any case
    finally:
        NORMS.unregister("cube")
        NORMS.unregister("lthree")
    assert Box(0.1).to_dict()["norm"] == "Linf"
