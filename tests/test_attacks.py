"""FGSM / PGD (the gradient engine) and Transfer: closed forms on linear models, targets, restarts, strength.

The contract every attack keeps (ball, bounds, dtype, hygiene, seeds, bad input) is checked for
all registered attacks in test_attack_contract.py.

A linear classifier ``z = W x + b`` has closed-form answers: the CE gradient is
``W^T (softmax(z) - onehot(y))`` and, for two classes, the worst-case margin
inside an l_p ball is ``m(x) - eps * ||w_y - w_o||_*`` (dual norm). Attacks are
checked against these instead of against themselves.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import NUM_CLASSES, accuracy, make_convnet, make_data, make_linear
from torch import nn

import robustopt as ro
from robustopt.attacks import FGSM, PGD, Transfer


def ce_per_example(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


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


# --- cost and compilation -------------------------------------------------------------------
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


# --- configuration ----------------------------------------------------------------------------
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


# --- low precision: the attack works in float32, the point is exact in the input's dtype -------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("threat", [ro.Linf(0.1), ro.L2(0.5), ro.L1(2.0)], ids=str)
def test_low_precision_points_lie_inside_the_ball_in_their_own_dtype(dtype, threat):
    model = make_linear(dtype=dtype)
    x, y = make_data(n=64, dtype=dtype)
    res = PGD(threat, steps=5).run(model, x, y)
    assert res.x_adv.dtype == dtype
    distance = threat.distance(x.double(), res.x_adv.double())  # exact: every bf16/fp16 value is a float64
    assert (distance <= threat.eps * (1 + 1e-6)).all() and distance.max() > 0.9 * threat.eps
    assert ((res.x_adv >= 0) & (res.x_adv <= 1)).all()
    with torch.no_grad():  # the success flags are those of the returned points
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)
    ev = ro.evaluate(model, (x, y), [PGD(threat, steps=5)], progress=False)  # no point is refused
    assert ev.robust_accuracy <= ev.clean_accuracy


def test_under_autocast_the_perturbation_stays_in_float32():
    model = make_linear()
    x, y = make_data(n=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = PGD(ro.Linf(0.1), steps=5).run(model, x, y)
        ev = ro.evaluate(model, (x, y), [PGD(ro.Linf(0.1), steps=5)], progress=False)
    assert res.x_adv.dtype == torch.float32 and ro.Linf(0.1).contains(res.x_adv, x).all()
    assert ev.robust_accuracy <= ev.clean_accuracy
