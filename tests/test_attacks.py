"""Attacks: the contract (ball, bounds, dtype, hygiene), closed forms on linear models, strength.

A linear classifier ``z = W x + b`` has closed-form answers: the CE gradient is
``W^T (softmax(z) - onehot(y))`` and, for two classes, the worst-case margin
inside an l_p ball is ``m(x) - eps * ||w_y - w_o||_*`` (dual norm). Attacks are
checked against these instead of against themselves.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import NUM_CLASSES, accuracy, make_convnet, make_data, make_linear
from torch import nn

import robustopt as ro
from robustopt.attacks import FGSM, PGD, Transfer

THREATS = {
    "Linf": lambda bounds=(0.0, 1.0): ro.Linf(0.3, bounds=bounds),
    "L2": lambda bounds=(0.0, 1.0): ro.L2(1.0, bounds=bounds),
    "L1": lambda bounds=(0.0, 1.0): ro.L1(2.0, bounds=bounds),
}

CONFIGS = {
    "FGSM": lambda t: FGSM(t),
    "PGD": lambda t: PGD(t, steps=5),
    "PGD-clean-start": lambda t: PGD(t, steps=5, random_start=False),
    "PGD-restarts": lambda t: PGD(t, steps=3, restarts=3),
    "CW": lambda t: PGD(t, steps=5, loss="cw"),
    "CW+": lambda t: PGD(t, steps=5, loss="cw", kappa=50.0),
    "least-likely": lambda t: PGD(t, steps=5, targeted="least-likely"),
    "random-target": lambda t: PGD(t, steps=5, targeted="random"),
    "DLR": lambda t: PGD(t, steps=5, loss="dlr"),
    "DLR-targeted": lambda t: PGD(t, steps=5, loss="dlr", targeted="random"),
}


def ce_per_example(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


# --- the contract: inside the ball and the bounds, same shape/dtype/device, detached ------------
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("norm", THREATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_is_inside_ball_and_bounds(config, norm, dtype):
    t = THREATS[norm]()
    atk = CONFIGS[config](t)
    model = make_convnet(dtype=dtype)
    x, y = make_data(n=12, shape=(1, 8, 8), dtype=dtype)
    x_clean = x.clone()
    res = atk.run(model, x, y)
    x_adv = res.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == dtype and x_adv.device == x.device
    assert t.contains(x_adv, x).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    assert x_adv.grad_fn is None and not x_adv.requires_grad
    assert torch.equal(x, x_clean)  # the input is not mutated
    # the success flags tell the truth about the returned points
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    if atk.targeted is None:
        assert torch.equal(res.success, pred != y)
    elif atk.targeted == "least-likely":
        with torch.no_grad():
            least_likely = model(x).argmin(1)
        assert torch.equal(res.success, pred == least_likely)
    else:  # random targets are never the true class
        assert (pred[res.success] != y[res.success]).all()


@pytest.mark.parametrize("config", ["FGSM", "PGD", "CW+", "random-target"])
@pytest.mark.parametrize("norm", THREATS)
def test_other_bounds_are_respected(config, norm):
    bounds = (-1.0, 2.0)
    t = THREATS[norm](bounds)
    model = make_linear(scale=0.3)
    x, y = make_data(n=16, bounds=bounds)
    x[:4] = 2.0  # examples sitting on the upper bound
    x[4:8] = -1.0
    x_adv = CONFIGS[config](t)(model, x, y)
    assert t.contains(x_adv, x).all()
    assert (x_adv >= -1).all() and (x_adv <= 2).all()
    assert (x_adv != x).any()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("norm", THREATS)
def test_eps_zero_returns_x_exactly(config, norm):
    t = type(THREATS[norm]())(0.0)
    model = make_linear()
    x, y = make_data()
    assert torch.equal(CONFIGS[config](t)(model, x, y), x)
    # also with an explicit, non-zero step size
    assert torch.equal(PGD(t, steps=3, step_size=0.1, restarts=2)(model, x, y), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_follows_the_input_device():
    model = make_convnet().cuda()
    x, y = make_data(n=8, shape=(1, 8, 8))
    x_adv = PGD(ro.Linf(0.1), steps=3, restarts=2)(model, x.cuda(), y.cuda())
    assert x_adv.device == x.cuda().device and x_adv.dtype == x.dtype


# --- closed forms on linear models ----------------------------------------------------------
def linear_ce_gradient(model, x, y):
    """d CE / dx for logits W x + b, by hand: W^T (softmax(z) - onehot(y))."""
    w, b = model[1].weight, model[1].bias
    with torch.no_grad():
        z = x.flatten(1) @ w.T + b
        return ((z.softmax(1) - F.one_hot(y, w.shape[0]).to(z.dtype)) @ w).view_as(x)


def test_fgsm_linf_is_exact_on_a_linear_model():
    eps = 0.3
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=32, dtype=torch.float64)
    t = ro.Linf(eps, bounds=(-10.0, 10.0))  # the box never binds
    expected = x + eps * linear_ce_gradient(model, x, y).sign()
    torch.testing.assert_close(FGSM(t)(model, x, y), expected, rtol=0, atol=1e-12)


def test_fgm_l2_and_l1_are_exact_on_a_linear_model():
    eps = 0.7
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=32, dtype=torch.float64)
    g = linear_ce_gradient(model, x, y).flatten(1)
    expected_l2 = x + eps * (g / g.norm(dim=1, keepdim=True)).view_as(x)
    torch.testing.assert_close(FGSM(ro.L2(eps, bounds=(-10.0, 10.0)))(model, x, y), expected_l2, rtol=0, atol=1e-12)
    top = g.abs().argmax(dim=1)
    expected_l1 = x.flatten(1).clone()
    expected_l1[torch.arange(32), top] += eps * g[torch.arange(32), top].sign()
    t1 = ro.L1(eps, bounds=(-10.0, 10.0), step_quantile=1.0)
    torch.testing.assert_close(FGSM(t1)(model, x, y), expected_l1.view_as(x), rtol=0, atol=1e-12)


DUAL = {"Linf": 1.0, "L2": 2.0, "L1": float("inf")}


@pytest.mark.parametrize("norm", DUAL)
@pytest.mark.parametrize(
    "make_attack",
    [
        lambda t: FGSM(t),
        lambda t: PGD(t, steps=10, random_start=False),
        lambda t: PGD(t, steps=10, random_start=False, loss="cw", kappa=50.0),
    ],
    ids=["FGSM", "PGD", "CW+"],
)
def test_attacks_reach_the_optimal_margin_of_a_binary_linear_model(norm, make_attack):
    """min over the ball of (w_y - w_o).x + (b_y - b_o) = margin(x) - eps * ||w_y - w_o||_dual."""
    eps = 0.2
    model = make_linear(classes=2, dtype=torch.float64)
    x, y = make_data(n=32, classes=2, dtype=torch.float64)
    kwargs = {"step_quantile": 1.0} if norm == "L1" else {}
    t = {"Linf": ro.Linf, "L2": ro.L2, "L1": ro.L1}[norm](eps, bounds=(-10.0, 10.0), **kwargs)
    w = model[1].weight.detach()
    sign = (1 - 2 * y).to(x.dtype)  # margin of the true class: (z_0 - z_1) * sign
    dw = (w[0] - w[1])[None, :] * sign[:, None]

    def margin(inputs):
        with torch.no_grad():
            z = model(inputs)
        return (z[:, 0] - z[:, 1]) * sign

    optimum = margin(x) - eps * torch.linalg.vector_norm(dw, ord=DUAL[norm], dim=1)
    torch.testing.assert_close(margin(make_attack(t)(model, x, y)), optimum, rtol=0, atol=1e-9)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_from_a_random_start_nearly_reaches_the_linear_optimum(norm):
    eps = 0.2
    model = make_linear(classes=2, dtype=torch.float64)
    x, y = make_data(n=32, classes=2, dtype=torch.float64)
    t = {"Linf": ro.Linf, "L2": ro.L2}[norm](eps, bounds=(-10.0, 10.0))
    w = model[1].weight.detach()
    sign = (1 - 2 * y).to(x.dtype)
    gap = eps * torch.linalg.vector_norm(w[0] - w[1], ord=DUAL[norm])

    def margin(inputs):
        with torch.no_grad():
            z = model(inputs)
        return (z[:, 0] - z[:, 1]) * sign

    reached = margin(x) - margin(PGD(t, steps=40, rel_step_size=0.1)(model, x, y))
    assert (reached >= 0.99 * gap).all()
    assert (reached <= gap + 1e-9).all()


# --- targeted -------------------------------------------------------------------------------
WIDE = {
    "Linf": ro.Linf(3.0, bounds=(-10.0, 10.0)),
    "L2": ro.L2(10.0, bounds=(-10.0, 10.0)),
    "L1": ro.L1(30.0, bounds=(-10.0, 10.0)),
}


@pytest.mark.parametrize("norm", WIDE)
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_targeted_attacks_hit_their_targets(norm, loss):
    t = WIDE[norm]
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=40, dtype=torch.float64)
    with torch.no_grad():
        clean = model(x)

    def pred(x_adv):
        with torch.no_grad():
            return model(x_adv).argmax(1)

    res = PGD(t, steps=30, loss=loss, targeted="least-likely").run(model, x, y)
    assert res.success.all()
    assert torch.equal(pred(res.x_adv), clean.argmin(1))

    res = PGD(t, steps=30, loss=loss, targeted="random").run(model, x, y)
    assert res.success.all()
    p = pred(res.x_adv)
    assert (p != y).all()
    assert len(set(p.tolist())) > 2  # random targets, not one fixed class

    targets = (y + 1 + torch.arange(40) % (NUM_CLASSES - 1)) % NUM_CLASSES
    res = PGD(t, steps=30, loss=loss).run(model, x, y, targets=targets)
    assert res.success.all()
    assert torch.equal(pred(res.x_adv), targets)


@pytest.mark.parametrize("norm", WIDE)
def test_targeted_dlr_moves_towards_the_target(norm):
    """Targeted DLR (Croce & Hein 2020) only compares z_t with z_y, so it need not make t the top class;
    it must still raise z_t - z_y for every example, and its success flags must be truthful."""
    t = WIDE[norm]
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=40, dtype=torch.float64)
    targets = (y + 2) % NUM_CLASSES
    res = PGD(t, steps=30, loss="dlr").run(model, x, y, targets=targets)
    with torch.no_grad():
        before, after = model(x), model(res.x_adv)
    gain = (after.gather(1, targets[:, None]) - after.gather(1, y[:, None])) - (
        before.gather(1, targets[:, None]) - before.gather(1, y[:, None])
    )
    assert (gain > 0).all()
    assert torch.equal(res.success, after.argmax(1) == targets)
    assert res.success.float().mean() > 0.5


def test_random_targets_are_seeded_wrong_classes():
    model = make_linear()
    x, y = make_data(n=200)
    atk = PGD(ro.Linf(5.0, bounds=(-10.0, 10.0)), steps=20, targeted="random", seed=1)
    with torch.no_grad():
        p1 = model(atk(model, x, y)).argmax(1)
        p2 = model(atk(model, x, y)).argmax(1)
    assert torch.equal(p1, p2)
    assert (p1 != y).all()
    counts = torch.bincount(p1, minlength=NUM_CLASSES)
    assert (counts > 20).all()  # every class is used as a target (200 examples, 5 classes)


def test_explicit_targets_are_validated():
    model, (x, y) = make_linear(), make_data()
    atk = PGD(ro.Linf(0.1), steps=2)
    with pytest.raises(ValueError, match="targets must be"):
        atk(model, x, y, targets=y[:3])
    with pytest.raises(ValueError, match="targets must be in"):
        atk(model, x, y, targets=torch.full_like(y, NUM_CLASSES))


# --- restarts and keep-best -----------------------------------------------------------------
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_restarts_are_never_worse_per_example(trained_cnn, norm):
    model, x, y = trained_cnn
    x, y = x[:200], y[:200]
    t = ro.Linf(0.08) if norm == "Linf" else ro.L2(0.8)
    one = PGD(t, steps=5, restarts=1, seed=3).run(model, x, y)
    five = PGD(t, steps=5, restarts=5, seed=3).run(model, x, y)
    with torch.no_grad():
        broken1 = model(one.x_adv).argmax(1) != y
        broken5 = model(five.x_adv).argmax(1) != y
    assert 0 < broken1.sum() < len(y)  # the eps is interesting: some but not all break
    assert torch.equal(broken1, one.success) and torch.equal(broken5, five.success)
    assert not (broken1 & ~broken5).any()  # success with 5 restarts ⊇ success with the first one
    both_robust = ~broken1 & ~broken5
    loss1, loss5 = ce_per_example(model, one.x_adv, y), ce_per_example(model, five.x_adv, y)
    assert (loss5[both_robust] >= loss1[both_robust] - 1e-5).all()
    # restarts only run on the examples still robust
    steps, n = 5, len(y)
    assert steps * n <= five.grad_evals <= steps * n * 5
    assert five.grad_evals % steps == 0
    assert five.grad_evals < steps * n * 5  # some examples were broken by the first run


class DeadAtClean(nn.Module):
    """Logits W relu(x - 0.3): at x = 0.25 every gradient is exactly zero, a few pixels away it is not."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = make_linear(classes=3, scale=5.0)[1]

    def forward(self, x):
        return self.linear(torch.relu(x.flatten(1) - 0.3))


def test_restarts_after_the_first_start_at_random_points():
    """From the clean input PGD cannot move (zero gradient); later restarts start at random and can."""
    model = DeadAtClean()
    x = torch.full((64, 1, 4, 4), 0.25)
    with torch.no_grad():
        y = model(x).argmax(1)
    t = ro.Linf(0.2)
    one = PGD(t, steps=10, random_start=False, restarts=1).run(model, x, y)
    assert torch.equal(one.x_adv, x) and not one.success.any()
    four = PGD(t, steps=10, random_start=False, restarts=4).run(model, x, y)
    assert four.success.sum() > 10
    assert t.contains(four.x_adv, x).all()
    assert 10 * 64 < four.grad_evals < 4 * 10 * 64


def test_pgd_returns_the_best_iterate_not_the_last():
    """With a huge step, PGD-CE oscillates on a linear model; the kept point is the best one seen."""
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=32, dtype=torch.float64)
    t = ro.Linf(0.05, bounds=(-10.0, 10.0))
    fgsm = FGSM(t)(model, x, y)
    pgd = PGD(t, steps=8, step_size=0.05, random_start=False)(model, x, y)
    # the first PGD iterate is FGSM; keep-best means PGD's result is never worse than FGSM's
    broken_fgsm = model(fgsm).argmax(1) != y
    broken_pgd = model(pgd).argmax(1) != y
    assert not (broken_fgsm & ~broken_pgd).any()
    robust = ~broken_pgd
    assert (ce_per_example(model, pgd, y)[robust] >= ce_per_example(model, fgsm, y)[robust] - 1e-12).all()


def test_pgd_beats_fgsm_on_a_trained_model(trained_cnn):
    model, x, y = trained_cnn
    t = ro.Linf(0.1)
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, FGSM(t)(model, x, y), y)
    pgd = accuracy(model, PGD(t, steps=20, step_size=0.1 / 8)(model, x, y), y)
    assert clean > 0.95
    assert pgd < fgsm - 0.02 < clean


# --- randomness -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", THREATS)
def test_same_seed_same_result_different_seed_different_result(norm, convnet, image_data):
    x, y = image_data
    t = THREATS[norm]()
    a = PGD(t, steps=3, seed=5)(convnet, x, y)
    b = PGD(t, steps=3, seed=5)(convnet, x, y)
    c = PGD(t, steps=3, seed=6)(convnet, x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # an explicit generator overrides the seed and is just as reproducible
    d = PGD(t, steps=3).run(convnet, x, y, generator=torch.Generator().manual_seed(5)).x_adv
    assert torch.equal(a, d)


def test_attacks_do_not_touch_the_global_rng(convnet, image_data):
    x, y = image_data
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    PGD(ro.Linf(0.1), steps=2, restarts=2, targeted="random")(convnet, x, y)
    assert torch.equal(torch.rand(3), expected)


# --- model hygiene ----------------------------------------------------------------------------
class ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def dropout_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), ModeRecorder(), nn.Dropout(0.5), nn.Linear(32, NUM_CLASSES))


@pytest.mark.parametrize("make_attack", [lambda t: PGD(t, steps=3, restarts=2), FGSM], ids=["PGD", "FGSM"])
def test_model_mode_is_restored_and_attack_runs_in_eval(make_attack, data):
    x, y = data
    model = dropout_model()
    atk = make_attack(ro.Linf(0.1))
    model.train()
    a = atk(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert model[2].seen and not any(model[2].seen)  # every forward saw eval mode
    b = atk(model, x, y)
    assert torch.equal(a, b)  # dropout was off: the attack is deterministic
    model.eval()
    atk(model, x, y)
    assert not any(m.training for m in model.modules())
    model.train()
    model[3].eval()  # mixed modes come back exactly
    atk(model, x, y)
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True]


def test_no_parameter_gradient_and_requires_grad_unchanged(convnet, image_data):
    x, y = image_data
    convnet[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in convnet.parameters()]
    before = [p.detach().clone() for p in convnet.parameters()]
    for atk in [FGSM(ro.Linf(0.1)), PGD(ro.L2(0.5), steps=3, restarts=2, loss="cw"), PGD(ro.L1(1.0), loss="dlr", steps=2)]:
        atk(convnet, x, y)
        assert all(p.grad is None for p in convnet.parameters())
        assert [p.requires_grad for p in convnet.parameters()] == flags
        assert all(torch.equal(p, q) for p, q in zip(convnet.parameters(), before))


def test_works_inside_no_grad_and_returns_detached(convnet, image_data):
    x, y = image_data
    atk = PGD(ro.Linf(0.1), steps=3)
    outside = atk(convnet, x, y)
    with torch.no_grad():
        inside = atk(convnet, x, y)
    assert torch.equal(inside, outside)
    assert (inside != x).any()
    x_req = x.clone().requires_grad_(True)
    out = atk(convnet, x_req, y)
    assert out.grad_fn is None and not out.requires_grad
    assert x_req.grad is None
    assert torch.is_grad_enabled()


def test_inside_inference_mode_works_or_says_why(convnet, image_data):
    x, y = image_data
    atk = PGD(ro.Linf(0.1), steps=2)
    try:
        with torch.inference_mode():
            out = atk(convnet, x, y)
    except (ValueError, RuntimeError) as err:
        assert "inference_mode" in str(err) or "inference mode" in str(err)
    else:
        assert ro.Linf(0.1).contains(out, x).all()


@pytest.mark.slow
def test_a_compiled_model_gives_the_eager_result(image_data):
    """torch.compile is the user's option: a compiled model goes through the same engine unchanged."""
    x, y = image_data
    model = make_convnet().train()  # the attack switches to eval and back: a recompile, not an error
    atk = PGD(ro.Linf(0.1), steps=5, restarts=3, seed=0)  # restarts shrink the batch: dynamic shapes
    eager = atk.run(model, x, y)
    compiled = atk.run(torch.compile(model, backend="aot_eager", dynamic=True), x, y)
    torch.testing.assert_close(compiled.x_adv, eager.x_adv)
    assert torch.equal(compiled.success, eager.success) and compiled.grad_evals == eager.grad_evals
    assert model.training and all(p.grad is None for p in model.parameters())


def test_grad_evals_count_forward_backward_passes(convnet, image_data):
    x, y = image_data
    n = len(x)
    assert PGD(ro.Linf(0.1), steps=7).run(convnet, x, y).grad_evals == 7 * n
    assert FGSM(ro.Linf(0.1)).run(convnet, x, y).grad_evals == n
    assert PGD(ro.L2(0.5), steps=4, loss="cw").run(convnet, x, y).grad_evals == 4 * n


# --- transfer ---------------------------------------------------------------------------------
class Constant(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * self.dummy


def test_transfer_from_the_target_itself_equals_white_box(convnet, image_data):
    x, y = image_data
    inner = PGD(ro.Linf(0.1), steps=5, seed=2)
    white = inner.run(convnet, x, y)
    black = Transfer(convnet, inner, source_name="A").run(convnet, x, y)
    assert torch.equal(black.x_adv, white.x_adv)
    assert torch.equal(black.success, white.success)
    assert black.grad_evals == white.grad_evals


def test_transfer_success_is_measured_on_the_target(image_data):
    x, y = image_data
    source = make_convnet(seed=0)
    target = make_convnet(seed=1)
    inner = PGD(ro.Linf(0.3), steps=5)
    res = Transfer(source, inner).run(target, x, y)
    assert torch.equal(res.x_adv, inner(source, x, y))  # crafted on the source, not on the target
    with torch.no_grad():
        assert torch.equal(res.success, target(res.x_adv).argmax(1) != y)
        assert not torch.equal(res.success, source(res.x_adv).argmax(1) != y)


def test_constant_target_is_never_fooled_beyond_its_clean_error(image_data):
    x, y = image_data
    constant = Constant(torch.tensor([[0.0, 3.0, 1.0, 0.0, 0.0]]))
    res = Transfer(make_convnet(), PGD(ro.Linf(0.5), steps=5)).run(constant, x, y)
    assert torch.equal(res.success, y != 1)


def test_transfer_hygiene_and_targets(image_data):
    x, y = image_data
    source, target = make_convnet(seed=0), dropout_model_8x8()
    target.train()
    targets = (y + 1) % NUM_CLASSES
    res = Transfer(source, PGD(ro.Linf(0.5), steps=10), source_name="B").run(target, x, y, targets=targets)
    assert target.training
    with torch.no_grad():
        target.eval()
        assert torch.equal(res.success, target(res.x_adv).argmax(1) == targets)
    assert all(p.grad is None for p in [*source.parameters(), *target.parameters()])
    assert ro.Linf(0.5).contains(res.x_adv, x).all()


def dropout_model_8x8() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, NUM_CLASSES))


def test_transfer_rejects_bad_arguments(convnet):
    with pytest.raises(TypeError, match="source_model"):
        Transfer("model", PGD(ro.Linf(0.1)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attack"):
        Transfer(convnet, "pgd")  # type: ignore[arg-type]


# --- bad input --------------------------------------------------------------------------------
ATTACK = PGD(ro.Linf(0.1), steps=2)


@pytest.mark.parametrize(
    "mutate, error, phrase",
    [
        (lambda x, y: (torch.where(torch.arange(16).view(-1, 1, 1, 1) == 3, float("nan"), x), y), ValueError, "NaN"),
        (lambda x, y: (x * 255, y), ValueError, "outside the bounds"),
        (lambda x, y: (x - 0.5, y), ValueError, "Normalize"),
        (lambda x, y: ((x * 255).to(torch.uint8), y), TypeError, "uint8"),
        (lambda x, y: (x.numpy(), y), TypeError, "torch.Tensor"),
        (lambda x, y: (x, y[:-1]), ValueError, "do not match"),
        (lambda x, y: (x, y[:, None]), ValueError, "do not match"),
        (lambda x, y: (x, y.float()), TypeError, "integer"),
        (lambda x, y: (x, y.bool()), TypeError, "integer"),
        (lambda x, y: (x, y.tolist()), TypeError, "torch.Tensor"),
        (lambda x, y: (x, y + NUM_CLASSES), ValueError, r"labels must be in \[0, 4\]"),
        (lambda x, y: (x, y - NUM_CLASSES), ValueError, "labels must be in"),
        (lambda x, y: (x[0, 0, 0], y[:4]), ValueError, "batch"),
    ],
    ids=["nan", "0-255", "normalized", "uint8", "numpy", "short-y", "2d-y", "float-y", "bool-y", "list-y",
         "y-too-large", "y-negative", "not-a-batch"],
)
def test_bad_input_raises_a_helpful_error(mutate, error, phrase, linear_model, data):
    x, y = mutate(*data)
    with pytest.raises(error, match=phrase):
        ATTACK(linear_model, x, y)
    with pytest.raises(error, match=phrase):
        FGSM(ro.Linf(0.1))(linear_model, x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_non_integer_targets_raise_type_error(dtype, linear_model, data):
    x, y = data
    with pytest.raises(TypeError, match="integer"):
        ATTACK(linear_model, x, y, targets=torch.ones(len(y), dtype=dtype))


# Kept alive for the whole session: the library remembers warned models by id(), and a freed model's
# id could be reused by the softmax model of test_model_returning_probabilities_warns.
_EMPTY_BATCH_MODEL = make_linear()


@pytest.mark.filterwarnings("ignore:the model's outputs")
def test_empty_batch_returns_an_empty_batch(data):
    x, y = data
    res = ATTACK.run(_EMPTY_BATCH_MODEL, x[:0], y[:0])
    assert res.x_adv.shape == (0, *x.shape[1:]) and res.success.shape == (0,) and res.grad_evals == 0


_EMPTY_THEN_SOFTMAX_MODEL = nn.Sequential(make_linear(), nn.Softmax(dim=1))


def test_empty_batch_neither_warns_nor_silences_the_probability_warning(data):
    x, y = data
    model = _EMPTY_THEN_SOFTMAX_MODEL
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ATTACK(model, x[:0], y[:0])
    assert not [w for w in caught if issubclass(w.category, UserWarning)]
    with pytest.warns(UserWarning, match="probabilities"):
        ATTACK(model, x, y)


def test_integer_labels_of_other_widths_are_accepted(linear_model, data):
    x, y = data
    for dtype in (torch.int32, torch.uint8):
        assert ro.Linf(0.1).contains(ATTACK(linear_model, x, y.to(dtype)), x).all()


def test_model_returning_probabilities_warns(data):
    x, y = data
    model = nn.Sequential(make_linear(), nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="probabilities"):
        ATTACK(model, x, y)


def test_model_returning_logits_does_not_warn(data, recwarn):
    x, y = data
    ATTACK(make_linear(), x, y)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


class Reshaped(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.inner = make_linear()
        self.fn = fn

    def forward(self, x):
        return self.fn(self.inner(x))


@pytest.mark.parametrize(
    "fn", [lambda z: z[:, 0], lambda z: z[:, :, None], lambda z: z[:1], lambda z: (z, z)], ids=["1d", "3d", "rows", "tuple"]
)
def test_model_with_wrong_output_shape(fn, data):
    x, y = data
    with pytest.raises(ValueError, match="logits of shape"):
        ATTACK(Reshaped(fn), x, y)


def test_model_that_cannot_take_the_input(data):
    x, y = data
    model = nn.Sequential(nn.Flatten(), nn.Linear(17, NUM_CLASSES))
    with pytest.raises(ValueError, match="the model failed"):
        ATTACK(model, x, y)


@pytest.mark.parametrize(
    "kwargs, error, phrase",
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": -3}, ValueError, "steps"),
        ({"steps": 2.5}, ValueError, "steps"),
        ({"restarts": 0}, ValueError, "restarts"),
        ({"step_size": -0.01}, ValueError, "step_size"),
        ({"step_size": 0.0}, ValueError, "step_size"),
        ({"rel_step_size": -1.0}, ValueError, "rel_step_size"),
        ({"loss": "xent"}, ValueError, "unknown loss"),
        ({"loss": "ce", "kappa": 50.0}, ValueError, "kappa"),
        ({"loss": "dlr", "kappa": 1.0}, ValueError, "kappa"),
        ({"loss": "cw", "kappa": -1.0}, ValueError, "kappa"),
        ({"targeted": "most-likely"}, ValueError, "targeted"),
        ({"targeted": True}, ValueError, "targets="),
        ({"targeted": "Random"}, ValueError, "targeted"),
    ],
)
def test_invalid_configuration(kwargs, error, phrase):
    with pytest.raises(error, match=phrase):
        PGD(ro.Linf(0.1), **kwargs)


@pytest.mark.parametrize("threat", [0.3, "linf", None])
def test_threat_must_be_a_threat_model(threat):
    with pytest.raises(TypeError, match="threat"):
        PGD(threat)  # type: ignore[arg-type]


def test_targeted_dlr_needs_four_classes(data):
    x, y = data
    model = make_linear(classes=3)
    with pytest.raises(ValueError, match="4 classes"):
        PGD(ro.Linf(0.1), steps=2, loss="dlr", targeted="random")(model, x, y % 3)


# --- attacks are values -----------------------------------------------------------------------
def test_attacks_are_frozen_values_with_readable_names():
    t = ro.Linf(0.3)
    atk = PGD(t, steps=40, step_size=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        atk.steps = 10  # type: ignore[misc]
    assert atk == PGD(t, steps=40, step_size=0.01)
    assert FGSM(t).name == "FGSM" and FGSM(t).alpha == pytest.approx(0.3)
    assert atk.name == "PGD" and atk.alpha == 0.01
    assert PGD(t, steps=40).alpha == pytest.approx(2.5 * 0.3 / 40)
    assert PGD(t, loss="cw").name == "CW" and PGD(t, loss="cw", kappa=50.0).name == "CW+"
    assert PGD(t, targeted="least-likely").name.startswith("Targeted")
    assert PGD(t, label="mine").name == "mine"
    desc = json.loads(json.dumps(atk.describe()))
    assert desc["steps"] == 40 and desc["threat"]["eps"] == 0.3 and desc["threat"]["norm"] == "Linf"
    assert "PGD" in repr(atk)


# --- strength against a peer ------------------------------------------------------------------
def test_pgd_is_at_least_as_strong_as_torchattacks(trained_cnn):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = trained_cnn
    eps, alpha, steps = 0.1, 0.1 / 8, 20
    torch.manual_seed(0)
    theirs = accuracy(model, torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y), y)
    ours = accuracy(model, PGD(ro.Linf(eps), steps=steps, step_size=alpha)(model, x, y), y)
    assert ours <= theirs + 0.01, (ours, theirs)
