"""A CLI people enjoy (issue 16, items 10-12): train states its plan and ends with a summary,
`models list` / `data list` say what exists and where, and output reads well in a log file."""

from __future__ import annotations

import dataclasses
import re

import pytest
from click.testing import CliRunner

import robustopt as ro
from robustopt import _progress
from robustopt._progress import PlainProgress, progress_bar
from robustopt.cli import main, train
from robustopt.experiments import DEMO, REPRODUCE
from robustopt.training import METHODS, TrainConfig
from robustopt.training.methods import grad_evals_per_example
from tiny_problem import TINY_TRAIN as TINY, mlp, separable


# --- item 10: train states what it will do -------------------------------------------------------


def test_train_prints_plan_summary_and_resume_point(tmp_path):
    out = tmp_path / "a"
    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", "1", "--out", str(out)])
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

    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", "2", "--resume", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"resuming {out} after epoch 1 of 2 (optimizer step 3)." in res.output
    assert "plan: " in res.output and "1 epoch (epochs 2-2) of 270 images" in res.output
    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", "2", "--resume", "--out", str(out)])
    assert "after epoch 2 of 2 (optimizer step 6): nothing left to train." in res.output and "plan: " not in res.output
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.json").write_text("{}")  # a training killed before its first checkpoint
    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", "1", "--method", "natural", "--resume",
                                    "--out", str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    assert f"nothing to resume in {tmp_path / 'new'}: it holds no training checkpoint" in res.output
    assert "natural training of small-cnn on mnist-mini: 1 epoch" in res.output  # no eps for natural training
    progress = [line for line in res.output.splitlines() if line.startswith(("plan: ", "epoch "))]
    assert progress and not any("eps=" in line for line in progress)  # nor in the progress lines


def test_registered_costs_are_what_training_spends():
    x, y = separable(120)
    for method in METHODS:
        cfg = TrainConfig(method=method, epochs=1, batch_size=25, attack_steps=3, attack_step_size=0.05, eps=0.1,
                          val_size=20, lr=1e-2, replay=2)
        spent = ro.training.fit(mlp(), (x, y), config=cfg, progress=False).history[-1]["grad_evals"]
        assert spent == 100 * grad_evals_per_example(method, cfg), method


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


# --- item 11: what exists and where --------------------------------------------------------------


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


# --- item 12: output that reads well in a log ----------------------------------------------------


def test_plain_progress_prints_lines_not_bars(capsys):
    bar = PlainProgress(4, "epoch 1/2", "step", every=0.0)
    for _ in range(4):
        bar.set_postfix(loss="0.5")
        bar.update()
    bar.close()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == [f"epoch 1/2: {k}/4 steps ({25 * k}%), 0 s, loss=0.5" for k in (1, 2, 3)]
    assert lines[3] == "epoch 1/2: 4/4 steps in 0 s, loss=0.5" and len(lines) == 4


@pytest.mark.parametrize("style, kind", [("plain", PlainProgress), ("off", None), ("bar", None)])
def test_progress_style_follows_the_environment(monkeypatch, style, kind):
    monkeypatch.setenv("ROBUSTOPT_PROGRESS", style)
    bar = progress_bar(3, "x", "step")
    assert isinstance(bar, PlainProgress) == (kind is PlainProgress)
    assert getattr(bar, "disable", False) == (style == "off")
    bar.close()
    assert isinstance(progress_bar(3, "x", "step", enabled=False), PlainProgress) is False


def test_eval_progress_counts_images(capsys, monkeypatch, trained_cnn):
    monkeypatch.setenv("ROBUSTOPT_PROGRESS", "plain")
    model, x, y = trained_cnn
    t = ro.Linf(0.1)
    ev = ro.evaluate(model, (x[:50], y[:50]), [ro.attacks.FGSM(t), ro.attacks.PGD(t, steps=3)], batch_size=20)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    for line, row in zip(lines, ev.rows[1:]):
        assert re.fullmatch(rf"{row.name} \(A\): {row.attacked}/{row.attacked} images in \d+ s", line), line


def test_piped_train_output_has_no_carriage_returns(tmp_path):
    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", "1", "--method", "natural", "--out", str(tmp_path / "n")])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output and "epoch 1/1: 3/3 steps in" in res.output


def test_budget_line_is_readable():
    for preset in (DEMO, *[p for budgets in REPRODUCE.values() for p in budgets.values()]):
        line = preset.summary()
        assert "ExperimentPreset" not in line and "\n" not in line and preset.model_a in line
    assert DEMO.summary().startswith("A, A' = small-cnn, 6 epochs of pgd (5 x 0.1 at eps 0.3, eps ramped over 3 epochs)")


def test_natural_training_bar_shows_no_eps(capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTOPT_PROGRESS", "plain")
    monkeypatch.setattr(_progress, "PLAIN_EVERY", 0.0)  # a line at every step
    x, y = separable(120)
    for method, shows_eps in (("natural", False), ("pgd", True)):
        ro.training.fit(mlp(), (x, y), method=method, epochs=1, batch_size=25, attack_steps=2, eps=0.1, val_size=20,
                        log_every=1, progress=True)
        err = capsys.readouterr().err
        assert ("eps=" in err) == shows_eps, err


def test_seconds_format():
    from robustopt._progress import format_seconds

    assert [format_seconds(s) for s in (4.4, 65, 7322)] == ["4 s", "1 min 5 s", "2 h 2 min"]
