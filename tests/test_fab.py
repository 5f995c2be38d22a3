"""FAB: exact projections, the closed-form minimal perturbation of linear models, the minimum-norm view, budgets.

The contract every attack keeps is checked for all registered attacks in test_attack_contract.py.

A linear classifier ``z = W x + b`` has a closed-form minimal adversarial perturbation: the
distance from x to the closest hyperplane ``z_l = z_y``, ``min_l (z_y - z_l) / ||w_l - w_y||_q``
(q the dual exponent), as long as the optimal move stays inside the box. FAB's linearization
is then exact, so it must find that distance up to its overshoot and the final bisection.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import NUM_CLASSES, accuracy, make_convnet, make_data, make_linear
from torch import nn

import robustopt as ro
from robustopt.attacks import FAB
from robustopt.attacks.fab import FABResult, hyperplane_box_projection

NORMS = {"Linf": (ro.Linf, math.inf, 1.0), "L2": (ro.L2, 2.0, 2.0), "L1": (ro.L1, 1.0, math.inf)}


def predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


class Constant(nn.Module):
    """Logits that ignore the input (class 0 wins by 100): nothing can be broken, gradients are 0."""

    def forward(self, x):
        z = torch.tensor([100.0, 0.0, -1.0, -2.0, -3.0], dtype=x.dtype)
        return z.expand(len(x), 5) + 0 * x.flatten(1).sum(1, keepdim=True)


# --- the projection onto hyperplane ∩ box --------------------------------------------------------
def _reference_norm(t, w, r, p):
    """min ||delta||_p by bisection on the multiplier (l_inf, l_2) or the greedy fill (l_1), one row."""
    flip = 1.0 if r >= 0 else -1.0
    w, r = w * flip, abs(r)
    cap = torch.where(w > 0, 1 - t, t) * (w != 0)
    a = (w != 0).double() if p == math.inf else w.abs()
    if p == 1:
        m, left = torch.zeros_like(t), r
        for i in w.abs().argsort(descending=True):
            take = min(cap[i].item(), left / w[i].abs().item()) if w[i] != 0 else 0.0
            m[i], left = take, left - take * w[i].abs().item()
        return m.sum().item()
    lo_l, hi_l = 0.0, 1e6
    for _ in range(200):
        mid = (lo_l + hi_l) / 2
        if (w.abs() * torch.minimum(mid * a, cap)).sum() >= r:
            hi_l = mid
        else:
            lo_l = mid
    return torch.linalg.vector_norm(torch.minimum(hi_l * a, cap), ord=p).item()


@pytest.mark.parametrize("norm", NORMS)
def test_projection_onto_hyperplane_and_box_is_exact(norm):
    _, p, _ = NORMS[norm]
    g = torch.Generator().manual_seed(0)
    n, d = 24, 10
    t = torch.rand(n, d, generator=g, dtype=torch.float64)
    t[:4, :3], t[4:8, :3] = 0.0, 1.0  # points on the box
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[:6, 5] = 0.0
    r = torch.randn(n, generator=g, dtype=torch.float64)
    r[0] = 0.0
    r[-2:] = torch.tensor([50.0, -50.0], dtype=torch.float64)  # the box cannot reach the hyperplane
    delta = hyperplane_box_projection(t, w, r, (0.0, 1.0), p)
    assert ((t + delta) >= -1e-12).all() and ((t + delta) <= 1 + 1e-12).all()
    assert (delta[:6, 5] == 0).all() and (delta[0] == 0).all()
    for i in range(n - 2):  # feasible rows: on the hyperplane, with the smallest norm
        assert (delta[i] @ w[i]).item() == pytest.approx(r[i].item(), abs=1e-9)
        ours = torch.linalg.vector_norm(delta[i], ord=p).item()
        assert ours == pytest.approx(_reference_norm(t[i], w[i], r[i].item(), p), rel=1e-7, abs=1e-9)
    for i in (n - 2, n - 1):  # infeasible: the box point closest to the hyperplane (a corner)
        corner = torch.where(w[i] * r[i].sign() > 0, 1 - t[i], -t[i]) * (w[i] != 0)
        torch.testing.assert_close(delta[i], corner)


# --- closed forms on linear models ----------------------------------------------------------------
def _linear_problem(norm):
    """Linear model, points in the middle of the box, and each point's minimal distance d*.

    Returns only the examples whose optimal move stays inside the box (there d* is the optimum).
    """
    _, p, q = NORMS[norm]
    model = make_linear(dtype=torch.float64)
    x, _ = make_data(n=64, dtype=torch.float64)
    x = 0.35 + 0.3 * x
    W = model[1].weight.detach()
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    v = W[None] - W[y][:, None]  # (n, C, d): normal of z_l - z_y
    dist = (z.gather(1, y[:, None]) - z) / torch.linalg.vector_norm(v, ord=q, dim=2)
    dist[torch.arange(len(x)), y] = math.inf
    d_star, s = dist.min(dim=1)
    v_s = v[torch.arange(len(x)), s]
    if p == math.inf:
        step = v_s.sign()
    elif p == 2:
        step = v_s / v_s.norm(dim=1, keepdim=True)
    else:
        step = torch.nn.functional.one_hot(v_s.abs().argmax(1), v_s.shape[1]).double() * v_s.sign()
    x_opt = x.flatten(1) + d_star[:, None] * step
    inside = ((x_opt >= 0) & (x_opt <= 1)).all(dim=1)
    assert inside.sum() >= 10
    return model, x[inside], y[inside], d_star[inside]


@pytest.mark.parametrize("norm", NORMS)
def test_finds_the_closed_form_minimal_perturbation_of_a_linear_model(norm):
    model, x, y, d_star = _linear_problem(norm)
    threat = NORMS[norm][0](10.0)
    res = FAB(threat, steps=10, early_stop=False).run(model, x, y)
    ratio = res.distance / d_star
    assert (ratio >= 1 - 1e-9).all() and (ratio <= 1.002).all(), ratio
    assert (predictions(model, res.x_min) != y).all()
    # without the final bisection the iterates settle eta-dependently just beyond the boundary
    ratio = FAB(threat, steps=10, early_stop=False, final_search=0).run(model, x, y).distance / d_star
    assert (ratio >= 1 - 1e-9).all() and (ratio <= 1.01).all(), ratio


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_broken_exactly_when_the_minimal_perturbation_is_within_eps(norm):
    model, x, y, d_star = _linear_problem(norm)
    eps = d_star.median().item()
    threat = NORMS[norm][0](eps)
    res = FAB(threat, steps=10).run(model, x, y)
    clear = (d_star / eps - 1).abs() > 0.01
    assert torch.equal(res.success[clear], (d_star <= eps)[clear])
    assert threat.contains(res.x_adv, x).all()
    assert torch.equal(res.x_adv[~res.success], x[~res.success])  # unbroken: the clean input
    assert (predictions(model, res.x_adv[res.success]) != y[res.success]).all()


def test_targeted_hits_the_target_class():
    model = make_linear(dtype=torch.float64)
    x, _ = make_data(n=20, dtype=torch.float64)
    y = predictions(model, x)
    targets = (y + 1 + torch.arange(20) % (NUM_CLASSES - 1)) % NUM_CLASSES
    res = FAB(ro.L2(5.0), steps=30).run(model, x, y, targets=targets)
    assert res.success.all()
    assert torch.equal(predictions(model, res.x_adv), targets)
    # FAB-T: the most likely wrong classes; success means misclassified
    res = FAB(ro.Linf(1.0), targeted=True, steps=20).run(model, x, y)
    assert res.success.all() and (predictions(model, res.x_adv) != y).all()


# --- the minimum-norm view -------------------------------------------------------------------------
CONFIGS = {
    "FAB": lambda t: FAB(t, steps=8),
    "FAB-restarts": lambda t: FAB(t, steps=5, restarts=2, early_stop=False),
    "FAB-T": lambda t: FAB(t, steps=5, targeted=True, n_target_classes=2),
}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_minimum_norm_view_is_consistent(config, norm, dtype):
    threat = NORMS[norm][0]({"Linf": 0.1, "L2": 0.5, "L1": 1.5}[norm])
    model = make_convnet(dtype=dtype)
    x, y = make_data(n=10, shape=(1, 8, 8), dtype=dtype)
    res = CONFIGS[config](threat).run(model, x, y)
    assert isinstance(res, FABResult)
    x_min = res.x_min
    assert x_min.shape == x.shape and x_min.dtype == x.dtype and x_min.device == x.device
    assert (x_min >= 0).all() and (x_min <= 1).all() and not x_min.requires_grad
    assert torch.equal(res.success, res.distance <= threat.eps)
    found = torch.isfinite(res.distance)
    assert (predictions(model, x_min[found]) != y[found]).all()
    torch.testing.assert_close(threat.distance(x, x_min)[found], res.distance[found])
    assert torch.equal(x_min[~found], x[~found])  # nothing found: the clean input


@pytest.mark.parametrize("norm", NORMS)
def test_the_minimum_norm_view_respects_other_bounds(norm):
    bounds = (-1.0, 2.0)
    threat = NORMS[norm][0](3.0, bounds=bounds)
    model = make_linear(scale=0.3)
    x, _ = make_data(n=12, bounds=bounds)
    x[:3], x[3:6] = 2.0, -1.0
    y = predictions(model, x)
    res = FAB(threat, steps=10).run(model, x, y)
    assert res.success.any()
    assert (res.x_min >= -1).all() and (res.x_min <= 2).all()


def test_already_misclassified_examples_are_their_own_minimum():
    model = make_convnet()
    x, y = make_data(n=12, shape=(1, 8, 8))
    wrong = predictions(model, x) != y
    assert wrong.any() and (~wrong).any()
    res = FAB(ro.L2(0.5), steps=4).run(model, x, y)
    assert (res.distance[wrong] == 0).all() and res.success[wrong].all()
    assert torch.equal(res.x_adv[wrong], x[wrong])


@pytest.mark.parametrize("norm", NORMS)
def test_deterministic_under_seed_and_generator(norm):
    model = make_convnet()
    x, _ = make_data(n=8, shape=(1, 8, 8))
    y = predictions(model, x)
    # eps below every minimal norm: no example breaks, so every restart runs, from radius eps / 2
    nearest = FAB(NORMS[norm][0](1.0), steps=10, early_stop=False).run(model, x, y).distance.min().item()
    atk = FAB(NORMS[norm][0](0.9 * nearest), steps=3, restarts=3, early_stop=False)  # short runs: restarts matter
    a, b = atk.run(model, x, y), atk.run(model, x, y)
    assert torch.equal(a.x_min, b.x_min) and torch.equal(a.x_adv, b.x_adv)
    other = dataclasses.replace(atk, seed=1).run(model, x, y)
    assert not torch.equal(a.x_min, other.x_min)  # the random restarts differ
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(atk.run(model, x, y, generator=g1).x_min, atk.run(model, x, y, generator=g2).x_min)


# --- budgets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_counts_gradient_evaluations_exactly(norm):
    threat = NORMS[norm][0](1.0)
    x, _ = make_data(n=7)
    y = torch.zeros(7, dtype=torch.long)  # Constant predicts class 0: nothing can be broken
    res = FAB(threat, steps=9).run(Constant(), x, y)
    assert (res.grad_evals, res.forwards) == (9 * 7, 7 + 9 * 7)  # one Jacobian + one check per step
    assert not res.success.any() and torch.isinf(res.distance).all()
    res = FAB(threat, steps=5, restarts=2, targeted=True, n_target_classes=3).run(Constant(), x, y)
    assert (res.grad_evals, res.forwards) == (3 * 2 * 5 * 7, 7 + 3 * 2 * 5 * 7)
    res = FAB(threat, steps=5, targeted=True).run(Constant(), x, y)  # 9 targets, only 4 wrong classes
    assert res.grad_evals == (NUM_CLASSES - 1) * 5 * 7


def test_early_stop_saves_work_and_breaks_the_same_examples():
    model, x, y, _ = _linear_problem("L2")
    threat = ro.L2(10.0)  # every example breaks in the first steps
    stop = FAB(threat, steps=20).run(model, x, y)
    full = FAB(threat, steps=20, early_stop=False).run(model, x, y)
    assert torch.equal(stop.success, full.success) and stop.success.all()
    assert stop.grad_evals < full.grad_evals == 20 * len(x)


# --- configuration ----------------------------------------------------------------------------------
def test_configuration_and_names():
    atk = FAB(ro.Linf(0.3), targeted=True)
    assert atk.name == "FAB-T" and atk.steps == 100 and atk.restarts == 1 and atk.n_target_classes == 9
    assert (atk.alpha_max, atk.eta, atk.beta) == (0.1, 1.05, 0.9)  # AutoAttack's values
    assert FAB(ro.L2(1.0)).name == "FAB" and FAB(ro.L1(1.0), label="FAB-L1").name == "FAB-L1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        atk.steps = 3  # type: ignore[misc]
    json.dumps(atk.describe())
    for kwargs in ({"steps": 0}, {"restarts": 0}, {"n_target_classes": 0}, {"targeted": "random"},
                   {"alpha_max": 1.5}, {"eta": 0.9}, {"beta": 0.0}, {"beta": 1.2}, {"final_search": -1},
                   {"early_stop": 1}):
        with pytest.raises(ValueError):
            FAB(ro.Linf(0.3), **kwargs)
    with pytest.raises(TypeError):
        FAB("linf")
    model = make_linear()
    x, y = make_data(n=4)
    with pytest.raises(ValueError, match="targets"):
        FAB(ro.Linf(0.1), steps=2)(model, x, y, targets=y[:2])
    with pytest.raises(ValueError):
        FAB(ro.Linf(0.1), steps=2)(model, x, y + NUM_CLASSES)


# --- strength: the reference implementation ----------------------------------------------------------
def test_as_strong_as_the_reference_fab(trained_cnn):
    """Against AutoAttack's FABAttack_PT on the same model and points: robust accuracy of FAB-T at an
    eps where about a quarter survives, and the median minimal norm of untargeted FAB."""
    fab_pt = pytest.importorskip("pyautoattack.fab_pt")
    model, x, y = trained_cnn
    x, y = x[:60], y[:60]
    eps = 0.1
    ours = FAB(ro.Linf(eps), targeted=True, n_target_classes=3).run(model, x, y)
    with torch.random.fork_rng():  # the reference seeds the global generator
        ref = fab_pt.FABAttack_PT(model, norm="Linf", n_restarts=1, n_iter=100, eps=eps, targeted=True,
                                  n_target_classes=3, device=x.device)
        x_ref = ref.perturb(x, y)
        ref.targeted = False
        x_min_ref = ref.attack_single_run(x, y, use_rand_start=False, is_targeted=False)
    assert ro.Linf(eps).contains(ours.x_adv, x).all()
    ours_acc, ref_acc = accuracy(model, ours.x_adv, y), accuracy(model, x_ref, y)
    assert 0.05 < ref_acc < 0.9  # an eps where it matters
    assert ours_acc <= ref_acc + 0.02

    correct = predictions(model, x) == y
    minimal = FAB(ro.Linf(eps), early_stop=False).run(model, x, y).distance[correct]
    ref_dist = ro.Linf(eps).distance(x, x_min_ref)
    ref_dist[predictions(model, x_min_ref) == y] = math.inf
    ref_dist = ref_dist[correct]
    assert torch.isfinite(minimal).sum() >= torch.isfinite(ref_dist).sum()
    assert minimal.median() <= 1.02 * ref_dist.median()
    assert minimal.median() >= 0.9 * ref_dist.median()
