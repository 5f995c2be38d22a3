"""APGD, Square and the standard suite: closed forms, budgets, strength.

The contract every attack keeps is checked for all registered attacks in test_attack_contract.py.

Closed forms on linear models (as in test_attacks.py): for two classes the worst margin in
an l_p ball is ``m(x) - eps * ||w_y - w_o||_*``; a model with constant logits can never be
broken, which makes every budget (gradient evaluations, queries) exactly predictable.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import NUM_CLASSES, accuracy, make_data, make_linear
from torch import nn

import robustopt as ro
from robustopt.attacks import APGD, PGD, Square
from robustopt.attacks.apgd import checkpoints
from robustopt.attacks.square import _block, p_schedule, window_side

THREATS = {"Linf": lambda: ro.Linf(0.3), "L2": lambda: ro.L2(1.0), "L1": lambda: ro.L1(2.0)}


class Constant(nn.Module):
    """Logits that ignore the input: class 0 wins by 100, so nothing can ever be broken."""

    def __init__(self, classes: int = NUM_CLASSES):
        super().__init__()
        self.linear = nn.Linear(16, classes)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.arange(classes, 0, -1).float() * 100)

    def forward(self, x):
        return self.linear(x.flatten(1).to(self.linear.weight.dtype)).to(x.dtype)


class NoGrad(nn.Module):
    """Wraps a model and refuses to run while autograd is recording."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        if torch.is_grad_enabled():
            raise RuntimeError("a black-box attack must not record gradients")
        return self.model(x)


class ConstantAny(nn.Module):
    """Constant logits for inputs of any shape (class 0 wins by a lot); records what it saw."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.tensor([[100.0, 0.0, 0.0, 0.0, 0.0]], dtype=x.dtype).expand(len(x), 5).clone()


class Bowl(nn.Module):
    """Two classes, ``z = (0, k ||x - c||^2)``: the CE of class 1 is maximal exactly at ``c``."""

    def __init__(self, c: torch.Tensor, k: float = 10.0):
        super().__init__()
        self.c, self.k = c, k

    def forward(self, x):
        d = ((x - self.c) ** 2).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(d), self.k * d], 1)


def predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


# --- budgets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", THREATS)
def test_apgd_counts_gradient_evaluations_exactly(norm):
    t = THREATS[norm]()
    x, y = make_data(n=7)
    y = torch.zeros_like(y)  # Constant predicts class 0: nothing can be broken
    model = Constant()
    res = APGD(t, steps=9).run(model, x, y)
    assert (res.grad_evals, res.forwards) == (9 * 7, 7 + 7)  # one run: steps * N, + clean and last iterate
    res = APGD(t, steps=9, restarts=3).run(model, x, y)
    assert (res.grad_evals, res.forwards) == (3 * 9 * 7, 7 + 3 * 7)
    res = APGD(t, steps=5, loss="dlr", targeted=True, n_target_classes=3, restarts=2).run(model, x, y)
    assert res.grad_evals == 3 * 2 * 5 * 7
    res = APGD(t, steps=5, loss="dlr", targeted=True).run(model, x, y)  # 9 targets, only 4 wrong classes
    assert res.grad_evals == (NUM_CLASSES - 1) * 5 * 7
    assert not res.success.any()


def test_square_uses_no_gradients_and_counts_queries():
    x, y = make_data(n=6)
    y = torch.zeros_like(y)
    for t in (ro.Linf(0.3), ro.L2(1.0)):
        res = Square(t, queries=25, restarts=2).run(NoGrad(Constant()), x, y)
        assert res.grad_evals == 0
        assert res.forwards == 6 + 2 * 25 * 6  # clean pass, then the whole budget of every restart
        assert not res.success.any()


def test_square_stops_on_broken_examples():
    model = make_linear()
    x, y = make_data(n=16)
    res = Square(ro.Linf(0.5), queries=300).run(NoGrad(model), x, y)
    assert res.success.all()
    assert torch.equal(predictions(model, res.x_adv) != y, res.success)
    assert res.forwards < 16 + 300 * 16 / 2  # stopped early: most examples break quickly


# --- closed forms -------------------------------------------------------------------------------
DUAL = {"Linf": 1.0, "L2": 2.0}


def _binary_linear_setup(norm, eps=0.2):
    model = make_linear(classes=2, dtype=torch.float64)
    x, y = make_data(n=24, classes=2, dtype=torch.float64)
    t = {"Linf": ro.Linf, "L2": ro.L2}[norm](eps, bounds=(-10.0, 10.0))
    w = model[1].weight.detach()
    sign = (1 - 2 * y).to(x.dtype)

    def margin(inputs):
        with torch.no_grad():
            z = model(inputs)
        return (z[:, 0] - z[:, 1]) * sign

    gap = eps * torch.linalg.vector_norm(w[0] - w[1], ord=DUAL[norm])
    return model, x, y, t, margin, gap


def test_apgd_linf_reaches_the_exact_optimum_of_a_binary_linear_model():
    """Sign steps of size 2 eps jump to the optimal vertex, whatever the random start."""
    model, x, y, t, margin, gap = _binary_linear_setup("Linf")
    x_adv = APGD(t, steps=5)(model, x, y)
    torch.testing.assert_close(margin(x) - margin(x_adv), gap.expand(len(x)), rtol=0, atol=1e-9)


def test_apgd_l2_nearly_reaches_the_optimum_of_a_binary_linear_model():
    model, x, y, t, margin, gap = _binary_linear_setup("L2")
    reached = margin(x) - margin(APGD(t, steps=20)(model, x, y))
    assert (reached >= 0.999 * gap).all() and (reached <= gap + 1e-9).all()


@pytest.mark.parametrize("norm,eps,tol", [("Linf", 0.3, 0.02), ("L2", 1.0, 0.01)])
def test_apgd_step_size_halving_finds_an_interior_maximum(norm, eps, tol):
    """The maximum sits inside the ball: fixed steps of 2 eps oscillate, APGD's halving converges."""
    t = {"Linf": ro.Linf, "L2": ro.L2}[norm](eps, bounds=(-10.0, 10.0))
    x = torch.full((8, 1, 4, 4), 0.5, dtype=torch.float64)
    c = x + torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.4 - 0.2
    model, y = Bowl(c), torch.ones(8, dtype=torch.long)
    dist = lambda x_adv: (x_adv - c).flatten(1).abs().amax(dim=1)  # noqa: E731
    assert (dist(APGD(t, steps=50)(model, x, y)) < tol).all()
    assert (dist(PGD(t, steps=50, step_size=2 * eps)(model, x, y)) > 0.1).any()


def test_square_linf_stays_on_vertices_and_l2_on_the_sphere():
    """Without the box: Linf proposals are vertices x +- eps; L2 mass moving keeps ||delta|| = eps."""
    x, y = make_data(n=6, shape=(2, 6, 6), dtype=torch.float64)
    y = torch.zeros_like(y)
    model = ConstantAny()
    linf = ro.Linf(0.3, bounds=(-10.0, 10.0))
    delta = Square(linf, queries=60).run(model, x, y).x_adv - x
    torch.testing.assert_close(delta.abs(), torch.full_like(delta, 0.3), rtol=0, atol=1e-12)
    l2 = ro.L2(1.5, bounds=(-10.0, 10.0))
    res = Square(l2, queries=60).run(model, x, y)
    torch.testing.assert_close(l2.distance(x, res.x_adv), torch.full((6,), 1.5, dtype=x.dtype), rtol=1e-9, atol=1e-9)


def test_square_proposals_change_the_point_and_move_one_window():
    x, y = make_data(n=4, shape=(1, 8, 8), dtype=torch.float64)
    y = torch.zeros_like(y)
    model = ConstantAny()
    Square(ro.Linf(0.3, bounds=(-10.0, 10.0)), queries=30).run(model, x, y)
    queried = model.seen[1:]  # the clean pass, then the start, then proposals
    start = queried[0]
    # nothing is ever accepted (constant loss), so every proposal differs from the start in one square
    for proposal in queried[1:]:
        changed = (proposal != start).flatten(1).any(dim=1)
        assert changed.all()
        rows = (proposal != start)[:, 0].any(dim=2)
        cols = (proposal != start)[:, 0].any(dim=1)
        assert (rows.sum(1) <= 7).all() and (cols.sum(1) <= 7).all()


def test_schedules_follow_the_papers():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]
    assert p_schedule(0.8, 10, 10000) == 0.8 and p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 9000, 10000) == 0.8 / 512
    assert p_schedule(0.8, 6, 5000) == 0.4  # rescaled: iteration 6 of 5000 is 12 of 10000
    assert window_side(0.8, 28, 28) == 25 and window_side(0.8, 4, 4) == 3 and window_side(1e-4, 28, 28) == 1
    b = _block(5)
    assert abs(b.norm().item() - 1) < 1e-12 and (b[:2] > 0).all() and (b[2:] < 0).all()


# --- strength --------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,eps", [("Linf", 0.1), ("L2", 0.5)])
def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(trained_cnn, norm, eps):
    model, x, y = trained_cnn
    t = {"Linf": ro.Linf, "L2": ro.L2}[norm](eps)
    pgd = accuracy(model, PGD(t, steps=20)(model, x, y), y)
    apgd = accuracy(model, APGD(t, steps=20)(model, x, y), y)
    clean = accuracy(model, x, y)
    assert apgd <= pgd < clean - 0.3


def test_apgd_t_breaks_and_hits_targets():
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=30, dtype=torch.float64)
    wide = ro.Linf(3.0, bounds=(-10.0, 10.0))
    targets = (y + 1 + torch.arange(30) % (NUM_CLASSES - 1)) % NUM_CLASSES
    for loss in ("dlr", "ce", "cw"):
        res = APGD(wide, steps=20, loss=loss).run(model, x, y, targets=targets)
        assert res.success.all() and torch.equal(predictions(model, res.x_adv), targets)
    res = APGD(wide, steps=10, loss="dlr", targeted=True, n_target_classes=2).run(model, x, y)
    assert res.success.all()
    assert torch.equal(res.success, predictions(model, res.x_adv) != y)


def test_apgd_t_at_least_as_strong_as_its_first_target(trained_cnn):
    model, x, y = trained_cnn
    x, y = x[:150], y[:150]
    t = ro.Linf(0.1)
    with torch.no_grad():
        logits = model(x)
    first = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    one = APGD(t, steps=15, loss="dlr").run(model, x, y, targets=first).success
    all_targets = APGD(t, steps=15, loss="dlr", targeted=True, n_target_classes=3).run(model, x, y).success
    assert all_targets.sum() >= one.sum() > 0


def test_square_finds_adversarial_examples_on_an_easy_model():
    model = make_linear()
    x, y = make_data(n=16)
    for t in (ro.Linf(0.4), ro.L2(2.0)):
        res = Square(t, queries=400).run(model, x, y)
        assert res.success.float().mean() >= 0.9
        assert torch.equal(predictions(model, res.x_adv) != y, res.success)


# --- the standard suite -------------------------------------------------------------------------------
def test_standard_suite_lists_the_attacks():
    t = ro.Linf(0.3)
    std = ro.suites.standard(t)
    assert [a.name for a in std] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]  # AutoAttack's order
    assert [a.steps for a in std] == [100, 100, 100, 5000]
    assert std[1].targeted and std[1].n_target_classes == 9 and std[1].loss == "dlr"
    assert std[2].targeted and std[2].n_target_classes == 9 and std[2].restarts == 1
    fast = ro.suites.standard(ro.L2(0.5), version="fast", seed=3)
    assert [a.name for a in fast] == ["APGD-CE", "APGD-T"] and fast[1].n_target_classes == 3
    assert all(a.seed == 3 for a in fast)
    l1 = ro.suites.standard(ro.L1(10.0))  # AutoAttack's L1 protocol: L1-APGD with the 3-2-1 eps schedule
    assert [a.name for a in l1] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert l1[0].restarts == 5 and l1[1].n_target_classes == 5 and l1[0].decreasing_eps and l1[1].decreasing_eps
    with pytest.raises(ValueError):
        ro.suites.standard(t, version="plus")


def test_standard_suite_runs_as_a_cascade(trained_cnn):
    model, x, y = trained_cnn
    x, y = x[:24], y[:24]
    ev = ro.evaluate(model, (x, y), ro.suites.standard(ro.Linf(0.1)), mode="cascade", progress=False)
    assert [r.name for r in ev.rows] == ["Natural", "APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert [r.steps for r in ev.rows] == [None, 100, 100, 100, 5000]
    accs = [r.accuracy for r in ev.rows]
    assert all(a >= b for a, b in zip(accs, accs[1:]))  # a cascade never gains accuracy
    assert ev.robust_accuracy == ev.rows[-1].worst_case < ev.rows[1].accuracy < ev.clean_accuracy
    assert ev.rows[1].grad_evals == 100 * ev.rows[1].attacked  # one run of 100 steps per example
    assert ev.rows[2].attacked == round(24 * ev.rows[1].accuracy) > 0  # only what APGD-CE left
    assert ev.rows[3].grad_evals <= 3 * 100 * ev.rows[3].attacked  # FAB-T: 3 targets (4 classes), <= 100 steps
    assert ev.rows[4].grad_evals == 0
    json.dumps([r.attack for r in ev.rows])


# --- configuration ---------------------------------------------------------------------------------
def test_bad_configurations_raise():
    t = ro.Linf(0.3)
    for kwargs in ({"steps": 0}, {"steps": 2.5}, {"restarts": 0}, {"loss": "hinge"}, {"targeted": "random"},
                   {"n_target_classes": 0}, {"rho": 0.0}, {"rho": 1.5}):
        with pytest.raises(ValueError):
            APGD(t, **kwargs)
    for kwargs in ({"queries": 0}, {"p_init": 0.0}, {"p_init": 1.5}, {"loss": "dlr"}, {"restarts": 0}):
        with pytest.raises(ValueError):
            Square(t, **kwargs)
    with pytest.raises(TypeError):
        APGD("linf")


def test_square_needs_images():
    model = make_linear()
    x, y = make_data(n=4)
    with pytest.raises(ValueError, match="N, C, H, W"):
        Square(ro.Linf(0.1))(model, x.flatten(1), y)


def test_attacks_are_frozen_values():
    atk = APGD(ro.Linf(0.3), loss="dlr", targeted=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        atk.steps = 3  # type: ignore[misc]
    assert atk.name == "APGD-T" and atk.steps == 100 and atk.restarts == 1
    assert APGD(ro.L2(1.0), loss="cw").name == "APGD-CW" and APGD(ro.L2(1.0), targeted=True).name == "APGD-T-CE"
    sq = Square(ro.Linf(0.3), queries=100, label="Square-100")
    assert sq.name == "Square-100" and sq.steps == 100 and sq.restarts == 1
    json.dumps(atk.describe()), json.dumps(sq.describe())


# --- optional: agreement with the reference implementation -----------------------------------------
def test_robust_accuracy_agrees_with_autoattack(trained_cnn):
    pyautoattack = pytest.importorskip("pyautoattack")  # the original code, repackaged (the test extra has it)
    model, x, y = trained_cnn
    x, y = x[:100], y[:100]
    ours = ro.evaluate(model, (x, y), ro.suites.standard(ro.Linf(0.1), version="fast"), progress=False).robust_accuracy
    adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=0.1, version="custom", attacks=["apgd-ce", "apgd-t"],
                                        device="cpu")
    adversary.apgd_targeted.n_target_classes = 3
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=100)
    assert ro.Linf(0.1).contains(x_adv, x).all()
    theirs = accuracy(model, x_adv, y)
    assert ours <= theirs + 0.02  # at least as strong, up to the randomness of the starts


@pytest.mark.slow
def test_l1_suite_is_as_strong_as_autoattacks_l1_version(trained_cnn):
    """The L1 suite's APGD-CE and APGD-T against AutoAttack's L1 APGD (use_largereps, 5 restarts, targets)."""
    pyautoattack = pytest.importorskip("pyautoattack")
    model, x, y = trained_cnn
    x, y = x[:60], y[:60]
    t = ro.L1(2.0)
    ours = ro.evaluate(model, (x, y), ro.suites.standard(t)[:2], progress=False).robust_accuracy
    adversary = pyautoattack.AutoAttack(model, norm="L1", eps=t.eps, version="standard", device="cpu")
    adversary.attacks_to_run = ["apgd-ce", "apgd-t"]
    adversary.apgd_targeted.n_target_classes = 3  # the model has 4 classes
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=60)
    assert t.contains(x_adv, x).all()
    assert ours <= accuracy(model, x_adv, y)  # measured: equal, at eps 1, 2 and 3 on 100 points


# --- L1-APGD ("Mind the box") ------------------------------------------------------------------------
@pytest.mark.parametrize("steps, parts", [
    (100, [(30.0, 30), (20.0, 30), (10.0, 40)]), (10, [(30.0, 3), (20.0, 3), (10.0, 4)]),
    (4, [(30.0, 2), (20.0, 1), (10.0, 1)]), (2, [(30.0, 1), (10.0, 1)]), (1, [(10.0, 1)]),
])
def test_l1_decreasing_eps_schedule_ends_at_eps_and_spends_the_budget(steps, parts):
    from robustopt.attacks.apgd import _l1_schedule

    assert _l1_schedule(10.0, steps, True) == parts
    assert _l1_schedule(10.0, steps, False) == [(10.0, steps)]


@pytest.mark.parametrize("decreasing_eps", [False, True])
def test_l1_apgd_budget_and_points(decreasing_eps):
    """Every part starts with a gradient at its start point; the last iterate is only scored."""
    model = Constant()
    x, _ = make_data(n=6)
    y = torch.zeros(6, dtype=torch.long)  # class 0 always wins: no example breaks, every restart runs
    t = ro.L1(2.0)
    res = APGD(t, steps=10, restarts=2, decreasing_eps=decreasing_eps).run(model, x, y)
    parts = 3 if decreasing_eps else 1
    assert res.grad_evals == 6 * 2 * (10 + parts - 1) and res.forwards == 6 * (1 + 2)
    assert t.contains(res.x_adv, x).all() and not res.success.any()


def test_l1_apgd_spends_the_ball_and_nears_the_optimum_on_a_linear_model():
    """Two classes, box far away: the worst margin in the l1 ball is m(x) - eps * ||w_y - w_o||_inf.

    L1-APGD moves at least the top ``ceil(d / 1.5 * s)`` coordinates of a sparsity s (two here, of 16),
    so it need not reach the one-coordinate optimum; it gets most of the way, on the sphere.
    """
    model = make_linear(classes=2, dtype=torch.float64)
    x, y = make_data(n=40, classes=2, dtype=torch.float64)
    t = ro.L1(0.5, bounds=(-10.0, 10.0))
    w = model[1].weight

    def margin(points):
        with torch.no_grad():
            z = model(points)
            return (z.gather(1, y[:, None]) - z.gather(1, 1 - y[:, None])).squeeze(1)

    clean = margin(x)
    worst = clean - t.eps * (w[0] - w[1]).abs().max()
    res = APGD(t, steps=20, decreasing_eps=True).run(model, x, y)
    torch.testing.assert_close(t.distance(x, res.x_adv), torch.full((40,), t.eps, dtype=torch.float64))
    assert ((clean - margin(res.x_adv)) >= 0.6 * (clean - worst)).all()
    assert int(res.success.sum()) >= int((worst < 0).sum()) - 2


def test_decreasing_eps_is_only_for_l1():
    with pytest.raises(ValueError, match="decreasing_eps"):
        APGD(ro.Linf(0.3), decreasing_eps=True)


# --- the L1 Square Attack ------------------------------------------------------------------------------
def test_l1_square_block_and_window_side():
    from robustopt.attacks.square import _block_l1, _window_side_l1

    for side in (1, 3, 4, 5, 8):
        block = _block_l1(side)
        assert block.shape == (side, side) and abs(float(block.abs().sum()) - 1) < 1e-12
        if side > 1:  # the two halves carry equal mass with opposite signs
            assert abs(float(block.sum())) < 1e-12
    assert [_window_side_l1(p, 1, 28, 28) for p in (0.8, 0.1, 0.001)] == [25, 9, 3]  # odd, at least 3
    assert _window_side_l1(1.0, 1, 4, 4) == 4


def test_l1_square_spends_the_ball_and_breaks_a_linear_model(trained_cnn):
    model, x, y = trained_cnn
    x, y = x[:40], y[:40]
    t = ro.L1(3.0)
    res = Square(t, queries=300, seed=1).run(model, x, y)
    assert t.contains(res.x_adv, x).all()
    broken = ~torch.eq(model(res.x_adv).argmax(1), y)
    assert torch.equal(res.success, broken) and broken.float().mean() > 0.5
    assert res.forwards <= 40 * 301 and res.grad_evals == 0


def test_square_lays_its_p_schedule_out_for_schedule_queries(monkeypatch):
    from robustopt.attacks import square as square_module
    from robustopt.attacks.square import AUTOATTACK_SCHEDULE_SCALE, p_schedule

    # iteration 300 of 5,000: rescaled (600 of 10,000) p is halved 4 times; AutoAttack's (300 of 10,000) 3 times
    assert p_schedule(0.8, 300, 5000) == pytest.approx(0.05) and p_schedule(0.8, 300, 10000) == pytest.approx(0.1)
    seen = []
    real = square_module.p_schedule
    monkeypatch.setattr(square_module, "p_schedule", lambda p, i, q: seen.append(q) or real(p, i, q))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(2, 3, 8, 8)
    y = model(x).argmax(1)  # correctly classified: the search runs
    for schedule, expected in ((None, 30), (AUTOATTACK_SCHEDULE_SCALE * 30, 60)):
        seen.clear()
        ro.attacks.Square(ro.Linf(0.01), queries=30, schedule_queries=schedule).run(model, x, y)
        assert seen and set(seen) == {expected}
    # the standard suite runs Square as AutoAttack does: 5,000 queries on the schedule of 10,000
    (square,) = [a for a in ro.suites.standard(ro.Linf(0.3)) if isinstance(a, ro.attacks.Square)]
    assert (square.queries, square.schedule_queries) == (5000, 10000)
    with pytest.raises(ValueError, match="schedule_queries must be an integer >= 1"):
        ro.attacks.Square(ro.Linf(0.01), schedule_queries=0)
