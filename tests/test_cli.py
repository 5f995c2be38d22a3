"""Command line and run folders: smoke tests on the shipped mnist-mini data, tiny budgets.

A wrong request exits with code 2 and one line ``error: ...``, no traceback, and leaves the files as they
were; `train` states its plan before it starts and a summary at the end; `models list` and `data list` say
what exists and where.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import click
import torch
import numpy as np
import pytest
from click.testing import CliRunner

import robustopt as ro
from robustopt import checkpoint
from robustopt.cli import main, parse_eps
from robustopt.cli.train import train
from robustopt.experiments import DEMO, REPRODUCE, ExperimentPreset, run_madry_experiment
from robustopt.training import METHODS, TrainConfig
from tiny_problem import TINY_TRAIN

TINY = ["--data", "mnist-mini", "--model", "small-cnn", "--train-size", "300", "--epochs", "1",
        "--steps", "2", "--step-size", "0.1", "--batch-size", "100", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs: a (PGD) and nat (natural)."""
    root = tmp_path_factory.mktemp("runs")
    runner = CliRunner()
    for name, method in (("a", "pgd"), ("nat", "natural")):
        res = runner.invoke(main, ["train", *TINY, "--method", method, "--out", str(root / name)])
        assert res.exit_code == 0, res.output
    return root


def test_parse_eps():
    assert parse_eps("0.3") == 0.3
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    with pytest.raises(click.BadParameter):
        parse_eps("abc")
    with pytest.raises(click.BadParameter):
        parse_eps("-0.1")


def test_train_writes_a_run(runs):
    a = runs / "a"
    assert (a / "run.json").is_file() and (a / "model.safetensors").is_file() and (a / "model.json").is_file()
    info = json.loads((a / "run.json").read_text())
    assert info["data"] == "mnist-mini" and info["model"] == "small-cnn" and info["method"] == "pgd"
    log = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and 0 <= log[0]["val_robust_acc"] <= log[0]["val_clean_acc"] <= 1


def test_train_passes_sgd_momentum_and_weight_decay(tmp_path):
    out = tmp_path / "sgd"
    res = CliRunner().invoke(main, ["train", *TINY, "--method", "natural", "--optimizer", "sgd", "--momentum", "0.5",
                                    "--weight-decay", "5e-4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"] == "sgd" and config["momentum"] == 0.5 and config["weight_decay"] == 5e-4
    bad = CliRunner().invoke(main, ["train", *TINY, "--weight-decay", "-1", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "weight_decay must be >= 0" in bad.output


def test_train_refuses_to_overwrite(runs):
    res = CliRunner().invoke(main, ["train", *TINY, "--method", "pgd", "--out", str(runs / "a")])
    assert res.exit_code == 2 and "add --resume" in res.output and "choose another --out" in res.output
    assert res.output.count("\n") == 1 and "plan:" not in res.output  # refused before the plan is printed


def test_train_resume_needs_a_run_to_continue(tmp_path):
    out = tmp_path / "mistyped"
    res = CliRunner().invoke(main, ["train", *TINY, "--out", str(out), "--resume"])
    assert res.exit_code == 2 and res.output.startswith(f"error: --resume: {out} holds no training to continue")
    assert res.output.count("\n") == 1 and not out.exists()  # nothing written
    out.mkdir()  # an existing folder that holds no training is no run either
    res = CliRunner().invoke(main, ["train", *TINY, "--out", str(out), "--resume"])
    assert res.exit_code == 2 and "holds no training to continue" in res.output and not any(out.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--train-size", "5001"], "train_size (--train-size) 5,001 exceeds the 5,000 training images of mnist-mini"),
    (["--amp"], "--amp (amp=True) needs a CUDA device"),
])
def test_train_refuses_before_its_plan(tmp_path, args, message):
    if "--amp" in args and torch.cuda.is_available():
        pytest.skip("CUDA is here")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["train", *TINY, "--out", str(out), *args])
    assert res.exit_code == 2 and res.output.startswith(f"error: {message}") and res.output.count("\n") == 1
    assert not out.exists()


def test_train_out_must_not_be_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["train", *TINY, "--out", ""])  # e.g. --out "$UNSET"
    assert res.exit_code == 2 and "'--out': is empty" in res.output and not any(tmp_path.iterdir())


@pytest.mark.parametrize("world_size, message", [
    ("2", "WORLD_SIZE=2 is set but"),  # left in the environment by an earlier torchrun
    ("two", "WORLD_SIZE='two' is not a whole number"),
])
def test_a_stray_world_size_is_one_line(monkeypatch, world_size, message):
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", world_size)
    res = CliRunner().invoke(main, ["data", "list"])
    assert res.exit_code == 2 and res.output.startswith(f"error: {message}") and res.output.count("\n") == 1


def test_train_resume_of_a_damaged_checkpoint_is_refused_before_its_plan(runs, tmp_path):
    import shutil

    out = tmp_path / "a"
    shutil.copytree(runs / "a", out)
    (out / "model.optim.pt").unlink()
    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", "2", "--out", str(out), "--resume"])
    assert res.exit_code == 2 and res.output == f"error: checkpoint file {out / 'model.optim.pt'} is missing\n"


def test_an_unusable_progress_file_is_named_in_cli_terms(runs):
    progress = runs / "a" / "eval-fast.progress.json"
    progress.write_text("{broken")
    try:
        res = CliRunner().invoke(main, ["eval", str(runs / "a"), "--suite", "fast", "--n", "10"])
    finally:
        progress.unlink()
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "--restart" in res.output and "progress_file" not in res.output


@pytest.mark.parametrize("device", ["xpu", "meta", "vulkan", "cuda:64"])
@pytest.mark.parametrize("command", ["train", "eval", "eval-model", "sweep", "reproduce"])
def test_a_device_this_machine_lacks_is_one_line(runs, tmp_path, command, device):
    out = tmp_path / "out"
    args = {"train": ["train", *TINY, "--out", str(out)],
            "eval": ["eval", str(runs / "a"), "--n", "10"],
            "eval-model": ["eval", "--model", "small-cnn", "--data", "mnist-mini", "--suite", "fast", "--n", "5",
                           "--eps", "0.1", "--out", str(out)],
            "sweep": ["sweep", str(runs / "a"), "--n", "10", "--eps", "0,0.1"],
            "reproduce": ["reproduce", "madry-mnist", "--out", str(out)]}[command]
    res = CliRunner().invoke(main, [*args, "--device", device])
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: device '{device}'") and res.output.count("\n") == 1, res.output
    assert not out.exists()


def test_eval_prints_table_and_writes_files(runs):
    res = CliRunner().invoke(main, ["eval", str(runs / "a"), "--source", f"A_nat={runs / 'nat'}", "--n", "40",
                                    "--max-restarts", "1", "--batch-size", "40"])
    assert res.exit_code == 0, res.output
    assert "Method" in res.output and "A_nat" in res.output and "Worst case" in res.output
    ev = json.loads((runs / "a" / "eval-madry.json").read_text())
    assert ev["n"] == 40 and len(ev["rows"]) == 1 + 6 + 3  # 40x1 and 100x1 rows are not repeated
    assert (runs / "a" / "eval-madry.md").read_text().startswith("| Method")


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "{a}", "--source", "nonsense"], "NAME=RUN"),
        (["eval", "{a}", "--suite", "imagenet"], "invalid value"),
        (["eval", "{a}", "--eps", "x/255"], "not a number"),
        (["eval", "{root}"], "not a finished robustopt run"),
        (["train", "--data", "nope", "--out", "{root}/z"], "unknown dataset"),
        (["train", "--data", "mnist-mini", "--model", "resnet9000", "--out", "{root}/z"], "unknown model"),
        (["train", "--data", "mnist-mini", "--eps", "-1", "--out", "{root}/z"], "eps"),
    ],
)
def test_bad_input_gets_a_clear_error(runs, args, message):
    args = [s.format(a=runs / "a", root=runs) for s in args]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    assert message.lower() in res.output.lower()
    assert "Traceback" not in res.output


def test_data_list():
    res = CliRunner().invoke(main, ["data", "list"])
    assert res.exit_code == 0 and "mnist-mini" in res.output and "shipped" in res.output


def test_data_list_says_damaged_for_fake_files(tmp_path):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / "mnist").mkdir(exist_ok=True)
        (tmp_path / "mnist" / name).write_bytes(bytes(1000))  # 1,000 bytes: no official MNIST file
    res = CliRunner().invoke(main, ["data", "list", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    line = next(line for line in res.output.splitlines() if line.startswith("mnist "))
    assert line.split()[1] == "damaged" and "robustopt data fetch mnist names the bad file" in line


@pytest.mark.slow
def test_madry_experiment_has_rows_for_all_sources(tmp_path):
    preset = ExperimentPreset(model_a="small-cnn", model_b="tramer-b", epochs_natural=1, train_size=300,
                              eval_size=30, max_restarts=1, train=TrainConfig(eps=0.3, epochs=1, attack_steps=2,
                                                                              attack_step_size=0.15, batch_size=100,
                                                                              lr=1e-3))
    lines: list[str] = []
    ev = run_madry_experiment(preset, out=tmp_path, echo=lines.append, progress=False)
    assert {r.source for r in ev.rows} == {"", "A", "A'", "B", "A_nat"}
    assert (tmp_path / "table.md").is_file() and (tmp_path / "table.json").is_file()
    assert any("Paper" in line for line in lines)
    # a second call reuses the trained models
    lines.clear()
    run_madry_experiment(preset, out=tmp_path, echo=lines.append, progress=False)
    assert sum("reusing" in line for line in lines) == 4


@pytest.mark.slow
def test_reproduce_pipeline_writes_table_standard_sweeps_and_report(tmp_path):
    preset = ExperimentPreset(model_a="small-cnn", model_b=None, epochs_natural=1, train_size=200,
                              train=TrainConfig(eps=0.3, epochs=1, attack_steps=2, attack_step_size=0.15,
                                                batch_size=100, lr=1e-3),
                              eval_size=20, max_restarts=1, standard="fast", standard_size=20,
                              sweeps=((ro.Linf, (0.0, 0.1, 0.3)),), sweep_size=20, sweep_steps=3, report=True)
    lines: list[str] = []
    ev = run_madry_experiment(preset, out=tmp_path, echo=lines.append, progress=False)
    assert {r.source for r in ev.rows} == {"", "A", "A'", "A_nat"}  # no model B
    assert not (tmp_path / "B").exists()
    for path in ("A/eval-madry.json", "A/eval-fast.json", "A/sweep-linf.json", "report.md", "report.html",
                 "experiment.json"):
        assert (tmp_path / path).is_file(), path
    seconds = json.loads((tmp_path / "experiment.json").read_text())["seconds"]
    assert {"train A", "eval madry", "eval fast", "sweep linf", "report", "total"} <= set(seconds)
    assert "sweep-linf" in (tmp_path / "report.md").read_text()
    # Run again: the trained models are reused and their logged training time still counts in the total.
    run_madry_experiment(preset, out=tmp_path, echo=lines.append, progress=False)
    summary = json.loads((tmp_path / "experiment.json").read_text())
    assert summary["preset"]["sweeps"] == [["linf", [0.0, 0.1, 0.3]]]  # the norm by name, as before it was a class
    seconds = summary["seconds"]
    assert summary["reused"] == ["A", "A'", "A_nat"] and seconds["train A"] > 0
    assert seconds["total"] == pytest.approx(seconds["this call"] + sum(seconds[f"train {k}"] for k in summary["reused"]))


def test_reproduce_rejects_unknown_experiment_and_budget(tmp_path):
    res = CliRunner().invoke(main, ["reproduce", "madry-imagenet"])
    assert res.exit_code != 0 and "madry-mnist" in res.output
    res = CliRunner().invoke(main, ["reproduce", "madry-cifar10", "--budget", "demo", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no budget 'demo'" in res.output and "paper" in res.output
    assert "Traceback" not in res.output


def test_reproduce_presets_are_consistent():
    for name, budgets in REPRODUCE.items():
        for budget, preset in budgets.items():
            assert preset.data in ro.data.names(), (name, budget)
            for model in (preset.model_a, preset.model_b):
                assert model is None or model in ro.models.names(), (name, budget, model)
            assert preset.standard is None or preset.standard in ro.suites.names(), (name, budget)
            recipes = preset.recipes(seed=3)
            assert recipes["A"][1] == dataclasses.replace(preset.train, seed=3) and recipes["A'"][1].seed == 4
            assert recipes["A_nat"][1].method == "natural" and recipes["A_nat"][1].epochs == preset.epochs_natural
    assert REPRODUCE["madry-mnist"]["demo"].data == "mnist-mini"  # offline
    with pytest.raises(ValueError, match="did you mean 'fast'"):
        dataclasses.replace(REPRODUCE["madry-mnist"]["demo"], standard="fats")


def test_eval_standard_suite_runs_as_cascade(runs):
    res = CliRunner().invoke(main, ["eval", str(runs / "a"), "--suite", "fast", "--n", "20", "--batch-size", "20"])
    assert res.exit_code == 0, res.output
    assert "APGD-CE" in res.output and "APGD-T" in res.output and "mode=cascade" in res.output
    assert (runs / "a" / "eval-fast.json").is_file()


def test_a_registered_suite_is_evaluated_with_its_mode(runs):
    from robustopt.experiments import eval_run

    @ro.suites.register_suite("test-pgd", mode="independent", summary="PGD 3 steps")
    def pgd3(request):
        return [ro.attacks.PGD(request.threat, steps=3, seed=request.seed)]

    try:
        ev = eval_run(runs / "a", suite="test-pgd", limit=10, echo=lambda s: None, progress=False)
    finally:
        ro.suites.SUITES.unregister("test-pgd")
    assert [r.name for r in ev.rows] == ["Natural", "PGD"] and ev.meta["request"]["mode"] == "independent"
    assert (runs / "a" / "eval-test-pgd.json").is_file()
    res = CliRunner().invoke(main, ["eval", str(runs / "a"), "--suite", "madri"])
    assert res.exit_code == 2 and "madry" in res.output


def test_sweep_writes_curve(runs):
    res = CliRunner().invoke(main, ["sweep", str(runs / "a"), "--eps", "0:0.3:0.1", "--steps", "3", "--n", "30"])
    assert res.exit_code == 0, res.output
    curve = json.loads((runs / "a" / "sweep-linf.json").read_text())
    assert curve["eps"] == [0.0, 0.1, 0.2, 0.3]
    acc = curve["accuracy"]
    assert all(a >= b for a, b in zip(acc, acc[1:]))
    # --independent: every eps from scratch (the cascade is its running minimum), in files of their own
    res = CliRunner().invoke(main, ["sweep", str(runs / "a"), "--eps", "0:0.3:0.1", "--steps", "3", "--n", "30",
                                    "--independent"])
    assert res.exit_code == 0, res.output
    indep = json.loads((runs / "a" / "sweep-linf-independent.json").read_text())
    assert indep["mode"] == "independent" and curve["mode"] == "cascade"
    assert all(i >= c for i, c in zip(indep["accuracy"], acc)) and indep["accuracy"][0] == acc[0]
    assert sum(indep["grad_evals"]) >= sum(curve["grad_evals"])
    assert json.loads((runs / "a" / "sweep-linf.json").read_text()) == curve  # the cascade's file is untouched


def test_parse_eps_grid():
    from robustopt.cli.sweep import parse_eps_grid

    assert parse_eps_grid("0:0.5:0.25") == [0.0, 0.25, 0.5]
    assert parse_eps_grid("0,8/255") == [0.0, pytest.approx(8 / 255)]
    with pytest.raises(click.BadParameter):
        parse_eps_grid("0:1")


def test_same_seed_same_weights(tmp_path):
    from robustopt import checkpoint
    from robustopt.experiments import train_run

    kw = dict(data="mnist-mini", model="small-cnn", method="natural", epochs=1, train_size=100, batch_size=50,
              progress=False)
    weights = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_run(tmp_path / name, seed=seed, **kw)
        model, _ = checkpoint.load(tmp_path / name / "model")
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_eval_and_sweep_of_the_best_epoch(runs, tmp_path):
    # without early stopping there is no best.*: a clear error, exit code 2
    res = CliRunner().invoke(main, ["eval", str(runs / "a"), "--weights", "best", "--n", "20"])
    assert res.exit_code == 2 and "--early-stopping-patience" in res.output
    out = tmp_path / "es"
    i = TINY.index("--epochs")
    args = TINY[: i + 1] + ["2"] + TINY[i + 2:]
    res = CliRunner().invoke(main, ["train", *args, "--method", "pgd", "--early-stopping-patience", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "best.json").is_file()
    for cmd in (["eval", str(out), "--suite", "fast", "--n", "20"], ["sweep", str(out), "--eps", "0,0.1", "--steps", "2", "--n", "20"]):
        res = CliRunner().invoke(main, cmd + ["--weights", "best"])
        assert res.exit_code == 0, res.output
    ev = json.loads((out / "eval-fast-best.json").read_text())
    assert ev["meta"]["weights"] == "best" and not (out / "eval-fast.json").exists()
    assert json.loads((out / "sweep-linf-best.json").read_text())["eps"] == [0.0, 0.1]


# --- your own model and data: eval --model SPEC --data SPEC --out DIR, then report, sweep and card ---------------


def _own_setup(tmp_path):
    """A PNG folder, an .npz, a model file with trained-looking weights, and its two archives."""
    from own_data import archives, image_folder, make_model, model_file, npz_file

    image_folder(tmp_path / "imgs", per_class=2)
    npz_file(tmp_path / "arrays.npz", n=8)
    model_file(tmp_path)
    torch.save(make_model().state_dict(), tmp_path / "net.pt")
    archives(tmp_path, make_model())
    return tmp_path


@pytest.mark.parametrize("model, data", [
    ("{d}/net.py:make --weights {d}/net.pt --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25", "folder:{d}/imgs"),
    ("torchscript:{d}/net.ts", "npz:{d}/arrays.npz"),
    ("export:{d}/net.pt2", "folder:{d}/imgs"),
])
def test_eval_of_your_model_then_report_and_card(tmp_path, model, data):
    pytest.importorskip("PIL")
    d = _own_setup(tmp_path)
    out = d / "run"
    args = ["eval", "--model", *model.format(d=d).split(), "--data", data.format(d=d), "--eps", "8/255",
            "--suite", "fast", "--n", "6", "--batch-size", "4", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    info = json.loads((out / "run.json").read_text())
    assert info["model_spec"]["spec"] == model.format(d=d).split()[0] and info["data"].startswith(data[:4])
    assert "sha256" in info["model_spec"] or "weights_sha256" in info["model_spec"]
    rows = (out / "eval-fast-examples.csv").read_text().splitlines()
    assert rows[0] == "index,file,label,correct,robust" and len(rows) == 7
    if data.startswith("folder"):
        assert rows[1].split(",")[1] == str(d / "imgs" / "ant" / "0.png")
    ev = ro.Evaluation.from_json(out / "eval-fast.json")
    model_back, _ = ro.load_run(out)
    x = ro.data.formats.first(ro.data.load(info["data"]), 6)[0]
    assert torch.equal(model_back(x).argmax(1) == torch.tensor([int(r.split(",")[2]) for r in rows[1:]]), ev.correct)
    report = CliRunner().invoke(main, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert (out / "report.html").is_file()
    card = CliRunner().invoke(main, ["card", str(out), "--eval", str(out / "eval-fast.json")])
    assert card.exit_code == 0, card.output
    assert json.loads((out / "robustbench.json").read_text())["robustopt"]["n"] == 6


def test_sweep_and_a_second_suite_on_a_model_run(tmp_path):
    pytest.importorskip("PIL")
    d = _own_setup(tmp_path)
    out = d / "run"
    common = ["--model", f"{d}/net.py:make", "--data", f"folder:{d}/imgs", "--eps", "8/255", "--out", str(out)]
    assert CliRunner().invoke(main, ["eval", *common, "--suite", "fast", "--n", "4"]).exit_code == 0
    res = CliRunner().invoke(main, ["eval", *common, "--suite", "madry", "--n", "4", "--max-restarts", "1"])
    assert res.exit_code == 0, res.output  # the same model and data: the run folder is reused
    res = CliRunner().invoke(main, ["sweep", str(out), "--eps", "0,4/255", "--steps", "2", "--n", "4"])
    assert res.exit_code == 0, res.output
    assert (out / "sweep-linf.json").is_file()
    other = CliRunner().invoke(main, ["eval", *common[:1], f"torchscript:{d}/net.ts", *common[2:]])
    assert other.exit_code == 2 and "holds another run" in other.output


def test_registry_model_on_a_registry_dataset(tmp_path):
    res = CliRunner().invoke(main, ["eval", "--model", "small-cnn", "--data", "mnist-mini", "--eps", "0.1", "--n", "4",
                                    "--suite", "fast", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / "run.json").read_text())["data"] == "mnist-mini"


def _bad_folder(d, kind):
    from PIL import Image

    if kind == "empty class":
        (d / "imgs" / "eel").mkdir()
    elif kind == "corrupt":
        (d / "imgs" / "bee" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    elif kind == "other size":
        Image.new("RGB", (5, 5)).save(d / "imgs" / "dog" / "9.png")


@pytest.mark.parametrize("case, changes, message", [
    ("missing folder", {"--data": "folder:{d}/nowhere"}, "no folder .*nowhere"),
    ("empty class", {}, r"class folder .*eel holds no \.png"),
    ("corrupt", {}, r"cannot read image .*bee/9\.png.*--skip-bad"),
    ("other size", {}, r"9\.png is 5x5.*--image-size"),
    ("factory raises", {"--model": "{d}/net.py:broken"}, "net.py:broken raised RuntimeError: needs a GPU"),
    ("malicious pickle", {"--weights": "{d}/evil.pt"}, "could run code: refused"),
    ("shapes", {"--image-size": "4", "--model": "{d}/lin.py:make"}, r"fails on images .* of shape \(3, 4, 4\)"),
    ("no eps", {"--eps": None}, "--model needs --eps"),
    ("data without model", {"--model": None, "RUN": "{d}"}, "--data goes with --model"),
])
def test_bad_input_to_eval_model_is_one_line(tmp_path, case, changes, message):
    pytest.importorskip("PIL")
    from own_data import malicious_pt

    d = _own_setup(tmp_path)
    _bad_folder(d, case)
    malicious_pt(d / "evil.pt", d / "ran")
    (d / "lin.py").write_text("from torch import nn\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(192, 4))\n")
    opts = {"RUN": None, "--model": "{d}/net.py:make", "--data": "folder:{d}/imgs", "--eps": "8/255",
            "--out": "{d}/run", "--suite": "fast", **changes}
    args = ["eval"] + [t.format(d=d) for k, v in opts.items() if v is not None for t in ((v,) if k == "RUN" else (k, v))]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and re.search(message, line), res.output
    assert not (d / "ran").exists()


def test_skip_bad_leaves_corrupt_images_out_and_counts_them(tmp_path):
    pytest.importorskip("PIL")
    d = _own_setup(tmp_path)
    _bad_folder(d, "corrupt")
    res = CliRunner().invoke(main, ["eval", "--model", f"{d}/net.py:make", "--data", f"folder:{d}/imgs", "--skip-bad",
                                    "--eps", "8/255", "--suite", "fast", "--out", str(d / "run")])
    assert res.exit_code == 0, res.output
    assert "skipped 1 unreadable image" in res.output and "bee/9.png" in res.output
    info = json.loads((d / "run" / "run.json").read_text())
    assert info["data_options"] == {"skip_bad": True} and info["test_size"] == 8
    assert CliRunner().invoke(main, ["report", str(d / "run")]).exit_code == 0  # the same images again


def _gray_folder(root, per_class: int, seed: int, classes=("ant", "bee", "cat")):
    """ROOT/CLASS/i.png: random grayscale 28x28 images (the input of the MNIST models)."""
    from PIL import Image

    g = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_train_on_your_folder_then_eval_and_report_on_its_test_folder(tmp_path, monkeypatch):
    train_dir, test_dir = _gray_folder(tmp_path / "train", 20, 0), _gray_folder(tmp_path / "val", 3, 1)
    monkeypatch.chdir(tmp_path)  # relative SPECs are recorded as absolute paths
    common = ["train", "--data", "folder:train", "--model", "small-cnn", "--method", "pgd", "--eps", "0.1",
              "--steps", "2", "--epochs", "1", "--batch-size", "16"]
    res = CliRunner().invoke(main, [*common, "--out", "run"])
    assert res.exit_code == 2 and "needs --test-data SPEC" in res.output and not (tmp_path / "run").exists()
    res = CliRunner().invoke(main, [*common, "--test-data", "folder:val", "--train-size", "50", "--out", "run"])
    assert res.exit_code == 0, res.output
    assert "of 45 images" in res.output  # 50 of the 60, 5 held out for validation
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["data"] == f"folder:{train_dir}" and info["test_data"] == f"folder:{test_dir}"
    res = CliRunner().invoke(main, ["eval", str(tmp_path / "run"), "--suite", "fast"])
    assert res.exit_code == 0, res.output
    assert "9 examples" in res.output  # the test folder, not the training one
    assert CliRunner().invoke(main, ["report", str(tmp_path / "run")]).exit_code == 0


@pytest.mark.parametrize("extra, message", [
    (["--test-data", "mnist"], "must be a folder: or npz: SPEC"),
    (["--test-data", "folder:other"], "do not match the training images"),
])
def test_train_on_your_folder_refuses_a_test_set_that_does_not_fit(tmp_path, extra, message):
    _gray_folder(tmp_path / "train", 2, 0)
    _gray_folder(tmp_path / "other", 2, 1, classes=("ant", "bee"))
    res = CliRunner().invoke(main, ["train", "--data", f"folder:{tmp_path / 'train'}", "--model", "small-cnn",
                                    *[e.replace("folder:other", f"folder:{tmp_path / 'other'}") for e in extra],
                                    "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and message in res.output and not (tmp_path / "run").exists()
    res = CliRunner().invoke(main, ["train", "--data", "mnist-mini", "--test-data", "npz:x.npz",
                                    "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "apply to folder: and npz: data only" in res.output


# --- eval and sweep: requests that cannot mean what they say ------------------------------------------
def test_parse_eps_grid_holds_the_values_up_to_stop():
    from robustopt.cli.sweep import parse_eps_grid

    assert parse_eps_grid("0:0.5:0.3") == [0.0, 0.3]  # never beyond STOP
    assert parse_eps_grid("0:1:0.6") == [0.0, 0.6]
    assert parse_eps_grid("0:0.3:0.1") == [0.0, 0.1, 0.2, 0.3]  # STOP on the grid, up to rounding
    assert parse_eps_grid("0:1:1/3")[-1] == 1.0 and len(parse_eps_grid("0:0.5:0.05")) == 11


@pytest.mark.parametrize("grid, part", [("0:0.3:-0.1", "STEP"), ("0:x:0.1", "STOP"), ("0:0.3:0", "STEP > 0")])
def test_sweep_grid_errors_name_eps_and_the_part(runs, grid, part):
    res = CliRunner().invoke(main, ["sweep", str(runs / "a"), "--eps", grid, "--n", "5"])
    assert res.exit_code == 2 and "'--eps'" in res.output and part in res.output
    assert "eps must be >= 0" not in res.output


def test_sweep_writes_no_eps_beyond_stop_and_says_where(runs, tmp_path):
    res = CliRunner().invoke(main, ["sweep", str(runs / "nat"), "--eps", "0:0.5:0.3", "--steps", "2", "--n", "10",
                                    "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads((runs / "nat" / "sweep-linf.json").read_text())["eps"] == [0.0, 0.3]
    assert f"written: {runs / 'nat' / 'sweep-linf.json'}" in res.output


def test_eval_a_source_named_A_runs_and_records_its_transfer_rows(runs):
    res = CliRunner().invoke(main, ["eval", str(runs / "nat"), "--n", "20", "--eps", "0.1", "--max-restarts", "1",
                                    "--batch-size", "20", "--source", f"A={runs / 'a'}", "--overwrite"])
    assert res.exit_code == 0, res.output
    ev = json.loads((runs / "nat" / "eval-madry.json").read_text())
    transfer = [r for r in ev["rows"] if r["attack"].get("type") == "Transfer"]
    assert len(ev["rows"]) == 1 + 6 + 3 and [r["source"] for r in transfer] == ["A"] * 3
    assert list(ev["meta"]["sources"]) == ["A"] and res.output.count("A (transfer)") == 3
    assert f"written: {runs / 'nat' / 'eval-madry.json'}" in res.output


@pytest.mark.parametrize("args, message", [
    (["--source", "B={a}", "--source", "B={nat}"], "--source B is given twice"),
    (["--suite", "fast", "--source", "B={a}"], "--source runs transfer rows only in the madry suite"),
    (["--norm", "l2"], "--norm l2 is not the run's training norm (linf)"),
])
def test_eval_requests_that_cannot_mean_what_they_say_are_refused(runs, args, message):
    args = [s.format(a=runs / "a", nat=runs / "nat") for s in args]
    before = sorted(p.name for p in (runs / "a").iterdir())
    res = CliRunner().invoke(main, ["eval", str(runs / "a"), "--n", "5", *args])
    assert res.exit_code == 2 and res.output.startswith("error: ") and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in (runs / "a").iterdir()) == before  # nothing recorded


def test_eval_and_sweep_of_a_run_json_without_its_threat_are_one_line(runs, tmp_path):
    import shutil

    run = tmp_path / "bare"
    shutil.copytree(runs / "nat", run)
    (run / "run.json").write_text("{}")
    for command in (["eval", str(run), "--n", "5"], ["sweep", str(run), "--n", "5"]):
        res = CliRunner().invoke(main, command)
        assert res.exit_code == 2 and res.output.startswith("error: ") and "has no data, norm, eps" in res.output


# --- a wrong request is one line `error: ...`, exit code 2, no traceback, and leaves the files as they were ---


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    return tiny_run


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime (folders: presence only)."""
    return {str(p.relative_to(root)): (0, 0) if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def refused(args: list[str], message: str, watch: Path) -> str:
    """Run the CLI; assert a one-line error containing ``message``, no traceback, no file touched under ``watch``."""
    before = files(watch)
    res = CliRunner().invoke(main, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message in lines[0], res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    assert files(watch) == before
    return lines[0]



# --- the number of images: --n >= 1; more than the data holds means all of them ---


@pytest.mark.parametrize("command", ["eval", "sweep"])
@pytest.mark.parametrize("n", ["0", "-995"])
def test_n_below_one_is_refused(run, command, n):
    refused([command, str(run), "--n", n], f"must be >= 1 (a number of images), got {n}", run.parent)


def test_n_above_the_data_says_all_are_used(run):
    res = CliRunner().invoke(main, ["sweep", str(run), "--eps", "0", "--n", "5000", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "note: --n 5,000 is more than the 1,000 test images of mnist-mini: all 1,000 are used." in res.output
    assert json.loads((run / "sweep-linf.json").read_text())["n"] == 1000



# --- no weights: zero epochs, or a run whose training saved none ---


def test_train_with_zero_epochs_is_refused_and_leaves_nothing(tmp_path):
    refused(["train", *TINY, "--epochs", "0", "--out", str(tmp_path / "z")], "epochs must be >= 1, got 0", tmp_path)
    assert not (tmp_path / "z").exists()
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        ro.training.TrainConfig(epochs=0)


def test_eval_of_a_run_without_weights_says_why(run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "run.json", bare / "run.json")  # a run whose training ended before saving weights
    line = refused(["eval", str(bare)], "has no trained weights (model.*)", tmp_path)
    assert "--resume" in line and "early-stopping" not in line



# --- eps beyond the input range is refused, beyond the usual range warned about ---


@pytest.mark.parametrize("args, message", [
    (["eval", "{run}", "--eps", "1e9"], "eps=1e+09 (L-inf) exceeds 1"),
    (["eval", "{run}", "--norm", "l2", "--eps", "30"], "exceeds 28"),
    (["sweep", "{run}", "--eps", "0,1e9"], "exceeds 1"),
    (["sweep", "{run}", "--eps", "0:1000:0.0001"], "10,000,001 values; at most 1,000"),
    (["sweep", "{run}", "--eps", ",".join(["0.1"] * 1001)], "1,001 values"),
    (["train", *TINY, "--eps", "8", "--out", "{tmp}/z"], "write e.g. 8/255, not 8"),
])
def test_eps_beyond_the_input_range_is_refused(run, tmp_path, args, message):
    start = time.perf_counter()
    refused([a.format(run=run, tmp=tmp_path) for a in args], message, run.parent)
    assert time.perf_counter() - start < 30  # refused up front, not after building millions of attacks
    assert not (tmp_path / "z").exists()


def test_eps_above_the_usual_range_warns(run):
    res = CliRunner().invoke(main, ["eval", str(run), "--suite", "fast", "--eps", "0.6", "--n", "5",
                                    "--batch-size", "5", "--overwrite"])
    assert res.exit_code == 0, res.output
    warning = [line for line in res.output.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "above 0.5, half the diameter" in warning[0]



# --- a model or transfer source built for other images is named ---


def test_model_for_other_images_is_named(tmp_path):
    line = refused(["train", "--data", "mnist-mini", "--model", "preact-resnet18", "--out", str(tmp_path / "p")],
                   "model preact-resnet18 (built for cifar10) expects 3-channel 32x32 images, but mnist-mini has "
                   "1-channel 28x28 images", tmp_path)
    assert "madry-mnist, small-cnn, tramer-b" in line and "mean" not in line
    assert not (tmp_path / "p").exists()


def test_transfer_source_for_other_images_is_named(run, tmp_path):
    source = tmp_path / "cifar"
    source.mkdir()
    checkpoint.save(source / "model", ro.models.create("resnet9", base_width=4))
    (source / "run.json").write_text(json.dumps({"data": "cifar10", "model": "resnet9", "norm": "linf",
                                                 "eps": 8 / 255, "method": "natural", "seed": 0}))
    refused(["eval", str(run), "--source", f"C={source}", "--n", "5"],
            "transfer source C", run.parent)


# --- train states its plan, ends with a summary and says where to resume ---


def test_train_prints_plan_summary_and_resume_point(tmp_path):
    out = tmp_path / "a"
    res = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--epochs", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    plan = next(line for line in lines if line.startswith("plan: "))
    # 300 images: 30 held out, 270 trained on; PGD-2 costs 3 gradient evaluations per image; validation PGD-10
    assert "pgd training of small-cnn on mnist-mini at Linf(eps=0.3): 1 epoch of 270 images" in plan
    assert "about 1,110 image-gradient evaluations (1 x 270 x 3 for training + 1 x 30 x 10 for validation)" in plan
    assert lines.index(plan) < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/1"))
    assert any(line.startswith(f"saved: {out} (1 epoch, ") for line in lines)
    assert any(re.match(r"final validation accuracy: clean \d+\.\d%, robust \d+\.\d% \(PGD-10 at Linf\(eps=0.3\)\)", line)
               for line in lines)
    assert lines[-1].startswith(f"next: robustopt eval {out}")

    res = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--epochs", "2", "--resume", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"resuming {out} after epoch 1 of 2 (optimizer step 3)." in res.output
    assert "plan: " in res.output and "1 epoch (epochs 2-2) of 270 images" in res.output
    res = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--epochs", "2", "--resume", "--out", str(out)])
    assert "after epoch 2 of 2 (optimizer step 6): nothing left to train." in res.output and "plan: " not in res.output
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.json").write_text("{}")  # a training killed before its first checkpoint
    res = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--epochs", "1", "--method", "natural", "--resume",
                                    "--out", str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    assert f"nothing to resume in {tmp_path / 'new'}: it holds no training checkpoint" in res.output
    assert "natural training of small-cnn on mnist-mini: 1 epoch" in res.output  # no eps for natural training
    progress = [line for line in res.output.splitlines() if line.startswith(("plan: ", "epoch "))]
    assert progress and not any("eps=" in line for line in progress)  # nor in the progress lines


def test_train_help_shows_defaults_and_choices():
    res = CliRunner().invoke(main, ["train", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for name in (*ro.models.names(), *ro.data.names(), *METHODS):
        assert name in text, name
    assert "days on a CPU" in text
    assert "--steps INTEGER Inner PGD steps. [default: 40]" in text and "[default: 0.0001]" in text


def test_train_options_are_the_train_config_fields_with_their_defaults():
    """Every TrainConfig field with help text is an option of `robustopt train` with the field's default and help."""
    options = {param.name: param for param in train.params}
    exposed = [f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]
    assert len(exposed) >= 25
    for f in exposed:
        option = options[f.name]
        assert option.default == f.default, f.name
        assert f.metadata["help"] in option.help, f.name
        assert option.show_default == (f.default is not None), f.name
    flags = {flag for param in train.params for flag in (*param.opts, *param.secondary_opts)}
    assert {"--steps", "--step-size", "--ema", "--label-smoothing", "--guard", "--no-guard", "--amp", "--fold-bn",
            "--checkpoint-every", "--checkpoint-minutes", "--lr-milestones", "--early-stopping-patience"} <= flags
    hidden = {f.name for f in dataclasses.fields(TrainConfig)} - {f.name for f in exposed}
    assert hidden == {"attack_random_start", "val_size", "val_attack_steps", "log_every"}


def test_train_options_left_out_keep_the_presets_fields(tmp_path, monkeypatch):
    """Only the options given on the command line replace a preset's fields; the others keep the preset's."""
    from robustopt import experiments

    seen = {}
    monkeypatch.setattr(experiments, "train_run", lambda out, **kwargs: seen.update(kwargs))
    res = CliRunner().invoke(main, ["train", "--preset", "fast-at-cifar10", "--lr", "0.1", "--no-amp",
                                    "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    recipe = experiments.TRAIN_PRESETS["fast-at-cifar10"]
    assert (seen["data"], seen["model"], seen["config"]) == (recipe.data, recipe.model, recipe.config)
    assert {k: v for k, v in seen.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}} == {
        "lr": 0.1, "amp": False}


def test_budget_line_is_readable():
    for preset in (DEMO, *[p for budgets in REPRODUCE.values() for p in budgets.values()]):
        line = preset.summary()
        assert "ExperimentPreset" not in line and "\n" not in line and preset.model_a in line
    assert DEMO.summary().startswith("A, A' = small-cnn, 6 epochs of pgd (5 x 0.1 at eps 0.3, eps ramped over 3 epochs)")



# --- `models list` and `data list` say what exists and where ---


def test_models_list():
    res = CliRunner().invoke(main, ["models", "list"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines()[1:] if line.split()[0] in ro.models.names()}
    assert set(rows) == set(ro.models.names())
    small = rows["small-cnn"]
    assert small[1] == f"{ro.models.count_parameters(ro.models.create('small-cnn')):,}"
    assert small[2:4] == ["1x28x28", "mnist"] and rows["wrn-34-10"][2:4] == ["3x32x32", "cifar10"]


def test_data_list_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTOPT_DATA", str(tmp_path))
    res = CliRunner().invoke(main, ["data", "list"])
    assert res.exit_code == 0, res.output
    assert f"data root: {tmp_path} ($ROBUSTOPT_DATA)" in res.output
    assert f"looked in {tmp_path / 'cifar10'} (robustopt data fetch cifar10)" in res.output
    assert re.search(r"mnist-mini\s+shipped\s+inside the package", res.output)
    res = CliRunner().invoke(main, ["data", "list", "--root", str(tmp_path / "r")])
    assert f"data root: {tmp_path / 'r'} (--root)" in res.output



# --- output that reads well in a log ---


def test_piped_train_output_has_no_carriage_returns(tmp_path):
    res = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--epochs", "1", "--method", "natural",
                                    "--out", str(tmp_path / "n")])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output and "epoch 1/1: 3/3 steps in" in res.output
