"""bench/compare_autoattack.py: its cache of finished sides is read with weights_only=True, its report carries
its provenance, and its pass counter counts forwards and backwards per row."""

from __future__ import annotations

import pytest
import torch

from bench_package import bench_script
from planted import Planted

compare = bench_script("compare_autoattack")

KEY = {"model": "abc", "data": "mnist-mini", "n": 8, "threat": "Linf(eps=0.3)", "version": "fast",
       "aa_attacks": None, "seed": 0, "batch_size": 8, "threads": 1, "device": "cpu"}


def test_sides_round_trip(tmp_path):
    ro_side = ({"clean_accuracy": 0.5, "rows": [{"name": "APGD-CE", "steps": 100}], "meta": {"seed": 0}}, 1.5, 1.2)
    aa_side = (torch.rand(8, 1, 28, 28), ["apgd-ce - 1/8 - 3 out of 4 successfully perturbed"], 2.0, 1.9)
    for name, value in (("ro", ro_side), ("aa", aa_side)):
        path = tmp_path / f"out.{name}-side.pt"
        compare.save_side(path, KEY, value)
        blob = compare.load_side(path, KEY)
        assert blob["key"] == KEY and isinstance(blob["finished_utc"], str)
        assert repr(blob["value"][1:]) == repr(value[1:])
    assert torch.equal(compare.load_side(tmp_path / "out.aa-side.pt", KEY)["value"][0], aa_side[0])
    assert compare.load_side(tmp_path / "out.ro-side.pt", {**KEY, "seed": 1}) is None  # other settings
    assert compare.load_side(tmp_path / "missing.pt", KEY) is None


def test_planted_pickle_is_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "out.ro-side.pt"
    torch.save({"key": KEY, "value": Planted(marker), "finished_utc": "", "loadavg": None}, path)
    assert compare.load_side(path, KEY) is None
    assert not marker.exists()
    assert "not a plain tensor file" in capsys.readouterr().err


def test_a_small_comparison_is_published_with_its_provenance(tiny_run, tmp_path):
    pytest.importorskip("pyautoattack")
    report = compare.main(["--run", str(tiny_run), "--n", "8", "--version", "fast", "--batch-size", "8",
                           "--threads", "1", "--out", str(tmp_path / "cmp")])
    assert report["kind"] == "comparison" and report["threat"]["norm"] == "linf" and report["data"]["n"] == 8
    assert report["agreement"]["clean_correct"] == round(8 * report["clean_accuracy"])
    saved = (tmp_path / "cmp.json").read_text()
    for field in ('"command"', '"git"', '"machine"', '"finished_utc"', '"peak_rss_mib"'):
        assert field in saved
    assert "robustopt `suites.standard` vs AutoAttack" in (tmp_path / "cmp.md").read_text()


def test_pass_counter_counts_forwards_and_backwards_per_row():
    counter = compare.PassCounter(torch.nn.Linear(3, 2))
    x = torch.rand(5, 3, requires_grad=True)
    out = counter(x)
    torch.autograd.grad(out[:, 0].sum(), x, retain_graph=True)  # a Jacobian: two backward passes
    torch.autograd.grad(out[:, 1].sum(), x)
    with torch.no_grad():
        counter(x[:2])  # a query
    assert counter.counts() == {"grad_evals": 10, "forward_only": 2, "forwards": 7}


@pytest.mark.slow
def test_the_adaptive_version_is_compared_with_autoattacks_standard_version(tiny_run, tmp_path):
    pytest.importorskip("pyautoattack")
    report = compare.main(["--run", str(tiny_run), "--n", "8", "--version", "adaptive", "--batch-size", "8",
                           "--threads", "1", "--out", str(tmp_path / "cmp")])
    assert report["autoattack_run"]["config"]["attacks_to_run"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    ro, aa = report["robustopt"], report["autoattack_run"]
    assert ro["attacks"][0]["type"] == "AdaptiveAutoAttack" and "Budget per stage" in ro["budget_per_stage"]
    assert set(ro["counted"]) == set(aa["counted"]) == {"grad_evals", "forward_only", "forwards"}
    assert ro["counted"]["grad_evals"] > 0 and aa["counted"]["grad_evals"] > 0
    md = (tmp_path / "cmp.md").read_text()
    assert "grad evals / point" in md and "Budget per stage of AA-adaptive" in md
