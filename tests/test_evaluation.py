"""The evaluation cascade, the madry suite, result files, and the progress lines of an evaluation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import robustopt as ro
from robustopt.attacks import FGSM, PGD, Attack, AttackResult, Transfer
from robustopt.evaluation import Evaluation, evaluate, row_key, suites


def _linear(seed: int, d: int = 20, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).double()


@pytest.fixture
def problem():
    model = _linear(0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(120, 1, 20, generator=g, dtype=torch.float64)
    y = model(x).argmax(1)
    y[:10] = (y[:10] + 1) % 4  # a few clean errors
    return model, x, y


def _deterministic_attacks(t):
    # No random start: each attack's result depends on the example only, so the naive loop is exact.
    return [
        FGSM(t),
        PGD(t, steps=5, random_start=False, loss="cw"),
        PGD(t, steps=10, random_start=False, targeted="least-likely"),
        Transfer(_linear(1), PGD(t, steps=5, random_start=False), source_name="B"),
    ]


def _naive_broken(model, attacks, x, y):
    broken = []
    for atk in attacks:
        x_adv = atk(model, x, y)
        broken.append(model(x_adv).argmax(1) != y)
    return torch.stack(broken)


@pytest.mark.parametrize("batch_size", [7, 500])
def test_cascade_equals_naive_worst_case(problem, batch_size):
    model, x, y = problem
    attacks = _deterministic_attacks(ro.Linf(0.08))
    ev = evaluate(model, (x, y), attacks, batch_size=batch_size, mode="cascade", progress=False)
    correct = model(x).argmax(1) == y
    broken = _naive_broken(model, attacks, x, y)
    expected = correct & ~broken.any(0)
    assert torch.equal(ev.correct, correct)
    assert torch.equal(ev.robust, expected)
    assert ev.robust_accuracy == pytest.approx(expected.double().mean().item())
    # each cascade row is the worst case over the rows so far
    for k, row in enumerate(ev.rows[1:], start=1):
        assert row.worst_case == pytest.approx((correct & ~broken[:k].any(0)).double().mean().item())
    assert 0 < ev.robust_accuracy < ev.clean_accuracy  # the problem is not trivial


def test_independent_rows_are_each_attack_alone(problem):
    model, x, y = problem
    attacks = _deterministic_attacks(ro.Linf(0.08))
    ev = evaluate(model, (x, y), attacks, batch_size=50, mode="independent", progress=False)
    correct = model(x).argmax(1) == y
    broken = _naive_broken(model, attacks, x, y)
    for row, b in zip(ev.rows[1:], broken):
        assert row.accuracy == pytest.approx((correct & ~b).double().mean().item())
        assert row.attacked == int(correct.sum())
    assert torch.equal(ev.robust, correct & ~broken.any(0))


def test_cascade_attacks_only_what_is_still_robust(problem):
    model, x, y = problem
    attacks = _deterministic_attacks(ro.Linf(0.08))
    ev = evaluate(model, (x, y), attacks, mode="cascade", progress=False)
    assert ev.rows[1].attacked == int(ev.correct.sum())
    for prev, row in zip(ev.rows[1:], ev.rows[2:]):
        assert row.attacked == round(prev.worst_case * ev.n)
    assert ev.rows[1].grad_evals == int(ev.correct.sum())  # FGSM: one gradient per example


def test_rows_describe_the_attacks(problem):
    model, x, y = problem
    ev = evaluate(model, (x, y), _deterministic_attacks(ro.Linf(0.05)), progress=False)
    names = [(r.name, r.steps, r.restarts, r.source) for r in ev.rows]
    assert names[0] == ("Natural", None, None, "")
    assert names[1] == ("FGSM", 1, 1, "A")
    assert names[2] == ("CW", 5, 1, "A")
    assert names[3] == ("Targeted PGD", 10, 1, "A")
    assert names[4] == ("PGD", 5, 1, "B")
    assert all(r.seconds >= 0 for r in ev.rows)
    assert ev.rows[2].attack["loss"] == "cw"


def test_seeded_evaluation_is_reproducible(problem):
    model, x, y = problem
    attacks = [PGD(ro.Linf(0.06), steps=5, restarts=2)]
    a = evaluate(model, (x, y), attacks, seed=3, batch_size=32, progress=False)
    b = evaluate(model, (x, y), attacks, seed=3, batch_size=32, progress=False)
    assert torch.equal(a.robust, b.robust)


def test_json_round_trip_and_tables(problem, tmp_path):
    model, x, y = problem
    ev = evaluate(model, (x, y), _deterministic_attacks(ro.Linf(0.05)), progress=False)
    path = ev.to_json(tmp_path / "ev.json")
    back = Evaluation.from_json(path)
    assert back.rows == ev.rows and torch.equal(back.robust, ev.robust) and back.mode == ev.mode
    data = json.loads(path.read_text())
    assert isinstance(data["robust_accuracy"], float)
    text = ev.table()
    assert "Method" in text and "Worst case" in text and "FGSM" in text
    md = ev.table("markdown", reference={("FGSM", 1, 1, "A"): 95.6})
    assert md.startswith("| Method | Steps | Restarts | Source | Accuracy | Paper |")
    assert "95.6%" in md
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a robustopt evaluation"):
        Evaluation.from_json(tmp_path / "bad.json")


def test_evaluation_is_typed_data_that_round_trips_through_json(problem):
    model, x, y = problem
    threat = ro.Linf(1 / 30)  # not exact in 4 digits: the dict keeps every bit
    ev = evaluate(model, (x, y), _deterministic_attacks(threat), progress=False, meta={"data": "toy"})
    assert ev.threat == threat and "threat" not in ev.meta
    assert [r.key for r in ev.rows] == [None, "fgsm", "pgd", "pgd", "transfer"] and ev.rows[0].natural
    assert all(r.total == ev.n and r.accuracy == r.accurate / ev.n and r.worst_case == r.robust / ev.n for r in ev.rows)
    assert ev.rows[-1].robust == int(ev.robust.sum()) and ev.rows[0].accurate == int(ev.correct.sum())
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["threat"] == threat.to_dict() and d["rows"][1]["accuracy"] == ev.rows[1].accuracy  # for readers
    back = Evaluation.from_dict(d)
    assert back.to_dict() == d and back.threat == threat and back.rows == ev.rows
    assert back.table() == ev.table() and f"threat {threat}" in ev.table()
    header, lines, caption = ev.cells(reference={("FGSM", 1, 1, "A"): 95.6})
    assert header[-1] == "Paper" and lines[1][:2] == ["FGSM", "1"] and lines[1][-1] == "95.6%"
    assert lines[-1][0] == "Worst case (all rows)" and caption.endswith(f"threat {threat}")


def _as_older_file(d: dict) -> dict:
    """``d`` as robustopt wrote it before rows held counts and the threat model had a field of its own."""
    old = {k: v for k, v in d.items() if k != "threat"}
    old["meta"] = {**d["meta"], "threat": d["threat"]}
    old["rows"] = [{k: v for k, v in r.items() if k not in ("accurate", "robust", "total")} for r in d["rows"]]
    for r in old["rows"]:
        if r["attack"]:
            r["attack"] = {k: v for k, v in r["attack"].items() if k != "key"}
            if "attack" in r["attack"]:
                r["attack"]["attack"] = {k: v for k, v in r["attack"]["attack"].items() if k != "key"}
    return old


def test_files_of_earlier_versions_are_still_read(problem):
    model, x, y = problem
    threat = ro.Linf(1 / 30)
    ev = evaluate(model, (x, y), _deterministic_attacks(threat), progress=False)
    d = json.loads(json.dumps(ev.to_dict()))
    old = _as_older_file(d)
    back = Evaluation.from_dict(old)
    assert back.threat == threat and back.rows == ev.rows  # counts from the fractions, keys from the class names
    # Older still: meta["threat"] is "Linf(eps=0.03333)" (eps to 4 digits); the rows' configuration holds the exact one.
    old["meta"]["threat"] = str(threat)
    assert Evaluation.from_dict(old).threat == threat
    for r in old["rows"]:  # without any configuration, the threat model is unknown
        r["attack"] = {}
    assert Evaluation.from_dict(old).threat is None


@pytest.mark.parametrize("path", ["bench/results/full-mnist/A/eval-madry.json", "zoo/mnist-pgd-linf/eval-adaptive.json",
                                  "bench/results/cifar10-cpu/A/eval-madry.json"])
def test_committed_result_files_are_read(path):
    from pathlib import Path

    file = Path(__file__).resolve().parents[1] / path
    raw = json.loads(file.read_text())
    ev = Evaluation.from_json(file)
    assert ev.n == raw["n"] and ev.threat is not None and ev.threat.norm == "Linf"
    assert ev.rows[0].natural and all(r.key is not None for r in ev.rows[1:])
    for r, saved in zip(ev.rows, raw["rows"]):
        assert r.total == ev.n and r.accuracy == pytest.approx(saved["accuracy"], abs=1e-6)
        assert r.worst_case == pytest.approx(saved["worst_case"], abs=1e-6)
        if not r.natural:
            assert r.attack["key"] == r.key and Attack.from_dict(r.attack, source_model=nn.Identity()).name == r.name
    assert ev.rows[-1].robust == int(ev.robust.sum())
    again = Evaluation.from_dict(json.loads(json.dumps(ev.to_dict())))  # and in today's format
    assert again.rows == ev.rows and again.threat == ev.threat


def test_data_as_iterable_of_batches(problem):
    model, x, y = problem
    attacks = [FGSM(ro.Linf(0.05))]
    whole = evaluate(model, (x, y), attacks, progress=False)
    batched = evaluate(model, [(x[i : i + 25], y[i : i + 25]) for i in range(0, len(x), 25)], attacks, progress=False)
    assert torch.equal(whole.robust, batched.robust)


def test_model_mode_restored_and_no_param_grads(problem):
    model, x, y = problem
    model.train()
    evaluate(model, (x, y), [PGD(ro.Linf(0.05), steps=3)], progress=False)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


class _TapeMeter:
    """Bytes of the tensors that autograd graphs hold for backward, alive at once (current and peak)."""

    def __init__(self) -> None:
        self.alive = self.peak = 0

    def pack(self, t: torch.Tensor):
        meter, size = self, t.numel() * t.element_size()

        class Saved:
            def __init__(self) -> None:
                self.t = t
                meter.alive += size
                meter.peak = max(meter.peak, meter.alive)

            def __del__(self) -> None:
                meter.alive -= size

        return Saved()

    @staticmethod
    def unpack(saved) -> torch.Tensor:
        return saved.t


@pytest.mark.parametrize("mode", ["cascade", "independent"])
def test_the_autograd_tape_holds_one_batch_not_the_dataset(mode):
    """10x the examples, the same tape: only the batch being attacked is ever on it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 1, 20, generator=g, dtype=torch.float64)
    y = model(x).argmax(1).detach()
    attacks = [FGSM(ro.Linf(0.01)), PGD(ro.Linf(0.01), steps=3)]  # small eps: most points stay robust
    peaks = []
    for n in (200, 2000):
        meter = _TapeMeter()
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            ev = evaluate(model, (x[:n], y[:n]), attacks, batch_size=50, mode=mode, progress=False)
        assert meter.alive == 0 and not ev.robust.requires_grad  # nothing left on a tape afterwards
        peaks.append(meter.peak)
    assert 0 < peaks[1] <= peaks[0]


@dataclass(frozen=True)
class _Cheater(Attack):
    threat: ro.ThreatModel
    label: str | None = "cheater"

    def run(self, model, x, y, **kwargs):
        return AttackResult(x_adv=(x + 2 * self.threat.eps).clamp(0, 1), success=torch.ones_like(y, dtype=torch.bool))


def test_points_outside_the_threat_model_are_refused(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="outside its threat model"):
        evaluate(model, (x, y), [_Cheater(ro.Linf(0.1))], progress=False)


def test_bad_arguments(problem):
    model, x, y = problem
    atk = [FGSM(ro.Linf(0.1))]
    with pytest.raises(ValueError, match="mode"):
        evaluate(model, (x, y), atk, mode="fast")
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, (x, y), atk, batch_size=0)
    with pytest.raises(TypeError, match="robustopt Attack"):
        evaluate(model, (x, y), ["pgd"])
    with pytest.raises(ValueError, match="do not match"):
        evaluate(model, (x, y[:-1]), atk)
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, [], atk)
    with pytest.raises(ValueError, match="outside the bounds"):
        evaluate(model, (x + 2, y), atk)


def test_madry_suite_rows():
    t = ro.Linf(0.3)
    src = {"A'": _linear(1), "B": _linear(2), "A_nat": _linear(3)}
    rows = suites.madry(t, src)
    keys = [(a.name, a.steps, a.restarts, a.source) for a in rows]
    white = keys[:8]
    assert white == [("FGSM", 1, 1, "A"), ("PGD", 40, 1, "A"), ("PGD", 100, 1, "A"), ("PGD", 40, 20, "A"),
                     ("PGD", 100, 20, "A"), ("Targeted PGD", 40, 1, "A"), ("CW", 40, 1, "A"), ("CW+", 40, 1, "A")]
    assert [k for k in keys if k[3] == "A'"] == [("FGSM", 1, 1, "A'"), ("PGD", 40, 1, "A'"), ("PGD", 100, 20, "A'"),
                                                ("CW", 40, 1, "A'"), ("CW+", 40, 1, "A'")]
    assert [k for k in keys if k[3] == "B"] == [("FGSM", 1, 1, "B"), ("PGD", 40, 1, "B"), ("CW+", 40, 1, "B")]
    assert all(getattr(a, "attack", a).alpha == pytest.approx(0.01) for a in rows if a.name != "FGSM")  # paper step
    cw_plus = [a for a in rows if a.name == "CW+"][0]
    assert cw_plus.kappa == 50.0
    # every white-box row except the natural one has a paper number
    ref = suites.MADRY_REFERENCE["mnist"]
    assert all(k in ref for k in white)
    capped = suites.madry(t, max_restarts=2)
    assert max(a.restarts for a in capped) == 2
    cifar = suites.madry(ro.Linf(8 / 255), {"A_nat": _linear(1)}, preset="cifar10")
    assert [(a.name, a.steps) for a in cifar][:4] == [("FGSM", 1), ("PGD", 7), ("PGD", 20), ("CW", 30)]
    assert cifar[1].alpha == pytest.approx(2 / 255)
    with pytest.raises(ValueError, match="preset"):
        suites.madry(t, preset="imagenet")
    with pytest.raises(ValueError, match="max_restarts"):
        suites.madry(t, max_restarts=0)


# Madry et al. (2018), Tables 1 and 2 as printed (accuracy in %): (name, steps, restarts, source).
PAPER_TABLES = {
    "mnist": {
        ("Natural", None, None, ""): 98.8, ("FGSM", 1, 1, "A"): 95.6, ("PGD", 40, 1, "A"): 93.2,
        ("PGD", 100, 1, "A"): 91.8, ("PGD", 40, 20, "A"): 90.4, ("PGD", 100, 20, "A"): 89.3,
        ("Targeted PGD", 40, 1, "A"): 92.7, ("CW", 40, 1, "A"): 94.0, ("CW+", 40, 1, "A"): 93.9,
        ("FGSM", 1, 1, "A'"): 96.8, ("PGD", 40, 1, "A'"): 96.0, ("PGD", 100, 20, "A'"): 95.7,
        ("CW", 40, 1, "A'"): 97.0, ("CW+", 40, 1, "A'"): 96.4,
        ("FGSM", 1, 1, "B"): 95.4, ("PGD", 40, 1, "B"): 96.4, ("CW+", 40, 1, "B"): 95.7,
    },
    "cifar10": {
        ("Natural", None, None, ""): 87.3, ("FGSM", 1, 1, "A"): 56.1, ("PGD", 7, 1, "A"): 50.0,
        ("PGD", 20, 1, "A"): 45.8, ("CW", 30, 1, "A"): 46.8, ("FGSM", 1, 1, "A'"): 67.0, ("PGD", 7, 1, "A'"): 64.2,
        ("CW", 30, 1, "A'"): 78.7, ("FGSM", 1, 1, "A_nat"): 85.6, ("PGD", 7, 1, "A_nat"): 86.0,
    },
}


def test_the_madry_tables_hold_the_papers_numbers_on_typed_rows():
    assert suites.MADRY_REFERENCE == PAPER_TABLES
    for name, table in suites.MADRY_TABLES.items():
        assert table.reference() == PAPER_TABLES[name]
        specs = [spec for spec, _ in table.white_box] + [s for rows in table.transfer.values() for s, _ in rows]
        assert all(isinstance(spec, suites.RowSpec) for spec in specs)
        # every white-box row of the suite has the paper's number, keyed like the evaluation's rows
        rows = suites.madry(table.threat, preset=name)
        assert [(a.name, a.steps, a.restarts, "A") in table.reference() for a in rows] == [True] * len(rows)
    assert suites.RowSpec("cw", 40, kappa=50).build(ro.Linf(0.3), 1 / 30).name == "CW+"


def test_which_paper_table_applies_is_decided_once():
    assert suites.paper_reference("mnist", ro.Linf(0.3)) is suites.MADRY_TABLES["mnist"]
    assert suites.paper_reference("mnist-mini", ro.Linf(0.3 * (1 + 1e-4))) is suites.MADRY_TABLES["mnist"]
    assert suites.paper_reference("cifar10", ro.Linf(8 / 255)) is suites.MADRY_TABLES["cifar10"]
    for data, threat in (("cifar10", ro.Linf(0.3)), ("fashion-mnist", ro.Linf(0.3)), ("mnist", ro.L2(0.3)),
                         ("mnist", ro.Linf(0.2)), (None, ro.Linf(0.3)), ("mnist", None)):
        assert suites.paper_reference(data, threat) is None, (data, threat)
    assert suites.paper_reference("npz:/nowhere.npz", ro.Linf(0.3)) is None  # a data SPEC has no table
    assert suites.madry_preset("cifar10") == "cifar10" and suites.madry_preset("fashion-mnist") == "mnist"
    assert set(suites.MADRY_TABLES) == set(ro.data.registry.MADRY_TABLES)  # the tables a dataset may name
    madry = suites.get_suite("madry")
    assert madry.paper("mnist", ro.Linf(0.3)) is suites.MADRY_TABLES["mnist"]
    assert suites.get_suite("standard").paper("mnist", ro.Linf(0.3)) is None


def test_suites_are_one_registry_with_their_mode():
    assert suites.names()[:5] == ["madry", "standard", "fast", "adaptive", "rand"]
    assert {n: suites.get_suite(n).mode for n in suites.names()[:5]} == {
        "madry": "independent", "standard": "cascade", "fast": "cascade", "adaptive": "cascade", "rand": "cascade"}
    assert [n for n in suites.names() if suites.get_suite(n).transfer] == ["madry"]
    with pytest.raises(ValueError, match="did you mean 'fast'"):
        suites.get_suite("fats")
    t = ro.Linf(0.3)
    request = suites.SuiteRequest(t, data="cifar10", sources={"A_nat": _linear(1)}, max_restarts=1, seed=4)
    assert ([a.describe() for a in suites.get_suite("madry").build(request)]
            == [a.describe() for a in suites.madry(t, request.sources, preset="cifar10", max_restarts=1)])
    for version in ("standard", "fast", "adaptive", "rand"):
        built = suites.get_suite(version).build(suites.SuiteRequest(t, seed=4))
        assert [a.describe() for a in built] == [a.describe() for a in suites.standard(t, version=version, seed=4)]

    @suites.register_suite("test-fgsm", mode="cascade", summary="FGSM alone")
    def fgsm_only(request):
        return [FGSM(request.threat)]

    try:
        assert suites.get_suite("test-fgsm").build(suites.SuiteRequest(t))[0].name == "FGSM"
        with pytest.raises(ValueError, match="already taken"):
            suites.register_suite("test-fgsm", mode="cascade", summary="again")(fgsm_only)
    finally:
        suites.SUITES.unregister("test-fgsm")
    with pytest.raises(ValueError, match="mode"):
        suites.register_suite("test-bad", mode="worst", summary="")


def test_capped_restarts_do_not_duplicate_rows():
    rows = suites.madry(ro.Linf(0.3), {"A'": _linear(1)}, max_restarts=1)
    keys = [(a.name, a.steps, a.restarts, a.source) for a in rows]
    assert len(keys) == len(set(keys))
    assert ("PGD", 40, 1, "A") in keys and ("PGD", 100, 1, "A") in keys and ("PGD", 100, 1, "A'") in keys


def test_a_threat_model_unknown_where_the_file_is_read_is_no_error(problem):
    model, x, y = problem
    d = evaluate(model, (x, y), [FGSM(ro.Linf(0.05))], progress=False).to_dict()
    d["threat"] = {"norm": "Hexagon", "eps": 0.05, "bounds": [0.0, 1.0]}  # its class is not imported
    ev = Evaluation.from_dict(d)
    assert ev.threat is None and "threat" not in ev.table().splitlines()[-1]
    old = _as_older_file(d)
    for r in old["rows"]:
        r["attack"].pop("threat", None)
    assert Evaluation.from_dict(old).threat is None


# --- inputs that would give a wrong number are refused ---------------------------------------------
@pytest.mark.parametrize("label", [4, -1])
def test_labels_outside_the_models_classes_are_refused(problem, label):
    model, x, y = problem
    y = y.clone()
    y[0] = label
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\] for a model with 4 outputs"):
        evaluate(model, (x, y), [FGSM(ro.Linf(0.1))], progress=False)


def test_each_batch_pairs_its_own_images_and_labels(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match=r"batch 0 of data has x of shape \(20, 1, 20\) and y of shape \(19,\)"):
        evaluate(model, [(x[:20], y[:19]), (x[20:], y[19:])], FGSM(ro.Linf(0.1)), progress=False)
    with pytest.raises(TypeError, match="pair of lists of tensors"):
        evaluate(model, [list(x), list(y)], FGSM(ro.Linf(0.1)), progress=False)
    with pytest.raises(TypeError, match="batch 0 of data is not an"):
        evaluate(model, [{"x": x, "y": y}], FGSM(ro.Linf(0.1)), progress=False)


class _Scaled(nn.Module):
    """``model``'s logits times ``factor`` (NaN or Inf make its output undefined)."""

    def __init__(self, model: nn.Module, factor: float, above: float = -1.0) -> None:
        super().__init__()
        self.model, self.factor, self.above = model, factor, above

    def forward(self, x):
        z = self.model(x)
        hit = (x.flatten(1).max(1).values > self.above)[:, None]  # only inputs with a pixel above `above`
        return torch.where(hit, z * self.factor, z)


@pytest.mark.parametrize("factor", [float("nan"), float("inf")])
def test_a_model_whose_output_is_not_finite_is_refused_at_the_clean_pass(problem, factor):
    model, x, y = problem
    with pytest.raises(ValueError, match=r"model's output \(its logits\) holds NaN or Inf on 120 of 120 clean inputs"):
        evaluate(_Scaled(model, factor), (x, y), [FGSM(ro.Linf(0.1))], progress=False)


def test_a_model_whose_output_is_not_finite_at_adversarial_points_is_refused(problem):
    model, x, y = problem
    x = x * 0.8  # every clean pixel <= 0.8; an attack at eps 0.1 reaches above 0.85
    with pytest.raises(ValueError, match="NaN or Inf on .* adversarial points of PGD"):
        evaluate(_Scaled(model, float("nan"), above=0.85), (x, y), [PGD(ro.Linf(0.1), steps=3)], progress=False)


def test_attacks_may_be_a_single_attack_or_a_generator(problem):
    model, x, y = problem
    fgsm, pgd = FGSM(ro.Linf(0.1)), PGD(ro.Linf(0.1), steps=3)
    single = evaluate(model, (x, y), fgsm, progress=False)
    assert [r.name for r in single.rows] == ["Natural", "FGSM"]
    listed = evaluate(model, (x, y), [fgsm, pgd], progress=False)
    generated = evaluate(model, (x, y), (a for a in (fgsm, pgd)), progress=False)
    assert [r.accuracy for r in generated.rows] == [r.accuracy for r in listed.rows] and len(listed.rows) == 3
    with pytest.raises(TypeError, match="robustopt Attack or a list of them"):
        evaluate(model, (x, y), "pgd", progress=False)


def test_a_transfer_source_named_like_the_white_box_rows_keeps_its_rows():
    t, m = ro.Linf(0.3), _linear(1)
    for cap in (None, 1):
        named_a = suites.madry(t, {"A": m}, max_restarts=cap)
        named_z = suites.madry(t, {"Z": m}, max_restarts=cap)
        assert len(named_a) == len(named_z) == len(suites.madry(t, max_restarts=cap)) + 3
        assert [a.source for a in named_a if isinstance(a, Transfer)] == ["A", "A", "A"]
    # two names for one model are two sources; a capped copy of a row is still dropped
    assert len(suites.madry(t, {"B": m, "C": m}, max_restarts=1)) == 6 + 3 + 3


def test_a_transfer_row_named_A_is_told_apart_in_tables_and_reference(problem):
    model, x, y = problem
    t = ro.Linf(0.1)
    ev = evaluate(model, (x, y), [FGSM(t), Transfer(_linear(1), FGSM(t), source_name="A")], progress=False)
    white, transfer = ev.rows[1], ev.rows[2]
    assert row_key(white) == ("FGSM", 1, 1, "A") and row_key(transfer) == ("FGSM", 1, 1, "A (transfer)")
    table = ev.table(reference={("FGSM", 1, 1, "A"): 95.6})
    line = [s for s in table.splitlines() if "A (transfer)" in s][0]
    assert "95.6" not in line  # the white-box paper number is not shown beside a transfer row


def test_no_attack_or_a_used_up_generator_is_refused(problem):
    model, x, y = problem
    attacks = (a for a in [FGSM(ro.Linf(0.1))])
    evaluate(model, (x, y), attacks, progress=False)
    for empty in ([], attacks):  # robust accuracy would silently be the clean one
        with pytest.raises(ValueError, match="attacks is empty"):
            evaluate(model, (x, y), empty, progress=False)


def test_attacks_of_different_threat_models_are_refused(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match=r"2 threat models \(FGSM: Linf\(eps=0.05\), PGD: Linf\(eps=0.3\)\)"):
        evaluate(model, (x, y), [FGSM(ro.Linf(0.05)), PGD(ro.Linf(0.3), steps=2)], progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": True}, "batch_size must be a positive integer"),
    ({"seed": -1}, "seed must be a whole number >= 0"),
    ({"seed": 1.5}, "seed must be a whole number >= 0"),
])
def test_bad_batch_size_and_seed_are_refused_in_words(problem, kwargs, message):
    model, x, y = problem
    with pytest.raises(ValueError, match=message):
        evaluate(model, (x, y), FGSM(ro.Linf(0.1)), progress=False, **kwargs)


def test_data_that_is_no_pair_is_refused_in_words(problem):
    from torch.utils.data import DataLoader, TensorDataset

    model, x, y = problem
    with pytest.raises(TypeError, match="data is a tuple of 3 tensors; pass \\(x, y\\)"):
        evaluate(model, (x, y, y), FGSM(ro.Linf(0.1)), progress=False)
    with pytest.raises(ValueError, match="data holds no examples"):
        evaluate(model, DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4), FGSM(ro.Linf(0.1)), progress=False)


def test_a_transfer_source_without_a_name_is_refused():
    with pytest.raises(ValueError, match="every source needs a name"):
        suites.madry(ro.Linf(0.3), {"": _linear(1)})


def test_records_keep_floats_to_four_significant_digits():
    from robustopt.evaluation.records import batch_records

    notes = {"margin": torch.tensor([0.123456, 98765.4, -0.000123449, 0.0, float("nan"), float("inf")], dtype=torch.float64)}
    res = AttackResult(x_adv=torch.zeros(6, 1), success=torch.zeros(6, dtype=torch.bool), notes=notes)
    got = batch_records(torch.arange(6), res)["examples"]["margin"]
    assert got == [0.1235, 98770.0, -0.0001234, 0.0, None, float("inf")]


# --- progress: one line per attack, counting images ---


def test_eval_progress_counts_images(capsys, monkeypatch, trained_cnn):
    monkeypatch.setenv("ROBUSTOPT_PROGRESS", "plain")
    model, x, y = trained_cnn
    t = ro.Linf(0.1)
    ev = ro.evaluate(model, (x[:50], y[:50]), [ro.attacks.FGSM(t), ro.attacks.PGD(t, steps=3)], batch_size=20)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    for line, row in zip(lines, ev.rows[1:]):
        assert re.fullmatch(rf"{row.name} \(A\): {row.attacked}/{row.attacked} images in \d+ s", line), line
