"""Model cards (robustopt.evaluation.card) in RobustBench's JSON format, from an evaluation and
from `robustopt card` on a run folder."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import robustopt as ro
from robustopt.cli import main
from robustopt.evaluation.card import _eps_text, robustbench_card

# The fields of RobustBench's model_info/DATASET/THREAT_MODEL/NAME.json files (robustbench.utils.ModelInfo).
ROBUSTBENCH_FIELDS = {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                      "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable"}


def test_card_values_follow_robustbench(trained_cnn):
    model, x, y = trained_cnn
    ev = ro.evaluate(model, (x[:40], y[:40]), [ro.attacks.FGSM(ro.Linf(8 / 255))], progress=False)
    card = robustbench_card(ev, name="Tiny", dataset="cifar10", architecture="CNN", test_size=10_000)
    assert ROBUSTBENCH_FIELDS <= set(card) and card["threat_model"] == "Linf"
    assert card["eps"] == "8/255" and card["number_forward_passes"] == 1 and card["additional_data"] is False
    assert card["clean_acc"] == str(round(100 * ev.clean_accuracy, 2))
    assert card["autoattack_acc"] == card["reported"] == str(round(100 * ev.robust_accuracy, 2))
    assert "first 40 of 10,000 test images" in card["footnote"] and "FGSM" in card["footnote"]
    assert card["unreliable"] is True  # FGSM alone does not back an AutoAttack-grade number
    assert card["robustopt"]["eps"] == 8 / 255 and card["robustopt"]["n"] == 40  # numbers as numbers
    assert [_eps_text(e) for e in (0.3, 0.5, 2 / 255, 16 / 255, 0.2)] == ["0.3", "0.5", "2/255", "16/255", "0.2"]
    with pytest.raises(ValueError, match="a fraction in"):
        robustbench_card(ev, name="Tiny", dataset="cifar10", architecture="CNN", reported=44.04)  # percent, not a fraction
    l1 = ro.evaluate(model, (x[:5], y[:5]), [ro.attacks.PGD(ro.L1(1.0), steps=1)], progress=False)
    with pytest.raises(ValueError, match="L-inf and L2 leaderboards only"):
        robustbench_card(l1, name="Tiny", dataset="cifar10", architecture="CNN")


def test_card_command(tiny_run):
    run = tiny_run
    res = CliRunner().invoke(main, ["card", str(run)])  # no standard-suite evaluation yet
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output
    assert f"run `robustopt eval {run} --suite standard` first" in lines[0]
    assert not (run / "robustbench.json").exists()

    res = CliRunner().invoke(main, ["eval", str(run), "--suite", "standard", "--n", "12", "--batch-size", "12"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["card", str(run), "--name", "Tiny PGD", "--venue", "ICLR 2018",
                                    "--architecture", "SmallCNN"])
    assert res.exit_code == 0, res.output
    card = json.loads((run / "robustbench.json").read_text())
    ev = json.loads((run / "eval-standard.json").read_text())
    assert ROBUSTBENCH_FIELDS <= set(card)
    assert (card["name"], card["venue"], card["architecture"], card["dataset"], card["eps"]) == \
        ("Tiny PGD", "ICLR 2018", "SmallCNN", "mnist-mini", "0.3")
    assert card["autoattack_acc"] == str(round(100 * ev["robust_accuracy"], 2))
    assert card["robustopt"]["attacks"] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert card["unreliable"] is False
    assert "model_info/mnist-mini/Linf/NAME.json" in res.output
