"""The adaptive standard suite: early exits, target scores, the schedule's decisions and its trust rules.

Trust rules: on no model is ``AdaptiveAutoAttack`` weaker than the standard cascade
beyond restart noise; it breaks the gradient-masking models of ``masking_models`` as the
standard cascade does, by escalating its black-box stage there; an example that is broken, or
that cannot flip, is not attacked further; the same seed gives the same numbers. Budgets are
cut down (20 APGD steps, 200 queries, ...) on both sides so that the comparisons stay cheap.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from conftest import make_data, make_linear
from masking_models import (
    FGSM_EPS, NoisyInput, Quantized, ScaledLogits, Shattered, SoftmaxOutput, base_model, fgsm_overfit_model,
    prototype_data,
)
from torch import nn

import robustopt as ro
from robustopt.attacks import APGD, FAB, AdaptiveAutoAttack, Square, create
from robustopt.attacks.adaptive import BROKEN_BY, MORE_TARGETS_SHARE, OUTCOMES, STAGES, malt_scores
from robustopt.attacks.early_exit import STOP_REASONS, stalled
from robustopt.attacks.passes import predict
from robustopt.attacks.square import AUTOATTACK_SCHEDULE_SCALE
from robustopt.evaluation import Evaluation, Row, evaluate
from robustopt.evaluation.audit import audit
from robustopt.evaluation.records import broken_by_stage, budget_table, stage_budget

EPS = 0.1
SMALL = dict(steps=20, fab_steps=10, queries=200, n_target_classes=3, min_sample=4, sample=0.2)


def adaptive(threat: ro.ThreatModel = ro.Linf(EPS), **kw) -> AdaptiveAutoAttack:
    return AdaptiveAutoAttack(threat, **{**SMALL, **kw})


def standard_like(threat: ro.ThreatModel = ro.Linf(EPS), seed: int = 0) -> list:
    """The standard cascade (APGD-CE, APGD-T, FAB-T, Square) at the budgets of ``SMALL``."""
    return [APGD(threat, loss="ce", steps=20, seed=seed),
            APGD(threat, loss="dlr", targeted=True, n_target_classes=9, steps=20, seed=seed),
            FAB(threat, targeted=True, n_target_classes=9, steps=10, seed=seed),
            Square(threat, queries=200, schedule_queries=AUTOATTACK_SCHEDULE_SCALE * 200, seed=seed)]


@pytest.fixture(scope="module")
def base() -> nn.Module:
    return base_model()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return prototype_data(100, seed=7)


def quiet_evaluate(model, data, attacks, **kw) -> Evaluation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SoftmaxOutput: "looks like probabilities"
        return evaluate(model, data, attacks, progress=False, **kw)


# --- the stall rule and APGD's early exit -----------------------------------------------------------
def test_the_stall_rule_extrapolates_the_pace():
    m, then = torch.tensor([-3.0, -3.0, -3.0, 0.5]), torch.tensor([-4.0, -3.5, -3.0, -1.0])
    # 10 steps left after a window of 5: factor * 2 * gain more to come; a broken example never stalls
    assert stalled(m, then, remaining=10, window=5, factor=2.0).tolist() == [False, True, True, False]
    assert stalled(m, then, remaining=10, window=5, factor=4.0).tolist() == [False, False, True, False]
    assert stalled(m, then, remaining=10, window=5, factor=0.5).tolist() == [True, True, True, False]


def test_apgd_early_exit_breaks_the_same_examples_for_less(base, data):
    x, y = data
    plain = APGD(ro.Linf(EPS), steps=40).run(base, x, y)
    early = APGD(ro.Linf(EPS), steps=40, early_exit=True).run(base, x, y)
    assert plain.notes == {} and set(early.notes) == {"stop", "margin", "margin_start"}
    assert int(early.success.sum()) >= int(plain.success.sum()) - 2  # within restart-free noise
    assert early.grad_evals < 0.8 * plain.grad_evals
    stop = early.notes["stop"]
    assert torch.equal(stop == STOP_REASONS.index("broken"), early.success)
    stalled_rows = stop == STOP_REASONS.index("stalled")
    assert stalled_rows.any() and (early.grad_evals_per_example[stalled_rows] <= 40).all()
    assert (early.forwards_per_example[stalled_rows] == 1).all()  # the clean pass; left before the last step's
    assert (early.notes["margin"][stalled_rows] < 0).all() and (early.notes["margin"][early.success] > 0).all()
    assert early.grad_evals == int(early.grad_evals_per_example.sum())
    assert plain.grad_evals_per_example.tolist() == [40] * len(y)  # the standard run: every step, every example


def test_a_broken_example_is_not_attacked_further():
    atk = APGD(ro.Linf(3.0, bounds=(-10.0, 10.0)), steps=50, early_exit=True)
    x, y = make_data(n=16, dtype=torch.float64)
    res = atk.run(make_linear(dtype=torch.float64), x, y)
    assert res.success.all()  # a huge ball: the random start or the first step breaks each one
    cost = res.grad_evals_per_example
    assert (cost <= 2).all() and (cost == 1).any()  # 1: broken at the random start, no step taken
    assert res.forwards_per_example.tolist() == [1] * 16  # the clean pass, no final scoring pass


def test_square_early_exit_records_why_each_example_stopped(base, data):
    x, y = data
    plain = Square(ro.Linf(EPS), queries=300).run(base, x, y)
    early = Square(ro.Linf(EPS), queries=300, early_exit=True).run(base, x, y)
    stop = early.notes["stop"]
    assert torch.equal(stop == STOP_REASONS.index("broken"), early.success & (base(x).argmax(1) == y))
    assert early.forwards <= plain.forwards and early.forwards_per_example.max() <= 300 + 1  # + the clean pass


# --- target scores -----------------------------------------------------------------------------------
def test_target_scores_replace_the_clean_logits(base, data):
    x, y = data
    atk = APGD(ro.Linf(EPS), loss="dlr", targeted=True, n_target_classes=1, steps=10)
    with torch.no_grad():
        clean = base(x)
    same = atk.run(base, x, y, target_scores=clean)
    assert torch.equal(same.x_adv, atk.run(base, x, y).x_adv)  # the clean logits are the default scores
    other = atk.run(base, x, y, target_scores=-clean)  # the least likely class first
    assert not torch.equal(other.x_adv, same.x_adv)
    with pytest.raises(ValueError, match="either targets"):
        atk.run(base, x, y, targets=(y + 1) % 4, target_scores=clean)
    with pytest.raises(ValueError, match="shape"):
        atk.run(base, x, y, target_scores=clean[:, :2])
    with pytest.raises(TypeError, match="floating"):
        atk.run(base, x, y, target_scores=clean.long())
    with pytest.raises(ValueError, match="untargeted"):
        APGD(ro.Linf(EPS)).run(base, x, y, target_scores=clean)
    with pytest.raises(ValueError, match="untargeted"):
        FAB(ro.Linf(EPS)).run(base, x, y, target_scores=clean)


@pytest.mark.parametrize("threat, q", [(ro.Linf(0.1), 1.0), (ro.L2(0.5), 2.0)])
def test_malt_scores_are_the_linearized_boundary_distances(threat, q):
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=8, dtype=torch.float64)
    scores = malt_scores(model, x, y, threat)
    w = model[1].weight
    z = model(x).detach()
    for i in range(len(y)):
        for c in range(w.shape[0]):
            if c == int(y[i]):
                assert scores[i, c] == -math.inf
                continue
            gap = z[i, y[i]] - z[i, c]
            expected = -gap / torch.linalg.vector_norm(w[y[i]] - w[c], ord=q)
            assert scores[i, c].item() == pytest.approx(expected.item(), rel=1e-5)


# --- the schedule -------------------------------------------------------------------------------------
def test_every_decision_is_recorded_and_adds_up(base, data, tmp_path):
    x, y = data
    ev = quiet_evaluate(base, (x, y), [adaptive()], batch_size=50)
    row = ev.rows[1]
    assert row.name == "AA-adaptive" and row.forwards > 0 and row.grad_evals > 0
    examples = row.records["examples"]
    assert set(examples) >= {"broken_by", *STAGES, "grad_evals", "forwards"}
    assert all(len(v) == ev.n for v in examples.values())
    budget = stage_budget(row)
    assert [st["name"] for st in budget] == list(STAGES[: len(budget)])
    assert sum(st["grad_evals"] for st in budget) <= row.grad_evals  # the rest: the schedule's own passes
    assert sum(examples["grad_evals"][i] or 0 for i in range(ev.n)) == row.grad_evals
    assert sum(examples["forwards"][i] or 0 for i in range(ev.n)) == row.forwards
    # which stage broke each example is what the evaluation saw: broken <=> not robust
    broken_by = examples["broken_by"]
    for i in range(ev.n):
        if not ev.correct[i]:
            assert broken_by[i] is None  # not attacked: the evaluation skips clean errors
        else:
            assert (broken_by[i] >= 0) == (not ev.robust[i])
    counts = broken_by_stage(row)
    assert sum(counts.values()) == int((ev.correct & ~ev.robust).sum())
    # an example broken by a stage is not attacked by the later ones
    for i in range(ev.n):
        if broken_by[i] is not None and broken_by[i] >= 1:
            later = STAGES[broken_by[i]:]  # BROKEN_BY[k] is STAGES[k - 1]
            assert all(examples[s][i] == OUTCOMES.index("not run") for s in later)
            assert examples[STAGES[broken_by[i] - 1]][i] == OUTCOMES.index("broken")
    text = budget_table(ev)
    assert "APGD-CE" in text and "Grad/pt" in text and "batch 1" in text
    # the JSON file keeps it all
    ev.to_json(tmp_path / "ev.json")
    again = Evaluation.from_json(tmp_path / "ev.json")
    assert again.rows[1].records == json.loads(json.dumps(row.records))
    assert budget_table(again) == text


class Widest(nn.Module):
    """``model``, recording the largest batch it was called on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.widest = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.widest = max(self.widest, len(x))
        return self.model(x)


def test_the_samples_are_drawn_once_per_pool(base, data):
    """evaluate gives the schedule ``pool`` examples per call, so FAB-T's and Square's fixed-size samples
    are drawn once per pool, not once per batch; no pass on the model is wider than the batch size."""
    x, y = data
    calls = {}
    for pool in (25, 100):
        model = Widest(base)
        ev = quiet_evaluate(model, (x, y), [adaptive(pool=pool, min_sample=8)], batch_size=25)
        calls[pool] = ev.rows[1].records["batches"]
        assert model.widest <= 25
        assert ev.rows[1].attack["pool"] == pool
    assert len(calls[25]) == 4 and len(calls[100]) == 1
    sampled = {pool: sum(p["examples"] for b in batches for st in b["stages"] if st["name"] == "FAB-T"
                         for p in st.get("passes", [])[:1]) for pool, batches in calls.items()}
    assert 0 < sampled[100] < sampled[25]  # one sample of 8 against one per batch
    assert AdaptiveAutoAttack(ro.Linf(EPS), pool=1000).call_size(500) == 1000
    assert AdaptiveAutoAttack(ro.Linf(EPS), pool=1000).call_size(2000) == 2000
    assert APGD(ro.Linf(EPS)).call_size(500) == 500


def test_a_pooled_call_reports_its_stages(base, data, monkeypatch, capsys):
    """A call of ``pool`` examples moves the progress display once: ``on_stage`` says, as each stage starts,
    what it runs on, and ``evaluate`` prints it on its plain progress lines."""
    x, y = data
    told: list[str] = []
    res = adaptive().run(base, x, y, on_stage=told.append)
    attacked = [st["attacked"] for st in res.summary["stages"]]
    assert told[0] == f"APGD-CE on {len(x)} of {len(x)}"
    names = [line.split(" on ")[0].removesuffix(" (more targets)") for line in told]
    assert set(names) == {name for name, n in zip(STAGES, attacked) if n}
    assert names == sorted(names, key=STAGES.index)  # in the schedule's order
    with pytest.raises(ValueError, match="on_stage"):
        adaptive().run(base, x, y, on_stage="APGD")
    monkeypatch.setenv("ROBUSTOPT_PROGRESS", "plain")
    monkeypatch.setattr("robustopt._progress.PLAIN_EVERY", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate(base, (x, y), [adaptive()], batch_size=25)
    assert "stage=APGD-CE on " in capsys.readouterr().err


@pytest.mark.parametrize("score", ["adversarial", "malt"])
def test_batch_size_bounds_every_pass_of_a_call(base, data, score):
    """``run(..., batch_size=b)``: the stages, the schedule's own passes (target scores, the dead-gradient
    probe) and the clean pass all run on at most b examples; the points stay valid."""
    x, y = data
    for model in (base, Quantized(base)):  # Quantized: the dead-gradient probe on many survivors
        spy = Widest(model)
        res = adaptive(target_score=score).run(spy, x, y, batch_size=16)
        assert spy.widest <= 16
        assert ro.Linf(EPS).contains(res.x_adv, x).all()
        assert len(res.grad_evals_per_example) == len(x) and int(res.grad_evals_per_example.sum()) == res.grad_evals
        with torch.no_grad():
            assert torch.equal(res.success, predict(model, res.x_adv).argmax(1) != y)
    with pytest.raises(ValueError, match="batch_size"):
        adaptive().run(base, x, y, batch_size=0)


def test_same_seed_same_schedule(base, data):
    x, y = data
    a = quiet_evaluate(base, (x, y), [adaptive()], batch_size=50, seed=3)
    b = quiet_evaluate(base, (x, y), [adaptive()], batch_size=50, seed=3)
    assert torch.equal(a.robust, b.robust) and a.rows[1].records["examples"] == b.rows[1].records["examples"]


def test_explicit_targets_and_errors(base, data):
    x, y = data
    targets = (y + 1) % 4
    res = adaptive().run(base, x, y, targets=targets)
    with torch.no_grad():
        assert torch.equal(res.success, base(res.x_adv).argmax(1) == targets)
    with pytest.raises(ValueError, match="target_score"):
        AdaptiveAutoAttack(ro.Linf(EPS), target_score="logits")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample"):
        AdaptiveAutoAttack(ro.Linf(EPS), sample=0.0)
    with pytest.raises(ValueError, match="eot"):
        AdaptiveAutoAttack(ro.Linf(EPS), eot=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        x, y = make_data(n=4)
        AdaptiveAutoAttack(ro.Linf(EPS))(make_linear(), x.flatten(1), y)
    assert [type(a).__name__ for a in ro.suites.standard(ro.Linf(0.3), version="adaptive")] == ["AdaptiveAutoAttack"]


@pytest.mark.parametrize("score", ["adversarial", "malt", "clean"])
def test_each_target_score_runs(base, data, score):
    x, y = data
    res = adaptive(target_score=score).run(base, x[:30], y[:30])
    assert res.summary["stages"][1]["attacked"] > 0


# --- trust rules ---------------------------------------------------------------------------------------
def test_not_weaker_than_standard_beyond_restart_noise(base, data):
    """On the naturally trained base model (and on a Linf and an L2 ball)."""
    for threat in (ro.Linf(EPS), ro.L2(0.6)):
        std = [quiet_evaluate(base, data, standard_like(threat, seed=s), seed=s).robust_accuracy for s in (0, 1)]
        noise = max(abs(std[0] - std[1]), 2 / len(data[1]))
        ada = quiet_evaluate(base, data, [adaptive(threat)]).robust_accuracy
        assert ada <= std[0] + noise, (threat, ada, std)


MASKING = {
    "quantized": lambda b: Quantized(b),
    "softmax": lambda b: SoftmaxOutput(b),
    "scaled-logits": lambda b: ScaledLogits(b),
    "shattered": lambda b: Shattered(b),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", MASKING)
def test_masking_models_are_broken_as_the_standard_cascade_breaks_them(base, data, name):
    model = MASKING[name](base)
    # within the standard cascade's own spread over seeds (restart noise; at 200 queries Square on a saturated
    # model is a lottery), plus one example; at 1,000 points and full budgets the bound is +1 point
    std = [quiet_evaluate(model, data, standard_like(seed=s), seed=s).robust_accuracy for s in (0, 1, 2)]
    ev = quiet_evaluate(model, data, [adaptive()])
    assert ev.robust_accuracy <= max(std) + 1 / len(data[1]), (ev.robust_accuracy, std)
    square = next(st for st in stage_budget(ev.rows[1]) if st["name"] == "Square")
    # the black-box stage ran on every survivor: at once on masking evidence, or after its first pass broke one
    assert square["outcomes"].get("skipped", 0) == 0 and square["attacked"] > 0
    assert all("masked" in d or "flat" in d or "ran on" in d for d in square["decisions"]), square["decisions"]


def test_dead_gradients_go_straight_to_the_black_box(base, data):
    """Quantized inputs: the Jacobian is exactly zero, so each survivor APGD-CE left flat goes to Square
    first with its whole budget, and APGD-T and FAB-T skip it. Saturated logits leave CE flat but the
    Jacobian alive (DLR still works there): no shortcut."""
    ev = quiet_evaluate(Quantized(base), data, [adaptive()])
    stages = {st["name"]: st for st in stage_budget(ev.rows[1])}
    examples = ev.rows[1].records["examples"]
    first = [i for i, c in enumerate(examples["Square"]) if c not in (None, 0)]
    assert first and stages["Square"]["decisions"][0].startswith("dead gradients")
    skipped = OUTCOMES.index("skipped")
    assert all(examples["APGD-T"][i] == skipped and examples["FAB-T"][i] == skipped for i in first)
    assert stages["APGD-T"]["attacked"] == stages["FAB-T"]["attacked"] == 0  # (its strength: the masking test)

    live = quiet_evaluate(ScaledLogits(base), data, [adaptive()])
    square = next(st for st in stage_budget(live.rows[1]) if st["name"] == "Square")
    assert not any("dead gradients" in d for d in square["decisions"])


def test_a_productive_apgd_t_gets_the_other_targets(base, data):
    """Where APGD-T breaks MORE_TARGETS_SHARE of what it attacked (saturated logits: CE is blind, DLR is
    not), its other targets (up to 9, here the 2 left of 4 classes) run on its survivors; not elsewhere."""
    def apgd_t(model):
        ev = quiet_evaluate(model, data, [adaptive(n_target_classes=1)])
        return next(st for st in stage_budget(ev.rows[1]) if st["name"] == "APGD-T")

    productive = apgd_t(ScaledLogits(base))
    assert productive["broken"] >= MORE_TARGETS_SHARE * productive["attacked"] > 0
    assert any("the next 2 targets ran" in d for d in productive["decisions"])
    plain = apgd_t(base)
    assert plain["attacked"] and plain["broken"] < MORE_TARGETS_SHARE * plain["attacked"]
    assert not any("targets ran" in d for d in plain["decisions"])


def test_a_random_model_exits_only_when_broken_in_most_draws(base, data):
    """A random model (the audit's randomized-output): a success under one draw proves little, so APGD
    averages over draws (EOT) and lets an example go once broken, never as stalled; a success counts only
    if most of RANDOM_DRAWS fresh passes confirm it; FAB-T and Square run on every survivor."""
    model = NoisyInput(base)
    ev = quiet_evaluate(model, data, [adaptive()])
    row = ev.rows[1]
    summary = row.records["batches"][0]["stages"]
    assert all(st["why"].startswith("all") and "randomized" in st["why"] for st in summary[2:] if "why" in st)
    examples = row.records["examples"]
    assert OUTCOMES.index("stalled") not in examples["APGD-CE"]
    # run directly: the broken ones left APGD-CE early, under the whole EOT budget of the survivors
    x, y = data
    attack = adaptive()
    res = attack.run(model, x, y, generator=torch.Generator().manual_seed(0))
    by_ce = res.notes["broken_by"] == BROKEN_BY.index("APGD-CE")
    assert bool(by_ce.any()) and bool((~res.success).any()), "the noisy model should break in part (else no test)"
    full = attack.steps * attack.eot
    assert float(res.grad_evals_per_example[by_ce].float().median()) < full  # most left early
    assert int(res.grad_evals_per_example[~res.success].min()) >= full  # an unconfirmed early exit ran again
    # each break holds in most draws of the model, as evaluate judges it (fresh draws: allow their spread)
    wrong = torch.stack([predict(model, res.x_adv[res.success]).argmax(1) != y[res.success] for _ in range(20)])
    assert float(wrong.float().mean()) > 0.8


@pytest.mark.slow
def test_fgsm_overfitted_model(data):
    model = fgsm_overfit_model()
    t = ro.Linf(FGSM_EPS)
    fgsm = quiet_evaluate(model, data, [ro.attacks.FGSM(t)]).robust_accuracy
    std = quiet_evaluate(model, data, standard_like(t)).robust_accuracy
    ada = quiet_evaluate(model, data, [adaptive(t)]).robust_accuracy
    assert fgsm > 0.25 and std <= 0.01 and ada <= std + 0.01  # robust to FGSM only


# --- the audit reads the cascade ----------------------------------------------------------------------
def cascade(clean: float, *stages: tuple[str, float], n: int = 1000, attacked: list[int] | None = None) -> Evaluation:
    """A cascade evaluation from (name, accuracy after it) pairs, as ``suites.standard`` gives them."""
    configs = {"APGD-CE": {"key": "apgd", "loss": "ce", "targeted": False},
               "APGD-T": {"key": "apgd", "loss": "dlr", "targeted": True},
               "FAB-T": {"key": "fab", "targeted": True}, "Square": {"key": "square"}}
    rows = [Row("Natural", None, None, "", round(clean * n), round(clean * n), n, attacked=n)]
    before = clean
    for name, acc in stages:
        count = round(acc * n)
        rows.append(Row(name, 100, 1, "A", count, count, n, attacked=round(before * n), attack=configs[name]))
        before = acc
    robust = torch.arange(n) < round(before * n)
    return Evaluation(rows=rows, correct=torch.ones(n, dtype=torch.bool), robust=robust, mode="cascade", seed=0)


MODEL_A_STANDARD = cascade(0.981, ("APGD-CE", 0.898), ("APGD-T", 0.892), ("FAB-T", 0.892), ("Square", 0.885))


def test_model_a_standard_evaluation_raises_nothing():
    """The honest PGD-trained model A (full MNIST, the committed standard evaluation of 1,000 points)."""
    found = audit(None, evaluation=MODEL_A_STANDARD)
    assert [f for f in found if f.level == "error"] == []
    assert not {"ce-stage-weak", "black-box-breaks-survivors"} & {f.code for f in found}


def test_saturated_logit_signature_names_the_attack_to_trust():
    ev = cascade(0.99, ("APGD-CE", 0.97), ("APGD-T", 0.05), ("FAB-T", 0.05), ("Square", 0.01))
    (f,) = [f for f in audit(None, evaluation=ev) if f.code == "ce-stage-weak"]
    assert f.level == "error" and "APGD-T" in f.message and "saturated" in f.message and "1.0%" in f.message
    assert f.details["later_broken"] == 960 and f.details["strongest_later_stage"] == "APGD-T"
    ev = cascade(0.99, ("APGD-CE", 0.90), ("APGD-T", 0.86))  # a quarter of the breaks, 4% of the points
    (f,) = [f for f in audit(None, evaluation=ev) if f.code == "ce-stage-weak"]
    assert f.level == "warning"


def test_black_box_signature_names_the_attack_to_trust():
    ev = cascade(0.99, ("APGD-CE", 0.95), ("APGD-T", 0.94), ("FAB-T", 0.94), ("Square", 0.30))
    found = audit(None, evaluation=ev)
    (f,) = [f for f in found if f.code == "black-box-breaks-survivors"]
    assert f.level == "error" and "Square" in f.message and "masked" in f.message
    assert f.details["broken"] == 640 and f.details["attacked"] == 940


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["standard", "adaptive"])
def test_the_audit_flags_masking_models_from_their_evaluation(base, data, suite):
    attacks = (lambda t: standard_like(t)) if suite == "standard" else (lambda t: [adaptive(t)])
    t = ro.Linf(EPS)
    scaled = quiet_evaluate(ScaledLogits(base), data, attacks(t))
    assert "ce-stage-weak" in {f.code for f in audit(None, evaluation=scaled) if f.level == "error"}
    quantized = quiet_evaluate(Quantized(base), data, attacks(t))
    assert "black-box-breaks-survivors" in {f.code for f in audit(None, evaluation=quantized) if f.level == "error"}
    honest = quiet_evaluate(base, data, attacks(t))
    assert [f.code for f in audit(None, evaluation=honest) if f.level == "error"] == []


# --- the suite in evaluate, the CLI and resumed evaluations -------------------------------------------
def test_resumed_adaptive_evaluation_keeps_its_records(base, data, tmp_path):
    x, y = data
    whole = quiet_evaluate(base, (x, y), [adaptive(pool=25)], batch_size=25, seed=2)
    atk = adaptive(pool=25)
    calls = {"n": 0}
    run = atk.run

    def interrupted(*args, **kwargs):
        result = run(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return result

    object.__setattr__(atk, "run", interrupted)
    path = tmp_path / "eval.progress.json"
    with pytest.raises(KeyboardInterrupt):
        quiet_evaluate(base, (x, y), [atk], batch_size=25, seed=2, progress_file=path)
    resumed = quiet_evaluate(base, (x, y), [adaptive(pool=25)], batch_size=25, seed=2, progress_file=path)

    def strip(row: Row) -> dict:
        batches = [{**b, "stages": [{k: v for k, v in st.items() if k != "seconds"} for st in b["stages"]]}
                   for b in row.records["batches"]]
        return {**dataclasses.asdict(row), "seconds": None, "records": {**row.records, "batches": batches}}

    assert torch.equal(resumed.robust, whole.robust)
    assert strip(resumed.rows[1]) == strip(whole.rows[1])


def test_registry_and_names():
    atk = create("adaptive", ro.Linf(0.3))
    assert isinstance(atk, AdaptiveAutoAttack) and atk.name == "AA-adaptive" and atk.steps == 100
    assert BROKEN_BY[1:] == STAGES
    desc = atk.describe()
    assert desc["n_target_classes"] == 3 and desc["target_score"] == "adversarial"


@pytest.mark.slow
def test_cli_eval_adaptive_prints_the_budget_per_stage_and_the_report_shows_it(tiny_run):
    from click.testing import CliRunner

    from robustopt.cli import main
    from robustopt.evaluation.report import RunReport, render

    res = CliRunner().invoke(main, ["eval", str(tiny_run), "--suite", "adaptive", "--n", "20", "--batch-size", "20"])
    assert res.exit_code == 0, res.output
    assert "AA-adaptive" in res.output and "Budget per stage of AA-adaptive" in res.output
    for stage in STAGES[:2]:
        assert stage in res.output
    md = (tiny_run / "eval-adaptive.md").read_text()
    assert "Budget per stage" in md and "| APGD-CE |" in md
    ev = Evaluation.from_json(tiny_run / "eval-adaptive.json")
    assert stage_budget(ev.rows[1])
    info = json.loads((tiny_run / "run.json").read_text()) if (tiny_run / "run.json").is_file() else {}
    doc = render([RunReport(path=tiny_run, info=info, evaluations=[("eval-adaptive.json", ev)])])
    assert "Budget per stage of AA-adaptive" in doc.markdown


# --- model A (full MNIST), where the data is there --------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ROBUSTOPT_DATA", REPO.parent / "shared" / "data"))
MODEL_A_RUN = REPO / "bench" / "results" / "full-mnist" / "A"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "mnist").is_dir() or not MODEL_A_RUN.is_dir(), reason="needs full MNIST (ROBUSTOPT_DATA)")
def test_model_a_under_l2_escalates_fab_t_and_the_black_box():
    """Model A (trained for L-inf) under L2 2.0: APGD leaves most points, FAB-T breaks most of those.
    The schedule gives FAB-T AutoAttack's other targets and Square its whole budget on every survivor."""
    model, _ = ro.load_run(MODEL_A_RUN)
    x, y = ro.data.load("mnist", "test", root=DATA)
    ev = quiet_evaluate(model, (x[:16], y[:16].long()), [AdaptiveAutoAttack(ro.L2(2.0), steps=30, fab_steps=30, queries=300)])
    fab, square = (next(st for st in stage_budget(ev.rows[1]) if st["name"] == name) for name in ("FAB-T", "Square"))
    assert fab["broken"] >= 0.5 * fab["attacked"] and "next 6 targets" in fab["decisions"][0]
    if square["attacked"]:
        assert "FAB-T broke" in square["decisions"][0] and square["outcomes"].get("stalled", 0) == 0
