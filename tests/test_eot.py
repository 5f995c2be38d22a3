"""Expectation over Transformation: gradient attacks against a randomized model (``eot=N``).

A linear model behind input noise, ``z = W tanh(a (x + sigma n)) + b``, is random in eval mode; the
expected CE gradient is estimated from many draws at once (the input repeated), and EOT's estimate
from N draws must land closer to it than one draw does. On a deterministic model EOT changes
nothing but the cost (N passes each). Suites switch to EOT on a randomized model, and ``evaluate``
judges its points over several draws.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import make_data, make_linear
from torch import nn

import robustopt as ro
from robustopt.attacks import APGD, FGSM, PGD
from robustopt.attacks.passes import is_randomized, value_and_grad
from robustopt.evaluation import Evaluation
from robustopt.evaluation.evaluate import RANDOM_DRAWS

EPS = 0.1


class NoisyInput(nn.Module):
    """A fixed linear classifier on ``tanh(3 (x + sigma * noise))``: fresh Gaussian noise on every pass."""

    def __init__(self, sigma: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        self.base = make_linear(seed=seed, dtype=torch.float64)
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(torch.tanh(3 * (x + self.sigma * torch.randn_like(x))))


def first_pixel_class(x: torch.Tensor, classes: int = 5) -> torch.Tensor:
    return (x.flatten(1)[:, 0] * classes).long().clamp(max=classes - 1)


class CoinFlip(nn.Module):
    """Predicts ``first_pixel_class(x)`` with probability ``p`` in each pass, the next class otherwise."""

    def __init__(self, p: float, classes: int = 5) -> None:
        super().__init__()
        self.p, self.classes = p, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        right = torch.rand(len(x)) < self.p
        label = first_pixel_class(x, self.classes)
        pred = torch.where(right, label, (label + 1) % self.classes)
        return 10.0 * F.one_hot(pred, self.classes).to(x.dtype) + 0 * x.flatten(1)[:, :1]  # a (zero) gradient


def ce(y):
    return lambda logits: F.cross_entropy(logits, y, reduction="none")


def expected_gradient(model, x, y, draws=20000):
    """E[grad CE] over the noise, from ``draws`` draws in one batch (each example repeated)."""
    xr = x.repeat(draws, *([1] * (x.dim() - 1))).requires_grad_(True)
    loss = F.cross_entropy(model(xr), y.repeat(draws), reduction="sum")
    (g,) = torch.autograd.grad(loss, xr)
    return g.view(draws, *x.shape).mean(0)


# --- the estimate --------------------------------------------------------------------------
def test_eot_gradient_is_closer_to_the_expected_gradient_than_one_draw():
    torch.manual_seed(0)
    model = NoisyInput()
    x, y = make_data(n=8, dtype=torch.float64)
    truth = expected_gradient(model, x, y)
    err = {}
    for eot in (1, 20):
        errors = [(value_and_grad(model, x, ce(y), eot)[1] - truth).flatten(1).norm(dim=1) for _ in range(10)]
        err[eot] = torch.stack(errors).mean(0)  # per example, over 10 repetitions
    assert (err[20] < err[1]).all()
    assert float(err[20].mean()) < 0.4 * float(err[1].mean())  # about 1 / sqrt(20) of it


def test_eot_averages_value_gradient_and_logits_of_the_draws():
    model = NoisyInput()
    x, y = make_data(n=4, dtype=torch.float64)
    torch.manual_seed(3)
    value, grad, logits = value_and_grad(model, x, ce(y), eot=5)
    torch.manual_seed(3)
    singles = [value_and_grad(model, x, ce(y), eot=1) for _ in range(5)]
    for got, parts in zip((value, grad, logits), zip(*singles)):
        torch.testing.assert_close(got, torch.stack(parts).mean(0), rtol=1e-12, atol=1e-12)


# --- the attacks -----------------------------------------------------------------------------
@pytest.mark.parametrize("attack", [
    PGD(ro.Linf(EPS), steps=3, eot=4), APGD(ro.Linf(EPS), steps=3, eot=4), APGD(ro.L1(1.0), steps=3, eot=4),
])
def test_eot_counts_every_draw_and_is_deterministic_under_a_seed(attack):
    model = NoisyInput()
    x, y = make_data(n=6, dtype=torch.float64)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)  # the model's noise; the attack's own draws come from its seed
        runs.append(attack.run(model, x, y))
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].success, runs[1].success)
    once = type(attack)(attack.threat, steps=3).run(model, x, y)
    assert runs[0].grad_evals == 4 * once.grad_evals and runs[0].forwards - once.forwards == 3 * len(x)


@pytest.mark.parametrize("make", [
    lambda eot: PGD(ro.Linf(EPS), steps=5, eot=eot), lambda eot: FGSM(ro.L2(0.5), eot=eot),
    lambda eot: APGD(ro.Linf(EPS), steps=5, eot=eot), lambda eot: APGD(ro.L1(1.0), steps=5, eot=eot),
])
def test_eot_on_a_deterministic_model_changes_only_the_cost(make):
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=10, dtype=torch.float64)
    one, four = make(1).run(model, x, y), make(4).run(model, x, y)
    torch.testing.assert_close(four.x_adv, one.x_adv, rtol=0, atol=1e-12)
    assert torch.equal(four.success, one.success) and four.grad_evals == 4 * one.grad_evals


def test_eot_is_shown_in_the_name_and_checked():
    assert PGD(ro.Linf(EPS), eot=20).name == "PGD EOT-20" and PGD(ro.Linf(EPS)).name == "PGD"
    assert APGD(ro.Linf(EPS), loss="dlr", eot=20).name == "APGD-DLR EOT-20"
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="eot"):
            PGD(ro.Linf(EPS), eot=bad)
        with pytest.raises(ValueError, match="eot"):
            APGD(ro.Linf(EPS), eot=bad)


def test_eot_breaks_more_of_a_randomized_model_than_one_draw():
    torch.manual_seed(0)
    model = NoisyInput(sigma=0.5)
    x, y = make_data(n=64, dtype=torch.float64)
    with torch.no_grad():  # points the model gets right on average
        keep = model.base(torch.tanh(3 * x)).argmax(1) == y
    x, y = x[keep], y[keep]

    def broken(eot):
        torch.manual_seed(1)
        x_adv = PGD(ro.Linf(0.15), steps=10, eot=eot).run(model, x, y).x_adv
        with torch.no_grad():  # the expected prediction, over many draws
            z = torch.stack([model(x_adv) for _ in range(200)]).mean(0)
        return int((z.argmax(1) != y).sum())

    assert broken(20) >= broken(1)


# --- the suites and the evaluation -------------------------------------------------------------
def test_probe_tells_random_from_deterministic_models():
    x, _ = make_data(n=8, dtype=torch.float64)
    assert is_randomized(NoisyInput(), x)
    assert not is_randomized(make_linear(dtype=torch.float64), x)


def test_the_standard_suite_switches_to_eot_on_a_randomized_model_only():
    x, _ = make_data(n=8, dtype=torch.float64)
    t = ro.Linf(EPS)
    rand = ro.suites.standard(t, version="rand")
    assert [a.name for a in rand] == ["APGD-CE EOT-20", "APGD-DLR EOT-20"]
    for version in ("standard", "fast", "adaptive"):
        switched = ro.suites.standard(t, version=version, model=NoisyInput(), x=x)
        assert [a.describe() for a in switched] == [a.describe() for a in rand]
        kept = ro.suites.standard(t, version=version, model=make_linear(dtype=torch.float64), x=x)
        assert [a.describe() for a in kept] == [a.describe() for a in ro.suites.standard(t, version=version)]
    assert all(a.decreasing_eps for a in ro.suites.standard(ro.L1(1.0), version="rand"))
    with pytest.raises(ValueError, match="both"):
        ro.suites.standard(t, model=NoisyInput())


def test_the_adaptive_suite_uses_eot_on_a_randomized_model():
    x, y = make_data(n=6, shape=(1, 4, 4), dtype=torch.float64)
    atk = ro.attacks.AdaptiveAutoAttack(ro.Linf(EPS), steps=4, fab_steps=2, queries=10, eot=3)
    torch.manual_seed(0)
    res = atk.run(NoisyInput(), x, y)
    ce = res.summary["stages"][0]
    # every step averages 3 draws; an example leaves once broken (a doubtful exit reruns the 4 steps)
    assert ce["attacked"] and ce["grad_evals"] % 3 == 0 and 3 <= ce["grad_evals"] <= 2 * 3 * 4 * ce["attacked"]


def test_evaluate_judges_a_randomized_model_by_the_majority_of_draws(tmp_path):
    x, _ = make_data(n=200, dtype=torch.float64)
    y = first_pixel_class(x)
    t = ro.Linf(0.0)  # the attack's point is the clean input: only the draws decide
    torch.manual_seed(0)
    mostly_right = ro.evaluate(CoinFlip(0.8), (x, y), [FGSM(t)], progress=False)
    torch.manual_seed(0)
    mostly_wrong = ro.evaluate(CoinFlip(0.2), (x, y), [FGSM(t)], progress=False)
    assert mostly_right.draws is not None and mostly_right.draws.draws == RANDOM_DRAWS
    # right in 8 of 10 draws on average: almost every example is right in most draws; the mean over
    # the draws is a little under 0.8 (each example's worse draws of two points, clean and FGSM's)
    # and spreads from draw to draw
    assert mostly_right.robust_accuracy > 0.9 and mostly_wrong.robust_accuracy < 0.1
    assert 0.7 < mostly_right.draws.mean < 0.8 and 0.15 < mostly_wrong.draws.mean < 0.25
    assert 0.005 < mostly_right.draws.std < 0.1
    back = Evaluation.from_json(mostly_right.to_json(tmp_path / "ev.json"))
    assert back.draws == mostly_right.draws
    assert "over 10 draws" in mostly_right.table()
    assert json.loads((tmp_path / "ev.json").read_text())["draws"]["draws"] == 10


def test_evaluate_of_a_deterministic_model_has_no_draws():
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=20, dtype=torch.float64)
    ev = ro.evaluate(model, (x, y), [FGSM(ro.Linf(EPS))], progress=False)
    assert ev.draws is None and "draws" not in ev.table()
    forced = ro.evaluate(model, (x, y), [FGSM(ro.Linf(EPS))], progress=False, draws=3)
    assert torch.equal(forced.robust, ev.robust) and forced.draws.std == 0.0
    with pytest.raises(ValueError, match="draws"):
        ro.evaluate(model, (x, y), [FGSM(ro.Linf(EPS))], progress=False, draws=0)


def test_an_interrupted_evaluation_of_a_randomized_model_keeps_its_draws(tmp_path):
    """The per-draw outcomes travel in the progress file: a resumed evaluation reports them for every example."""
    x, _ = make_data(n=200, dtype=torch.float64)
    y = first_pixel_class(x)
    attacks = [FGSM(ro.Linf(0.0))]
    calls = {"n": 0}
    run = attacks[0].run

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return run(*args, **kwargs)

    object.__setattr__(attacks[0], "run", interrupted)  # shadows Attack.run; the configuration is unchanged
    progress = tmp_path / "eval.progress.json"
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        ro.evaluate(CoinFlip(0.8), (x, y), attacks, batch_size=50, progress=False, progress_file=progress)
    assert json.loads(progress.read_text())["fooled"]
    object.__setattr__(attacks[0], "run", run)
    resumed = ro.evaluate(CoinFlip(0.8), (x, y), attacks, batch_size=50, progress=False, progress_file=progress)
    # without the saved outcomes the three finished batches would count as right in every draw (about 0.95)
    assert 0.65 < resumed.draws.mean < 0.8
