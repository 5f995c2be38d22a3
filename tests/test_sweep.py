"""Tests of the eps sweep: the monotone cascade, its bookkeeping and its files.

The central facts: (1) with an exact attack (FGSM on a binary linear model under
Linf is the optimal attack, in closed form) the cascade, the independent runs and
the mathematics agree; (2) with any deterministic attack the cascade equals the
running minimum over eps of independent per-eps runs, example by example.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import make_data, make_linear
from masking_models import base_model, prototype_data
from torch import nn

import robustopt as ro
from robustopt.attacks import FGSM, PGD, Transfer
from robustopt.evaluation.sweep import SweepCurve, default_attacks, sweep

GRID = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]


def binary_linear(d: int = 16, seed: int = 0) -> nn.Sequential:
    """Two-class linear model in float64: logits (0, v.x + c) with random v, c."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(d, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)]))
        lin.bias.copy_(torch.tensor([0.0, 0.0], dtype=torch.float64))
    return nn.Sequential(nn.Flatten(), lin).eval()


def optimal_linf_robust(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Closed form: is each example still correct under the best Linf attack inside the box [0, 1]?

    The margin s * (v.(x + delta) + c), s = +1 for y = 1 and -1 for y = 0, is linear in delta,
    and ball ∩ box is a box: each coordinate goes to the end of its interval
    [max(-eps, -x_i), min(eps, 1 - x_i)] that lowers the margin.
    """
    lin = model[1]
    v = (lin.weight[1] - lin.weight[0]).detach()
    c = float((lin.bias[1] - lin.bias[0]).detach())
    s = (2 * y - 1).double()
    xf = x.flatten(1)
    lo, hi = torch.clamp(-xf, min=-eps), torch.clamp(1 - xf, max=eps)
    delta = torch.where(s[:, None] * v > 0, lo, hi)
    return s * ((xf + delta) @ v + c) > 0


@pytest.fixture(scope="module")
def cnn_and_data():
    model = base_model()
    x, y = prototype_data(120, seed=11)
    return model, x, y


# --- the cascade against the mathematics -----------------------------------------------------
def test_cascade_equals_independent_and_closed_form_for_exact_attack():
    model = binary_linear()
    x, _ = make_data(n=80, shape=(1, 4, 4), seed=3, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example correct at eps = 0
    grid = [0.0, 0.01, 0.03, 0.06, 0.1, 0.2]
    kw = dict(attack=FGSM(ro.Linf(0.0)), batch_size=32, progress=False)
    cascade = sweep(model, (x, y), ro.Linf, grid, **kw)
    independent = sweep(model, (x, y), ro.Linf, grid, independent=True, **kw)

    exact = [float(optimal_linf_robust(model, x, y, e).double().mean()) for e in grid]
    assert cascade.accuracy == pytest.approx(exact, abs=0)
    assert independent.accuracy == pytest.approx(exact, abs=0)
    assert exact[0] == 1.0 and exact[-1] < exact[1]  # the grid really spans the curve
    # Breaking eps: the smallest grid eps at which the optimal attack succeeds.
    broken = torch.stack([~optimal_linf_robust(model, x, y, e) for e in grid])  # (eps, N)
    expected = torch.tensor([grid[int(col.nonzero()[0])] if col.any() else math.inf for col in broken.T], dtype=torch.float64)
    assert torch.equal(cascade.breaking_eps, expected)
    assert torch.equal(independent.breaking_eps, expected)


def test_cascade_equals_running_min_of_independent_runs():
    """Deterministic PGD (no random start, one example per batch): cascade == min over eps' <= eps."""
    model = make_linear(seed=1)
    x, y = make_data(n=30, seed=4)
    atk = PGD(ro.Linf(0.0), steps=5, random_start=False)
    kw = dict(attack=atk, batch_size=1, progress=False)
    grid = [0.0, 0.05, 0.1, 0.2, 0.3]
    cascade = sweep(model, (x, y), ro.Linf, grid, **kw)
    independent = sweep(model, (x, y), ro.Linf, grid, independent=True, **kw)

    assert torch.equal(cascade.breaking_eps, independent.breaking_eps)
    running_min = [float((independent.breaking_eps > e).double().mean()) for e in grid]
    assert cascade.accuracy == pytest.approx(running_min, abs=0)
    assert all(c <= i for c, i in zip(cascade.accuracy, independent.accuracy))
    assert cascade.total_grad_evals < independent.total_grad_evals


# --- properties on a trained CNN ---------------------------------------------------------------
def test_curve_properties_and_cost(cnn_and_data):
    model, x, y = cnn_and_data
    atk = PGD(ro.Linf(0.0), steps=10)
    unsorted = [0.3, 0.0, 0.1, 0.05, 0.2, 0.15, 0.02, 0.1]  # unsorted, with a duplicate
    curve = sweep(model, (x, y), ro.Linf, unsorted, attack=atk, batch_size=50, progress=False)
    assert curve.eps == GRID
    assert curve.accuracy_at(0.1) == curve.accuracy[GRID.index(0.1)]
    with pytest.raises(KeyError):
        curve.accuracy_at(0.11)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).double().mean())
    assert curve.accuracy[0] == clean and curve.meta["clean_accuracy"] == clean
    assert curve.grad_evals[0] == 0 and curve.attacked[0] == 0
    assert all(b <= a for a, b in zip(curve.accuracy, curve.accuracy[1:]))  # non-increasing
    assert curve.accuracy[-1] < 0.1 < clean  # a natural model breaks: the sweep spans the curve
    # The per-example breaking eps reproduces the curve, and clean mistakes break at 0.
    for e, a in zip(curve.eps, curve.accuracy):
        assert float((curve.breaking_eps > e).double().mean()) == a
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert (curve.breaking_eps[wrong] == 0).all()
    # The cascade attacks only the survivors of the previous eps: one restart of 10 steps each.
    for k in range(1, len(GRID)):
        assert curve.attacked[k] == round(curve.accuracy[k - 1] * len(x))
        assert curve.grad_evals[k] == 10 * curve.attacked[k]

    indep = sweep(model, (x, y), ro.Linf, GRID, attack=atk, batch_size=50, progress=False, independent=True)
    assert indep.mode == "independent" and indep.attacked[1:] == [round(clean * len(x))] * (len(GRID) - 1)
    assert curve.total_grad_evals < 0.6 * indep.total_grad_evals  # sublinear in the number of eps
    assert len(curve.seconds) == len(GRID) and all(s >= 0 for s in curve.seconds)


def test_default_attack_and_reproducibility(cnn_and_data):
    model, x, y = cnn_and_data
    x, y = x[:40], y[:40]
    a = sweep(model, (x, y), ro.Linf, [0.0, 0.1], progress=False, seed=3)
    b = sweep(model, (x, y), ro.Linf, [0.0, 0.1], progress=False, seed=3)
    assert a.attacks[0]["type"] == "PGD" and a.attacks[0]["steps"] == 40
    assert a.attacks[0]["threat"]["eps"] == 0.1
    assert default_attacks(ro.Linf(0.2))[0].alpha == pytest.approx(2.5 * 0.2 / 40)
    assert a.accuracy == b.accuracy and torch.equal(a.breaking_eps, b.breaking_eps)


def test_factory_template_and_transfer(cnn_and_data):
    model, x, y = cnn_and_data
    x, y = x[:40], y[:40]
    grid = [0.05, 0.1]
    # A factory returning several attacks: they cascade within each eps.
    both = sweep(model, (x, y), ro.Linf, grid, progress=False,
                 attack=lambda t: [FGSM(t), PGD(t, steps=5)])
    fgsm = sweep(model, (x, y), ro.Linf, grid, progress=False, attack=FGSM(ro.Linf(0.0)))
    assert all(b <= f for b, f in zip(both.accuracy, fgsm.accuracy))
    assert [d["type"] for d in both.attacks] == ["FGSM", "PGD"]
    # A Transfer template: the threat of its inner attack is replaced.
    tr = sweep(model, (x, y), ro.Linf, grid, progress=False,
               attack=Transfer(base_model(), FGSM(ro.Linf(0.3)), source_name="copy"))
    assert tr.attacks[0]["attack"]["threat"]["eps"] == 0.1
    assert tr.accuracy == fgsm.accuracy  # the source is an identical copy: same points
    # L2 works the same way.
    l2 = sweep(model, (x, y), ro.L2, [0.0, 0.5, 1.0], attack=PGD(ro.L2(0.0), steps=5), progress=False)
    assert l2.norm == "L2" and l2.accuracy[0] >= l2.accuracy[1] >= l2.accuracy[2]


# --- files and views -----------------------------------------------------------------------------
def test_json_round_trip_table_and_plot(cnn_and_data, tmp_path):
    model, x, y = cnn_and_data
    curve = sweep(model, (x[:40], y[:40]), ro.Linf, [0.0, 0.02, 0.1], attack=FGSM(ro.Linf(0.0)), progress=False)
    assert math.isinf(float(curve.breaking_eps.max()))  # some example survives: stored as null
    path = curve.to_json(tmp_path / "sweep.json")
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    back = SweepCurve.from_json(path)
    assert back.to_dict() == curve.to_dict()
    assert torch.equal(back.breaking_eps, curve.breaking_eps)
    with pytest.raises(ValueError, match="not a robustopt sweep"):
        SweepCurve.from_json(tmp_path / "missing.json")

    text_table = curve.table()
    assert "eps (Linf)" in text_table and f"{100 * curve.accuracy[1]:.1f}%" in text_table
    md = curve.table("markdown")
    assert md.startswith("| eps (Linf) |") and md.count("\n|") == 4

    png = curve.plot(tmp_path / "plots" / "sweep.png", train_eps=0.05)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "plots").iterdir()) == [png]  # no temporary file left behind


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [[], [-0.1], [0.1, float("nan")], [float("inf")], [0.1, True], ["0.3"]])
def test_bad_eps_lists_raise_value_error(cnn_and_data, eps):
    model, x, y = cnn_and_data
    with pytest.raises(ValueError, match="eps"):
        sweep(model, (x, y), ro.Linf, eps, progress=False)


def test_other_bad_arguments(cnn_and_data):
    model, x, y = cnn_and_data
    with pytest.raises(TypeError, match="eps_values"):
        sweep(model, (x, y), ro.Linf, 0.3, progress=False)
    with pytest.raises(TypeError, match="the class"):
        sweep(model, (x, y), ro.Linf(0.3), [0.1], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        sweep(model, (x, y), ro.Linf, [0.1], batch_size=0, progress=False)
    with pytest.raises(TypeError, match="attack"):
        sweep(model, (x, y), ro.Linf, [0.1], attack="pgd", progress=False)
    with pytest.raises(ValueError, match="build every attack with the threat model"):
        sweep(model, (x, y), ro.Linf, [0.1], attack=lambda t: [FGSM(ro.Linf(0.3))], progress=False)
    with pytest.raises(ValueError, match="outside the bounds"):
        sweep(model, (x + 2, y), ro.Linf, [0.1], progress=False)


def test_labels_outside_the_models_classes_are_refused():
    model = make_linear()
    x, y = make_data(n=20)
    y[3] = -1
    with pytest.raises(ValueError, match="labels must be in \\[0, 4\\] for a model with 5 outputs"):
        sweep(model, (x, y), ro.Linf, [0.0, 0.1], progress=False)


def test_a_model_whose_output_is_not_finite_is_refused():
    class NaNModel(nn.Module):
        def forward(self, x):
            return make_linear()(x) * float("nan")

    x, y = make_data(n=20)
    with pytest.raises(ValueError, match="NaN or Inf on 20 of 20 clean inputs"):
        sweep(NaNModel(), (x, y), ro.Linf, [0.0, 0.1], progress=False)


def test_each_batch_pairs_its_own_images_and_labels():
    x, y = make_data(n=20)
    with pytest.raises(ValueError, match="batch 1 of data has x of shape"):
        sweep(make_linear(), [(x[:10], y[:10]), (x[10:], y[11:])], ro.Linf, [0.1], progress=False)


def test_a_bad_seed_is_refused_in_words():
    x, y = make_data(n=10)
    with pytest.raises(ValueError, match="seed must be a whole number >= 0, got -3"):
        sweep(make_linear(), (x, y), ro.Linf, [0.1], seed=-3, progress=False)


def test_a_threat_factory_that_ignores_eps_is_refused():
    x, y = make_data(n=10)
    with pytest.raises(ValueError, match=r"returned Linf\(eps=0.3\) when asked for eps=0.01"):
        sweep(make_linear(), (x, y), lambda eps: ro.Linf(0.3), [0.01, 0.02], attack=FGSM(ro.Linf(0.0)),
              progress=False)
    with pytest.raises(ValueError, match="several norms or bounds"):
        sweep(make_linear(), (x, y), lambda eps: ro.Linf(eps) if eps < 0.05 else ro.L2(eps), [0.01, 0.1],
              progress=False)
