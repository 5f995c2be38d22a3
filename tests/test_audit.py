"""Tests of the audit: each purpose-built masking model is caught by the check made for it,
a healthy model is not, and the table-based checks read crafted results like an expert would.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from masking_models import (
    FGSM_EPS, NoisyInput, Quantized, Shattered, SoftmaxOutput, base_model, fgsm_overfit_model, prototype_data,
)
from torch import nn

import robustopt as ro
from robustopt.attacks import FGSM, PGD, Transfer
from robustopt.evaluation import Evaluation, Row, evaluate
from robustopt.evaluation.audit import CHECKS, Finding, audit, findings_table, register_check
from robustopt.evaluation.sweep import SweepCurve

EPS = 0.1


@pytest.fixture(scope="module")
def base() -> nn.Module:
    return base_model()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return prototype_data(200, seed=7)


def codes(findings: list[Finding], level: str | None = None) -> set[str]:
    return {f.code for f in findings if level is None or f.level == level}


# --- model checks ------------------------------------------------------------------------------
def test_healthy_model_has_no_findings(base, data):
    base.train()  # the audit runs in eval mode and restores the mode
    findings = audit(base, data, threat=ro.Linf(EPS))
    assert base.training
    base.eval()
    assert codes(findings, "error") == set()
    assert findings == []
    assert all(p.grad is None for p in base.parameters())  # only input gradients are taken


@pytest.mark.parametrize(
    ("wrap", "expected", "level"),
    [
        (lambda b: Quantized(b), "zero-gradient", "error"),
        (lambda b: SoftmaxOutput(b), "probability-output", "error"),
        (lambda b: SoftmaxOutput(b), "zero-gradient", "error"),
        (lambda b: NoisyInput(b), "randomized-output", "error"),
        (lambda b: Shattered(b), "shattered-gradient", "warning"),
    ],
    ids=["quantized", "softmax-probabilities", "softmax-gradients", "noisy-input", "shattered"],
)
def test_each_masking_model_is_flagged(base, data, wrap, expected, level):
    findings = audit(wrap(base), data, threat=ro.Linf(EPS))
    found = [f for f in findings if f.code == expected]
    assert found, f"expected {expected}, got {codes(findings)}"
    assert found[0].level == level
    assert len(found[0].message) > 100 and found[0].details


def test_randomized_output_is_an_error_even_when_no_prediction_flips(base, data):
    """The level does not hang on the chance that one of the probe's predictions flips between passes."""
    (found,) = audit(NoisyInput(base, sigma=1e-4), data, threat=ro.Linf(EPS), checks=["randomized-output"])
    assert found.level == "error"
    assert found.details["prediction_flips"] == 0  # noise this small moves the logits, no decision


def test_catastrophic_overfitting_is_a_single_step_gap(base, data):
    """FGSM leaves the overfitted model robust where PGD-10 breaks it; a model both break alike passes."""
    (found,) = [f for f in audit(fgsm_overfit_model(), data, threat=ro.Linf(FGSM_EPS), checks=["single-step-gap"])]
    assert found.level == "warning" and "catastrophic overfitting" in found.message
    assert found.details["fgsm_robust_accuracy"] - found.details["pgd10_robust_accuracy"] >= 0.2
    assert audit(base, data, threat=ro.Linf(FGSM_EPS), checks=["single-step-gap"]) == []


def test_masking_is_real_and_transfer_breaks_it(base, data):
    """The quantized model fools white-box PGD, but transfer from its base brings it back to the base's level."""
    x, y = data[0][:100], data[1][:100]
    t = ro.Linf(EPS)
    pgd = PGD(t, steps=10)
    quantized = Quantized(base)
    fooled = evaluate(quantized, (x, y), [pgd], progress=False).robust_accuracy
    truth = evaluate(base, (x, y), [pgd], progress=False).robust_accuracy
    transfer = evaluate(quantized, (x, y), [Transfer(base, pgd, source_name="base")], progress=False).robust_accuracy
    assert fooled > truth + 0.4  # PGD sees zero gradients: false robustness
    assert abs(transfer - truth) <= 0.05


def test_square_breaks_quantized_model(base, data):
    square = pytest.importorskip(
        "robustopt.attacks.square", reason="robustopt.attacks.square (Square attack) is not available yet"
    )
    x, y = data[0][:60], data[1][:60]
    atk = square.Square(ro.Linf(EPS), queries=300)
    on_quantized = evaluate(Quantized(base), (x, y), [atk], progress=False).robust_accuracy
    on_base = evaluate(base, (x, y), [atk], progress=False).robust_accuracy
    fooled = evaluate(Quantized(base), (x, y), [PGD(ro.Linf(EPS), steps=10)], progress=False).robust_accuracy
    assert abs(on_quantized - on_base) <= 0.1
    assert on_quantized < fooled - 0.3


def test_nonfinite_outputs_are_flagged(base, data):
    class NaNForDark(nn.Module):
        """NaN logits for images whose first pixel is dark."""

        def forward(self, x):
            out = base(x)
            return torch.where(x[:, :1, 0, 0] < 0.3, torch.full_like(out, float("nan")), out)

    findings = audit(NaNForDark(), data)
    assert "nonfinite" in codes(findings, "error")


def test_outside_threat(base, data):
    x, y = data
    t = ro.Linf(EPS)
    good = PGD(t, steps=3)(base, x, y)
    assert audit(base, data, threat=t, x_adv=good, checks=["outside-threat"]) == []
    bad = good.clone()
    bad[0] = x[0] + 2 * EPS * torch.sign(torch.randn_like(x[0]))  # too far (and maybe outside [0, 1])
    bad[1, 0, 0, 0] = float("nan")
    (f,) = audit(None, data, threat=t, x_adv=bad)
    assert f.code == "outside-threat" and f.level == "error"
    assert f.details["not_finite"] == 1 and f.details["outside_ball"] + f.details["outside_bounds"] >= 1
    with pytest.raises(ValueError, match="threat"):
        audit(None, data, x_adv=bad)
    with pytest.raises(ValueError, match="shaped like"):
        audit(None, data, threat=t, x_adv=bad[:5])


# --- evaluation checks on crafted tables ---------------------------------------------------------
N = 10000  # examples in the crafted tables


def row(name: str, acc: float, steps: int | None = 40, restarts: int | None = 1, source: str = "A", **attack) -> Row:
    """A crafted row: its attack identified by its registry key, as ``Attack.describe()`` stores it."""
    key = "square" if name.startswith("Square") else "fgsm" if name == "FGSM" else "pgd"
    targeted = {"targeted": "least-likely"} if name.startswith("Targeted") else {}
    count = round(acc * N)
    crafted = {"key": key, "loss": "ce", **targeted, **attack}
    if source not in ("A", ""):  # a transfer row: the attack run on the source model, inside Transfer's description
        crafted = {"key": "transfer", "attack": crafted, "source_name": source}
    return Row(name, steps, restarts, source, count, count, N, attack=crafted)


def table(*rows: Row, mode: str = "independent") -> Evaluation:
    clean = round(0.988 * N)
    rows = [Row("Natural", None, None, "", clean, clean, N), *rows]
    if mode == "cascade":
        worst = N
        for r in rows:
            worst = min(worst, r.accurate)
            r.robust = r.accurate = worst
    return Evaluation(rows=rows, correct=torch.ones(N, dtype=torch.bool), robust=torch.ones(N, dtype=torch.bool),
                      mode=mode, seed=0)


PAPER_WHITE_BOX = [row("FGSM", 0.956, steps=1), row("PGD", 0.932), row("PGD", 0.918, steps=100),
                   row("PGD", 0.904, restarts=20), row("PGD", 0.893, steps=100, restarts=20),
                   row("Targeted PGD", 0.927), row("CW", 0.940, loss="cw"), row("CW+", 0.939, loss="cw", kappa=50.0)]


def fresh(rows: list[Row]) -> list[Row]:
    return [dataclasses.replace(r) for r in rows]


def test_the_papers_table_is_clean():
    ev = table(*fresh(PAPER_WHITE_BOX), row("FGSM", 0.968, steps=1, source="A'"), row("PGD", 0.960, source="A'"),
               row("FGSM", 0.954, steps=1, source="B"), row("PGD", 0.964, source="B"))
    assert audit(None, evaluation=ev) == []


def test_fgsm_from_b_beats_white_box_fgsm_is_explained_not_blamed():
    """The lecture's case: FGSM from B below white-box FGSM on A, while white-box PGD is lower still."""
    ev = table(*fresh(PAPER_WHITE_BOX), row("FGSM", 0.930, steps=1, source="B"), row("PGD", 0.964, source="B"))
    (f,) = audit(None, evaluation=ev)
    assert (f.code, f.level) == ("transfer-beats-whitebox", "info")
    for phrase in ("single-step", "not proof of gradient masking", "curved", "PGD"):
        assert phrase in f.message
    assert f.details["row"] == "FGSM 1x1 (source B)"


def test_transfer_below_best_white_box_is_an_error():
    ev = table(*fresh(PAPER_WHITE_BOX), row("PGD", 0.850, source="B"))
    (f,) = audit(None, evaluation=ev)
    assert (f.code, f.level) == ("transfer-beats-whitebox", "error")
    assert "masked" in f.message and f.details["gap"] == pytest.approx(0.893 - 0.850)
    # Within noise (0.2 points on 10,000 examples) of the best row it is no error; it still beats
    # white-box PGD 40x1 (93.2%) by far, which is a warning.
    (f,) = audit(None, evaluation=table(*fresh(PAPER_WHITE_BOX), row("PGD", 0.891, source="B")))
    assert (f.code, f.level) == ("transfer-beats-whitebox", "warning")


def test_transfer_beating_the_same_attack_but_not_the_best_is_a_warning():
    ev = table(row("PGD", 0.95), row("PGD", 0.80, steps=100, restarts=20), row("PGD", 0.90, source="B"))
    (f,) = audit(None, evaluation=ev)
    assert (f.code, f.level) == ("transfer-beats-whitebox", "warning")


def test_square_below_gradient_attacks_is_a_warning():
    ev = table(row("PGD", 0.90), row("Square", 0.70, steps=5000))
    (f,) = audit(None, evaluation=ev)
    assert (f.code, f.level) == ("gradient-free-beats-whitebox", "warning")
    assert audit(None, evaluation=table(row("PGD", 0.70), row("Square", 0.90, steps=5000))) == []


def test_fgsm_beats_pgd():
    ev = table(row("FGSM", 0.60, steps=1), row("PGD", 0.80), row("PGD", 0.85, source="B"))
    found = audit(None, evaluation=ev)
    assert codes(found) == {"fgsm-beats-pgd"}
    assert found[0].details["pgd_rows"] == ["PGD 40x1 (source A)"]


def test_more_steps_worse():
    ev = table(row("PGD", 0.90), row("PGD", 0.95, steps=100, restarts=20))
    (f,) = audit(None, evaluation=ev)
    assert (f.code, f.level) == ("more-steps-worse", "warning")
    assert f.details["fewer"] == "PGD 40x1 (source A)"
    # Within max(0.5 points, 2 standard errors): noise, not flagged; other losses are other groups.
    assert audit(None, evaluation=table(row("PGD", 0.900), row("PGD", 0.904, steps=100))) == []
    assert audit(None, evaluation=table(row("CW", 0.90, loss="cw"), row("PGD", 0.95, steps=100))) == []


def test_cascade_tables_compare_only_what_they_can():
    # In a cascade a row is cumulative: a transfer row after the white-box rows that breaks 5%
    # more examples than all of them shows the same masking signal.
    ev = table(row("FGSM", 0.95, steps=1), row("PGD", 0.90), row("PGD", 0.85, source="B"), mode="cascade")
    (f,) = audit(None, evaluation=ev)
    assert (f.code, f.level) == ("transfer-beats-whitebox", "error") and "broke 5.0%" in f.message
    quiet = table(row("FGSM", 0.95, steps=1), row("PGD", 0.90), row("PGD", 0.899, source="B"), mode="cascade")
    assert audit(None, evaluation=quiet) == []


def test_real_evaluation_of_quantized_model(base, data):
    x, y = data[0][:100], data[1][:100]
    t = ro.Linf(EPS)
    attacks = [FGSM(t), PGD(t, steps=10), Transfer(base, PGD(t, steps=10), source_name="base")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = evaluate(Quantized(base), (x, y), attacks, mode="independent", progress=False)
    findings = audit(Quantized(base), (x, y), ev)
    assert {"zero-gradient", "transfer-beats-whitebox"} <= codes(findings, "error")
    assert findings[0].level == "error"  # sorted: errors first


# --- sweep checks ----------------------------------------------------------------------------------
def curve(acc: list[float], eps: list[float] | None = None, norm: str = "Linf", n: int = 1000) -> SweepCurve:
    eps = eps or [0.0, 0.1, 0.2, 0.3, 0.5][: len(acc)]
    return SweepCurve(norm=norm, eps=eps, accuracy=acc, grad_evals=[0] * len(acc), seconds=[0.0] * len(acc),
                      breaking_eps=torch.zeros(n), meta={"dim": 784, "bounds": [0.0, 1.0], "majority_fraction": 0.11})


def test_sweep_checks():
    assert audit(None, sweep=curve([0.99, 0.95, 0.90, 0.80, 0.0])) == []
    (f,) = audit(None, sweep=curve([0.99, 0.80, 0.90, 0.70, 0.0]))
    assert (f.code, f.level) == ("non-monotone-eps", "warning") and "0.1" in f.message
    (f,) = audit(None, sweep=curve([0.99, 0.95, 0.94, 0.93, 0.90]))
    assert (f.code, f.level) == ("no-collapse-at-large-eps", "error")
    (f,) = audit(None, sweep=curve([0.99, 0.9, 0.5, 0.2, 0.08]))
    assert (f.code, f.level) == ("no-collapse-at-large-eps", "warning")
    # L2: everything collapses from 0.5 * sqrt(784) = 14 on; 3.0 is not that far.
    assert audit(None, sweep=curve([0.99, 0.5, 0.3], eps=[0.0, 1.0, 3.0], norm="L2")) == []
    (f,) = audit(None, sweep=curve([0.99, 0.5, 0.3], eps=[0.0, 1.0, 14.0], norm="L2"))
    assert f.code == "no-collapse-at-large-eps"


def test_sweep_audit_of_quantized_model(base, data):
    from robustopt.evaluation.sweep import sweep

    x, y = data[0][:60], data[1][:60]
    c = sweep(Quantized(base), (x, y), ro.Linf, [0.0, 0.1, 0.5], attack=PGD(ro.Linf(0.0), steps=5), progress=False)
    assert "no-collapse-at-large-eps" in codes(audit(None, sweep=c), "error")


# --- the API ------------------------------------------------------------------------------------------
def test_finding_and_registry():
    with pytest.raises(ValueError, match="level"):
        Finding("fatal", "x", "y")
    f = Finding("info", "x", "y", {"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.level = "error"  # type: ignore[misc]
    hash(f)

    @register_check("test-always", needs=["evaluation"])
    def _always(ctx):
        """Always says hello."""
        return [Finding("info", "test-always", f"{len(ctx.evaluation.rows)} rows")]

    try:
        assert CHECKS["test-always"].summary == "Always says hello."
        found = audit(None, evaluation=table(row("PGD", 0.9)), checks=["test-always"])
        assert found == [Finding("info", "test-always", "2 rows")]
        with pytest.raises(ValueError, match="audit check name 'test-always' is already taken by _always"):
            register_check("test-always", needs=["evaluation"])(_always)
    finally:
        CHECKS.unregister("test-always")
    with pytest.raises(ValueError, match="needs sweep"):
        audit(None, evaluation=table(), checks=["non-monotone-eps"])
    with pytest.raises(ValueError, match="unknown checks"):
        audit(None, evaluation=table(), checks=["nope"])
    with pytest.raises(ValueError, match="needs"):
        register_check("bad", needs=["gpu"])
    with pytest.raises(ValueError, match="need data"):
        audit(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Evaluation"):
        audit(None, evaluation={"rows": []})


def test_findings_round_trip_through_json():
    import json

    fs = audit(None, evaluation=table(row("FGSM", 0.5), row("PGD", 0.9, steps=40)))
    assert fs  # fgsm-beats-pgd, with numbers in its details
    back = [Finding.from_dict(d) for d in json.loads(json.dumps([f.to_dict() for f in fs]))]
    assert back == fs and [b.details for b in back] == [f.details for f in fs]  # details are not compared by ==


def test_findings_table():
    assert "no problems" in findings_table([])
    fs = [Finding("error", "zero-gradient", "word " * 60), Finding("info", "transfer-beats-whitebox", "fine")]
    text = findings_table(fs)
    assert text.splitlines()[0].startswith("ERROR") and "zero-gradient" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "1 error, 0 warning, 1 info" in text
    md = findings_table(fs, fmt="markdown")
    assert md.startswith("| Level | Code | Finding |") and "`transfer-beats-whitebox`" in md


def test_empty_data_is_refused_in_words(base, data):
    x, y = data
    with pytest.raises(ValueError, match="data holds no examples: pass at least one"):
        audit(base, (x[:0], y[:0]))


def test_stages_are_known_by_their_attacks_not_their_names():
    """A scheduled row's stages get their kinds from the stage attacks of its configuration: renamed
    stages (a committed evaluation of a quantized model) give the same findings."""
    import json
    from pathlib import Path

    file = Path(__file__).resolve().parents[1] / "zoo/mnist-pgd-linf-quantized/eval-adaptive.json"
    ev = Evaluation.from_json(file)
    expected = [(f.level, f.code) for f in audit(None, evaluation=ev)]
    assert expected == [("error", "ce-stage-weak"), ("error", "black-box-breaks-survivors")]
    d = json.loads(json.dumps(ev.to_dict()))
    for batch in d["rows"][1]["records"]["batches"]:
        for k, st in enumerate(batch["stages"]):
            st["name"] = f"stage {k + 1}"
    renamed = audit(None, evaluation=Evaluation.from_dict(d))
    assert [(f.level, f.code) for f in renamed] == expected and "stage 4" in renamed[1].message


def test_cascade_stages_count_the_examples_each_row_broke():
    square = row("Square", 0.70, steps=5000)
    square.attacked = 9000
    ev = table(row("PGD", 0.90), square, mode="cascade")
    assert [r.robust for r in ev.rows] == [9880, 9000, 7000]
    (f,) = [f for f in audit(None, evaluation=ev) if f.code == "black-box-breaks-survivors"]
    assert f.details["broken"] == 2000 and f.details["white_box_stages"] == ["PGD"]
