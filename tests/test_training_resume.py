"""Mid-epoch checkpoints of robustopt.training.fit: resuming inside an epoch is bit-identical.

In-process tests interrupt ``fit`` with an exception at chosen batches (every method and
the state that matters: dropout, augmentation, Free's perturbation, the guard, early
stopping, LR schedules); the slow test SIGKILLs a real `robustopt train` at random times.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robustopt import checkpoint
from robustopt._io import sha256_file
from robustopt.cli import main
from robustopt.training import TrainConfig, fit
from tiny_problem import separable

loop_module = importlib.import_module("robustopt.training.loop")  # the module of fit()
REAL_GET_METHOD = loop_module.get_method


class Interrupted(Exception):
    """Stands for a crash in the middle of an epoch."""


def net(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(36, 16), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(16, 2))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def log(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / "log.jsonl").read_text().splitlines()]


def interrupt_at(monkeypatch: pytest.MonkeyPatch, batch: int | None) -> None:
    """Make the next ``fit`` raise Interrupted when its method is called for the ``batch``-th time (0-based)."""
    def get_method(name: str):
        method, calls = REAL_GET_METHOD(name), itertools.count()

        def interrupted(ctx, x, y):
            if batch is not None and next(calls) == batch:
                raise Interrupted
            return method.fn(ctx, x, y)

        return dataclasses.replace(method, fn=interrupted)

    monkeypatch.setattr(loop_module, "get_method", get_method)


DATA = separable(150)  # 120 training examples, 30 held out


def run_with_interruptions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuts: list[int], dropout: float = 0.0,
                           **kw) -> None:
    """Train once straight through and once cut at each batch count of ``cuts``; compare the two."""
    kw = {**dict(epochs=3, batch_size=25, lr=1e-2, eps=0.1, attack_steps=2, attack_step_size=0.05,
                 val_attack_steps=2, progress=False, seed=3, checkpoint_every=1), **kw}
    interrupt_at(monkeypatch, None)
    full = net(dropout)
    fit(full, DATA, out=tmp_path / "full", **kw)
    out = tmp_path / "cut"
    resumed = 0
    for cut in cuts:  # each cut counts the method calls of that session (5 batches per epoch)
        interrupt_at(monkeypatch, cut)
        with pytest.raises(Interrupted):
            fit(net(dropout), DATA, out=out, resume=True, **kw)
        meta = checkpoint.read_metadata(out / "partial") if checkpoint.exists(out / "partial") else None
        resumed += meta is not None and meta["extra"]["position"]["batch"] > 0
    interrupt_at(monkeypatch, None)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), *([nn.Dropout(dropout)] if dropout else []),
                          nn.Linear(16, 2))  # other initial weights: the checkpoint's must win
    fit(model, DATA, out=out, resume=True, **kw)
    assert resumed >= 1, "no cut left a mid-epoch checkpoint behind: the test tests nothing"
    assert_identical(state(full), state(model))
    assert log(out) == log(tmp_path / "full")
    assert not checkpoint.exists(out / "partial")  # removed once its epoch's checkpoint is written
    # bit for bit as sha256sum sees it too: the weights file of the resumed run is the same file
    assert sha256_file(out / "model.safetensors") == sha256_file(tmp_path / "full" / "model.safetensors")


@pytest.mark.parametrize("method,extra", [
    ("pgd", {"dropout": 0.3, "lr_schedule": "cyclic"}),  # attack starts, dropout masks, LR position
    ("trades", {"augment": "crop-flip"}),  # augmentation draws from the shuffling generator mid-epoch
    ("free", {"replay": 3, "checkpoint_every": 2}),  # Free's perturbation; 3 steps per batch, a checkpoint every 2
    ("fgsm-rs", {"early_stopping_patience": 2, "optimizer": "sgd"}),  # the guard (on by default) and best.*
    # the weight average (saved as the model, the trained weights as resume state) under the guard and best.*
    ("n-fgsm", {"ema_decay": 0.9, "label_smoothing": 0.1, "early_stopping_patience": 2, "optimizer": "sgd"}),
    ("n-fgsm", {"finish_method": "pgd", "finish_epochs": 2}),  # a cut in each method, one across the switch
])
def test_mid_epoch_resume_is_bit_identical(tmp_path, monkeypatch, method, extra):
    extra = dict(extra)
    dropout = extra.pop("dropout", 0.0)
    # cut 2 batches into epoch 1, then 4 batches later (epoch 2, batch 1), then 3 later (epoch 2, batch 4)
    run_with_interruptions(tmp_path, monkeypatch, [2, 4, 3], dropout=dropout, method=method, **extra)


def test_guard_restores_the_epoch_before_a_mid_epoch_checkpoint(tmp_path, monkeypatch):
    """The guard's restore point is the last good epoch, not the mid-epoch state it resumed from."""
    interrupt_at(monkeypatch, None)
    kw = dict(method="natural", epochs=4, batch_size=25, lr=5.0, optimizer="sgd", momentum=0.9, eps=0.1,
              val_attack_steps=2, guard=True, guard_drop=0.01, guard_action="continue", progress=False, seed=1,
              checkpoint_every=1)
    full = net()
    res = fit(full, DATA, out=tmp_path / "full", **kw)
    events = [e for r in res.history for e in r.get("events", [])]
    assert events, "the huge learning rate should make the guard act (else this test tests nothing)"
    out = tmp_path / "cut"
    for cut in (7, 5, 4):  # inside epochs 2, 3 and 4
        interrupt_at(monkeypatch, cut)
        with pytest.raises(Interrupted):
            fit(net(), DATA, out=out, resume=True, **kw)
    interrupt_at(monkeypatch, None)
    model = net()
    fit(model, DATA, out=out, resume=True, **kw)
    assert_identical(state(full), state(model))
    assert log(out) == log(tmp_path / "full")


def test_stale_partial_checkpoint_is_ignored_and_a_foreign_one_refused(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, None)
    kw = dict(method="natural", epochs=2, batch_size=25, lr=1e-2, eps=0.1, val_attack_steps=2, progress=False,
              checkpoint_every=1)
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 7)  # inside epoch 2: a partial of epoch 2 is on disk
    with pytest.raises(Interrupted):
        fit(net(), DATA, out=out, **kw)
    assert checkpoint.read_metadata(out / "partial")["extra"]["epoch"] == 1
    # a partial from epoch 1 (as if killed after epoch 1's model.* was written, before the partial was removed)
    stale = tmp_path / "stale"
    interrupt_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        fit(net(), DATA, out=stale, **kw)
    for suffix in (".json", ".safetensors", ".optim.pt"):
        (out / f"partial{suffix}").unlink()
        os.link(stale / f"partial{suffix}", out / f"partial{suffix}")
    interrupt_at(monkeypatch, None)
    resumed = net()
    fit(resumed, DATA, out=out, resume=True, **kw)  # resumes after epoch 1, ignores and removes the stale partial
    assert not checkpoint.exists(out / "partial")
    reference = net()
    fit(reference, DATA, out=tmp_path / "ref", **kw)
    assert_identical(state(reference), state(resumed))
    # without --resume, a folder holding only a mid-epoch checkpoint is refused too
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(net(), DATA, out=stale, **kw)
    # a mid-epoch checkpoint of another configuration is refused like model.*
    with pytest.raises(ValueError, match="configuration differs"):
        fit(net(), DATA, out=stale, resume=True, **{**kw, "lr": 0.5})


def test_time_based_checkpoint_and_config_checks(tmp_path, monkeypatch):
    assert TrainConfig().checkpoint_minutes == 10.0 and TrainConfig().checkpoint_every == 0
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=-1)
    with pytest.raises(ValueError, match="checkpoint_minutes"):
        TrainConfig(checkpoint_minutes=-2)
    with pytest.raises(TypeError, match="checkpoint_minutes"):
        TrainConfig(checkpoint_minutes="10")
    # checkpoint_minutes=0 and checkpoint_every=0: no mid-epoch checkpoint; a tiny interval: one at every batch
    kw = dict(method="natural", epochs=1, batch_size=25, lr=1e-2, eps=0.1, val_attack_steps=2, progress=False)
    for minutes, expected in ((0, False), (1e-9, True)):
        out = tmp_path / f"m{minutes}"
        interrupt_at(monkeypatch, 3)
        with pytest.raises(Interrupted):
            fit(net(), DATA, out=out, checkpoint_minutes=minutes, **kw)
        assert checkpoint.exists(out / "partial") == expected
    meta = checkpoint.read_metadata(tmp_path / "m1e-09" / "partial")
    assert meta["extra"]["position"]["batch"] == 3 and meta["extra"]["step"] == 3
    # the checkpoint fields may change on resume (they do not change the result)
    interrupt_at(monkeypatch, None)
    fit(net(), DATA, out=tmp_path / "m1e-09", resume=True, checkpoint_minutes=None, checkpoint_every=3, **kw)


# --- kill -9 at random points -----------------------------------------------------------------

TRAIN = ["train", "--data", "mnist-mini", "--model", "small-cnn", "--train-size", "260", "--method", "pgd",
         "--eps", "0.3", "--steps", "1", "--step-size", "0.3", "--epochs", "2", "--batch-size", "20",
         "--lr", "1e-3", "--checkpoint-every", "2", "--seed", "5"]  # 2 epochs of 12 batches, 6 checkpoints each
KILLS = 5


def _train(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTOPT_PROGRESS": "off"}
    return subprocess.Popen([sys.executable, "-m", "robustopt", *TRAIN, "--out", str(out), *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _reached(out: Path) -> tuple[int, int] | None:
    """(epochs done, batches done in the next epoch) of the newest checkpoint in ``out``, None if there is none."""
    found = []
    for name in ("model", "partial"):
        try:
            extra = checkpoint.read_metadata(out / name)["extra"]
        except (OSError, ValueError):  # none yet, or removed meanwhile
            continue
        found.append((extra["epoch"], extra.get("position", {}).get("batch", 0)))
    return max(found, default=None)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(tmp_path):
    """`robustopt train --checkpoint-every 2`, SIGKILLed at random times and resumed each time, ends bit-identical.

    Each run is killed at a random moment after it made progress (a new checkpoint landed):
    inside a training step, while writing a checkpoint, in validation, at an epoch's end.
    """
    # The reference run in this process: the same train_run that `robustopt train` calls (one thread, as there).
    CliRunner().invoke(main, [*TRAIN, "--out", str(tmp_path / "full")], catch_exceptions=False)
    epochs = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    gap = sum(r["seconds"] for r in epochs) / 14  # time between two checkpoints (12 mid-epoch ones, 2 at epoch ends)
    rng = random.Random(0)
    out, reached = tmp_path / "cut", []
    for _ in range(KILLS):
        before = _reached(out)
        proc = _train(out, *(["--resume"] if out.exists() else []))  # --resume needs a run to continue
        deadline = time.monotonic() + 120
        while proc.poll() is None and _reached(out) == before and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 2 * gap))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait(timeout=60)
        assert rc == -signal.SIGKILL, f"the run ended by itself ({rc}) before the kills were done: " + \
            proc.stderr.read().decode()[-2000:]
        reached.append(_reached(out))
    final = _train(out, "--resume")
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()
    assert sum(batch > 0 for _, batch in reached) >= 2, f"too few kills after a mid-epoch checkpoint: {reached}"
    assert_identical(checkpoint.load(out / "model")[0].state_dict(),
                     checkpoint.load(tmp_path / "full" / "model")[0].state_dict())
    assert log(out) == log(tmp_path / "full")
    assert not checkpoint.exists(out / "partial") and not (out / ".lock").exists()


def test_a_checkpoint_of_an_older_robustopt_with_attack_mode_resumes(tmp_path, monkeypatch):
    # Checkpoints and config.json written while TrainConfig had attack_mode (only "eval" was accepted).
    interrupt_at(monkeypatch, None)
    kw = dict(batch_size=25, lr=1e-2, eps=0.1, attack_steps=2, attack_step_size=0.05, val_attack_steps=2,
              progress=False, seed=3)
    full = net()
    fit(full, DATA, out=tmp_path / "full", epochs=2, **kw)
    out = tmp_path / "old"
    fit(net(), DATA, out=out, epochs=1, **kw)
    for name in ("model.json", "config.json"):
        meta = json.loads((out / name).read_text())
        config = meta["config"] if name == "model.json" else meta
        config["attack_mode"] = "eval"
        (out / name).write_text(json.dumps(meta))
    assert TrainConfig.from_dict(json.loads((out / "config.json").read_text())).epochs == 1
    resumed = net()
    fit(resumed, DATA, out=out, resume=True, epochs=2, **kw)
    assert_identical(state(full), state(resumed))
