"""RobustBench interoperability (issue 16, item 13): model cards in its JSON format, and plain
PyTorch state dicts loaded into registry models (``ro.models.create(name, weights=path)``)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import robustopt as ro
from robustopt.cli import main
from robustopt.evaluation.card import _eps_text, robustbench_card
from planted import Planted

# The fields of RobustBench's model_info/DATASET/THREAT_MODEL/NAME.json files (robustbench.utils.ModelInfo).
ROBUSTBENCH_FIELDS = {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                      "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable"}


# --- weights: ro.models.create(name, weights=path) ------------------------------------------------


def reference() -> torch.nn.Module:
    torch.manual_seed(1)
    return ro.models.create("small-cnn")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix, layout", [(suffix, layout) for suffix in (".pt", ".pth", ".safetensors")
                                            for layout in ("plain", "module.", "model.", "module.model.", "wrapped")
                                            if (suffix, layout) != (".safetensors", "wrapped")])  # a flat dict only
def test_create_loads_a_plain_state_dict(tmp_path, suffix, layout):
    source = reference()
    state = {k: v.contiguous().clone() for k, v in source.state_dict().items()}  # (channels-last weights)
    if layout != "plain" and layout != "wrapped":
        state = {layout + k: v for k, v in state.items()}  # DataParallel and wrapper prefixes
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3} if layout == "wrapped"
                   else state, path)
    model = ro.models.create("small-cnn", weights=path)
    assert same_weights(model, source) and not model.training
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), source.eval()(x))


def test_weights_without_the_normalize_layer_keep_the_models_own(tmp_path):
    source = reference()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("normalize.")}  # trained elsewhere
    torch.save(state, tmp_path / "w.pt")
    model = ro.models.create("small-cnn", weights=tmp_path / "w.pt", mean=0.5, std=0.25)
    assert model.normalize.mean.flatten().tolist() == [0.5] and same_weights(model.conv1, source.conv1)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    state = reference().state_dict()
    torch.save({**{k: v for k, v in state.items() if k != "conv1.weight"}, "head.weight": torch.zeros(2)},
               tmp_path / "keys.pt")
    with pytest.raises(ValueError, match=r"missing keys \[conv1\.weight\] \(1\); unexpected keys \[head\.weight\]"):
        ro.models.create("small-cnn", weights=tmp_path / "keys.pt")
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        ro.models.create("small-cnn", num_classes=4, weights=tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        ro.models.create("small-cnn", weights=tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        ro.models.create("small-cnn", weights=tmp_path / "missing.pt")


def test_weights_file_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": Planted(marker)}, path)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        ro.models.create("small-cnn", weights=path)
    path.write_bytes(pickle.dumps(Planted(marker), protocol=2))  # a bare pickle, not even a torch file
    with pytest.raises(ValueError, match="state dict of tensors"):
        ro.models.create("small-cnn", weights=path)
    assert not marker.exists()


# --- model cards ----------------------------------------------------------------------------------


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
