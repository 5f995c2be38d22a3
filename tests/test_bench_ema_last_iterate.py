"""bench/ema_last_iterate.py: the last iterate of an --ema run is the model of the same run without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import robustopt as ro
from bench_package import bench_script
from robustopt.cli import main
from tiny_problem import TINY_TRAIN

ema_last_iterate = bench_script("ema_last_iterate")


def train(out: Path, *extra: str) -> Path:
    res = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--method", "n-fgsm", "--epochs", "2", *extra, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_the_last_iterate_is_the_run_without_averaging(tmp_path: Path) -> None:
    averaged, plain = train(tmp_path / "ema", "--ema", "0.9"), train(tmp_path / "plain")
    out = ema_last_iterate.write_last_iterate(averaged, tmp_path / "last")
    last, _ = ro.load_run(out)
    want, _ = ro.load_run(plain)
    for (name, a), b in zip(last.state_dict().items(), want.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name  # the same trajectory: averaging draws no random number
    average, _ = ro.load_run(averaged)
    assert any(not torch.equal(a, b) for a, b in zip(average.state_dict().values(), last.state_dict().values()))
    config = json.loads((out / "config.json").read_text())
    assert config["ema_decay"] == 0 and config == {**json.loads((plain / "config.json").read_text()), "ema_decay": 0.0}
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["val_robust_acc"] is None and r["grad_evals"] > 0 for r in log)
    with pytest.raises(ValueError, match="already holds a run"):
        ema_last_iterate.write_last_iterate(averaged, out)
    with pytest.raises(ValueError, match="without --ema"):
        ema_last_iterate.write_last_iterate(plain, tmp_path / "none")
