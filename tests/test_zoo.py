"""The model zoo (robustopt.zoo): entries, loading, cards, the leaderboard and the CLI on a tiny zoo."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner

import robustopt as ro
from robustopt import zoo
from robustopt.cli import main
from robustopt.evaluation.card import robustbench_card
from robustopt.models.defenses import Softmax


@pytest.fixture
def tiny_zoo(tiny_run, tmp_path, monkeypatch):
    """A zoo of two entries: a trained one (the tiny run) and probabilities over it (linked weights)."""
    root = tmp_path / "zoo"
    shutil.copytree(tiny_run, root / "tiny", ignore=shutil.ignore_patterns(".lock", "eval-*"))
    (root / "tiny" / zoo.ENTRY_FILE).write_text(json.dumps(
        {"name": "tiny", "description": "one epoch of PGD", "provenance": {"train": "robustopt train ..."}}))
    soft = root / "tiny-softmax"
    soft.mkdir()
    info = json.loads((tiny_run / "run.json").read_text())
    (soft / "run.json").write_text(json.dumps({**info, "defense": {"kind": "softmax"}}))
    for file in ("model.json", "model.safetensors"):
        os.symlink(os.path.join("..", "tiny", file), soft / file)
    (soft / zoo.ENTRY_FILE).write_text(json.dumps({"name": "tiny-softmax", "base": "tiny", "method": "pgd"}))
    (root / "not-an-entry").mkdir()
    monkeypatch.setenv(zoo.ENV_VAR, str(root))
    monkeypatch.setattr(zoo, "cache_dir", lambda: tmp_path / "cache")
    return root


def test_names_and_entries_read_the_zoo_folder(tiny_zoo):
    assert ro.zoo.names() == ["tiny", "tiny-softmax"]
    item = zoo.entry("zoo:tiny-softmax")
    assert (item.dataset, item.network, item.method, item.norm, item.eps) == ("mnist-mini", "small-cnn", "pgd", "linf", 0.3)
    assert item.defense == {"kind": "softmax"} and item.base == "tiny" and item.training == "pgd + softmax"
    assert item.card is None and item.robust_accuracy is None
    with pytest.raises(ValueError, match="no zoo entry 'nope'; the entries are: tiny, tiny-softmax"):
        zoo.entry("nope")


def test_load_gives_the_model_in_eval_mode_wrapped_in_its_defense(tiny_zoo):
    base, wrapped = ro.zoo.load("tiny"), ro.zoo.load("tiny-softmax")
    assert not base.training and not wrapped.training
    assert isinstance(wrapped, Softmax)
    x, _ = ro.data.load("mnist-mini", split="test")
    with torch.no_grad():
        assert torch.allclose(wrapped(x[:8]), torch.softmax(base(x[:8]), dim=1))


def test_a_missing_zoo_says_where_it_is_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.ENV_VAR, str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="not part of the wheel"):
        ro.zoo.names()


@pytest.mark.filterwarnings("ignore:the model's outputs are in")  # the softmax entry: the warning is the point
def test_eval_of_a_zoo_entry_writes_outside_the_zoo(tiny_zoo, tmp_path):
    before = sorted(p.name for p in (tiny_zoo / "tiny-softmax").iterdir())
    res = CliRunner().invoke(main, ["eval", "zoo:tiny-softmax", "--suite", "fast", "--n", "20", "--batch-size", "20"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cache" / "tiny-softmax" / "eval-fast.json").is_file()
    assert sorted(p.name for p in (tiny_zoo / "tiny-softmax").iterdir()) == before
    ev = ro.Evaluation.from_json(tmp_path / "cache" / "tiny-softmax" / "eval-fast.json")
    assert ev.n == 20
    out = tmp_path / "here"
    res = CliRunner().invoke(main, ["eval", "zoo:tiny", "--suite", "fast", "--n", "20", "--batch-size", "20",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "eval-fast.json").is_file() and json.loads((out / "run.json").read_text())["zoo"] == "tiny"
    res = CliRunner().invoke(main, ["eval", "zoo:tiny-softmax", "--suite", "fast", "--n", "20", "--out", str(out)])
    assert res.exit_code == 2 and "is the run folder of another model" in res.output
    res = CliRunner().invoke(main, ["eval", str(tiny_zoo / "tiny"), "--suite", "fast", "--out", str(out)])
    assert res.exit_code == 2 and "--out applies to zoo:NAME only" in res.output
    res = CliRunner().invoke(main, ["eval", "zoo:nope"])
    assert res.exit_code == 2 and res.output.startswith("error: no zoo entry 'nope'")


def test_zoo_list_and_the_leaderboard_show_the_cards(tiny_zoo, tmp_path):
    res = CliRunner().invoke(main, ["zoo", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["name", "dataset", "network", "training", "threat", "clean", "robust", "provenance"]
    assert lines[1].split()[:5] == ["tiny", "mnist-mini", "small-cnn", "pgd", "linf"] and "not evaluated" in lines[1]
    assert "pgd + softmax" in lines[2]

    x, y = ro.data.load("mnist-mini", split="test")
    ev = ro.evaluate(ro.zoo.load("tiny"), (x[:20], y[:20]), [ro.attacks.PGD(ro.Linf(0.3), steps=5, step_size=0.1)])
    card = robustbench_card(ev, name="tiny", dataset="mnist-mini", architecture="small-cnn")
    (tiny_zoo / "tiny" / "robustbench.json").write_text(json.dumps(card))
    item = zoo.entry("tiny")
    assert item.clean_accuracy == ev.clean_accuracy and item.robust_accuracy == ev.robust_accuracy
    res = CliRunner().invoke(main, ["zoo", "list"])
    row = res.output.splitlines()[1]
    assert f"{100 * ev.clean_accuracy:.1f}%" in row and f"{100 * ev.robust_accuracy:.1f}%" in row
    assert "on 20 test images" in row

    board = CliRunner().invoke(main, ["zoo", "list", "--markdown"]).output
    assert "## mnist-mini, linf eps = 0.3" in board
    rows = [line for line in board.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows[0].startswith("| 1 | tiny | small-cnn | pgd |") and "| 20 |" in rows[0]
    assert rows[1].startswith("| 2 | tiny-softmax |") and "not evaluated" in rows[1]


def test_the_zoo_audit_expects_a_flag_on_each_masked_entry_only(tiny_zoo):
    from bench_package import bench_script

    zoo_audit = bench_script("zoo_audit")
    soft = zoo_audit.audit_entry("tiny-softmax", probe=50, root=None, seed=0)
    assert soft["masked"] and "probability-output" in soft["errors"] and soft["ok"]
    honest = zoo_audit.audit_entry("tiny", probe=50, root=None, seed=0)
    assert not honest["masked"] and honest["ok"] == (honest["errors"] == [])
    from bench.harness import header

    md = zoo_audit.markdown({**header("zoo audit"), "probe": 50, "rows": [soft, honest]})
    assert "| tiny-softmax | yes | probability-output |" in md
