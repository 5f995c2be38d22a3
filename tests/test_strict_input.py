"""A wrong request is an error, never a number (issue 16, items 5-8).

Every bad CLI input must exit non-zero with one line ``error: ...`` and no traceback, and
leave the file system as it was. The library entry points refuse the same requests.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import robustopt as ro
from robustopt import checkpoint
from robustopt._checks import MAX_GRID, EpsWarning, check_eps, eps_warning
from robustopt.cli import main
from robustopt.experiments import eval_run, sweep_run

from tiny_problem import TINY_TRAIN

TINY = [*TINY_TRAIN, "--epochs", "1"]


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


# --- item 5: n >= 1 ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "sweep"])
@pytest.mark.parametrize("n", ["0", "-995"])
def test_n_below_one_is_refused(run, command, n):
    refused([command, str(run), "--n", n], f"must be >= 1 (a number of images), got {n}", run.parent)


def test_n_above_the_data_says_all_are_used(run):
    res = CliRunner().invoke(main, ["sweep", str(run), "--eps", "0", "--n", "5000", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "note: --n 5,000 is more than the 1,000 test images of mnist-mini: all 1,000 are used." in res.output
    assert json.loads((run / "sweep-linf.json").read_text())["n"] == 1000


def test_library_refuses_empty_data_and_limit_below_one(run, trained_cnn):
    model, x, y = trained_cnn
    attack = ro.attacks.PGD(ro.Linf(0.1), steps=2)
    with pytest.raises(ValueError, match="no examples"):
        ro.evaluate(model, (x[:0], y[:0]), [attack])
    with pytest.raises(ValueError, match="no examples"):
        ro.sweep(model, (x[:0], y[:0]), ro.Linf, [0.0, 0.1])
    for fn in (eval_run, lambda r, **kw: sweep_run(r, eps_values=[0.0], **kw)):
        with pytest.raises(ValueError, match="must be >= 1"):
            fn(run, limit=0, echo=lambda s: None, progress=False)
        with pytest.raises(TypeError, match="whole number"):
            fn(run, limit=2.5, echo=lambda s: None, progress=False)


# --- item 6: no weights ----------------------------------------------------------------------


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


# --- item 7: eps sanity ----------------------------------------------------------------------


def test_eps_limits_state_the_geometry():
    # the diameter of the box [0, 1]^d: 1 (L-inf), sqrt(d) (L2), d (L1); beyond it: refused
    d = 1 * 28 * 28
    for norm, diameter in (("linf", 1.0), ("l2", math.sqrt(d)), ("l1", float(d))):
        check_eps(norm, diameter, (1, 28, 28))
        with pytest.raises(ValueError, match="exceeds"):
            check_eps(norm, diameter * 1.01, (1, 28, 28))
        assert eps_warning(norm, 0.49 * diameter, (1, 28, 28)) is None
        assert "mid-gray" in eps_warning(norm, 0.51 * diameter, (1, 28, 28))
    # at half the diameter every image, even a corner of the box, reaches the mid-gray image
    corners = torch.randint(0, 2, (64, 1, 28, 28)).float()
    gray = torch.full_like(corners, 0.5)
    for threat in (ro.Linf(0.5), ro.L2(0.5 * math.sqrt(d)), ro.L1(0.5 * d)):
        assert threat.contains(gray, corners, atol=1e-4).all()
    # natural images: L-inf above 32/255 is unusual (the literature stops at 16/255)
    assert eps_warning("linf", 8 / 255, (3, 32, 32)) is None
    assert "32/255" in eps_warning("linf", 0.2, (3, 32, 32))
    assert eps_warning("linf", 0.3, (1, 28, 28)) is None  # MNIST's standard radius


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


def test_library_entry_points_check_eps(trained_cnn):
    model, x, y = trained_cnn
    with pytest.raises(ValueError, match="exceeds"):
        ro.evaluate(model, (x[:4], y[:4]), [ro.attacks.FGSM(ro.Linf(1.5))])
    with pytest.raises(ValueError, match="exceeds"):
        ro.sweep(model, (x[:4], y[:4]), ro.L2, [0.0, 9.0])  # 1x8x8 inputs: diameter 8
    with pytest.raises(ValueError, match=f"at most {MAX_GRID:,}"):
        ro.sweep(model, (x[:4], y[:4]), ro.Linf, [i / 10_000 for i in range(MAX_GRID + 1)])
    with pytest.warns(EpsWarning, match="mid-gray"):
        ro.sweep(model, (x[:4], y[:4]), ro.Linf, [0.0, 0.6], attack=ro.attacks.FGSM(ro.Linf(0.0)), progress=False)
    with pytest.raises(ValueError, match="exceeds"):
        ro.training.fit(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)), (x[:40], y[:40]), eps=2.0,
                        epochs=1, progress=False)


# --- item 8: dataset/model mismatch ------------------------------------------------------------


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
