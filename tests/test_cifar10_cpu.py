"""CIFAR-10 on a CPU: the resnet9 network, N-FGSM, the cpu/paper presets and the committed runs.

The preset test runs the whole pipeline on a few synthetic 3x32x32 images (the real
CIFAR-10 is not shipped); the test of the committed runs needs ../shared/data and
skips cleanly without it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import robustopt as ro
from robustopt import experiments
from robustopt.cli import main
from robustopt.training import MethodContext, TrainConfig, fit
from robustopt.training.builtin_methods import n_fgsm
from tiny_problem import mlp, separable

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "bench" / "results" / "cifar10-cpu"


# --- the network ----------------------------------------------------------------------------------
def test_resnet9_shape_parameters_and_normalize_first():
    model = ro.models.create("resnet9")
    assert ro.models.count_parameters(model) == 1_646_122  # half the DAWNBench width: 32-64-128-256
    assert isinstance(next(iter(model.children())), ro.models.Normalize)
    assert model.config.input_size == (3, 32, 32) and model.config.dataset == "cifar10"
    out = model.eval()(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and out.dtype == torch.float32


def test_resnet9_channels_last_changes_speed_not_function():
    torch.manual_seed(0)
    fast = ro.models.create("resnet9", base_width=4).eval()
    plain = ro.models.create("resnet9", base_width=4, channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    assert fast.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_resnet9_logit_scale_scales_the_logits():
    torch.manual_seed(0)
    a = ro.models.create("resnet9", base_width=4, logit_scale=1.0).eval()
    b = ro.models.create("resnet9", base_width=4, logit_scale=0.125).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(b(x), 0.125 * a(x))


# --- N-FGSM ---------------------------------------------------------------------------------------
def _linear(classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, classes)).eval()


def test_n_fgsm_is_noise_of_2eps_then_a_sign_step_of_eps_without_projection():
    model, eps = _linear(), 0.05
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(64, 1, 6, 6, generator=g)  # away from the box: no clipping
    y = torch.randint(0, 3, (64,), generator=g)
    threat = ro.Linf(eps)
    crafted = n_fgsm(MethodContext(model, threat=threat, config=TrainConfig(), generator=torch.Generator().manual_seed(7)),
                     x, y)
    # The same noise, drawn again from the same generator state.
    start = ro.Linf(2 * eps).random_init(x, torch.Generator().manual_seed(7))
    assert (start - x).abs().max() <= 2 * eps + 1e-7 and (start - x).abs().max() > 1.5 * eps
    start.requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y, reduction="sum"), start)
    expected = (start + eps * grad.sign()).detach()
    torch.testing.assert_close(crafted.x, expected)
    assert crafted.grad_evals == 64
    dist = (crafted.x - x).flatten(1).abs().amax(1)
    assert (dist <= 3 * eps + 1e-6).all() and (dist > eps + 1e-4).any()  # beyond the eps ball: not projected


def test_n_fgsm_stays_in_the_box_and_is_natural_at_eps_zero():
    model = _linear()
    x = torch.rand(32, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0
    y = torch.zeros(32, dtype=torch.long)
    crafted = n_fgsm(MethodContext(model, threat=ro.Linf(0.1), config=TrainConfig(),
                                   generator=torch.Generator().manual_seed(0)), x, y)
    assert crafted.x.min() >= 0.0 and crafted.x.max() <= 1.0
    natural = n_fgsm(MethodContext(model, threat=ro.Linf(0.0), config=TrainConfig(), generator=torch.Generator()), x, y)
    assert natural.x is x and natural.grad_evals == 0


def test_n_fgsm_training_costs_two_gradients_per_example_and_keeps_the_guard_on():
    x, y = separable(80)  # 72 training examples after the 8 held out
    res = fit(mlp(), (x, y), method="n-fgsm", epochs=1, batch_size=32, lr=1e-2, eps=0.1, val_attack_steps=3,
              progress=False)
    assert res.history[0]["grad_evals"] == 72 * 2
    from robustopt.training.config import guard_enabled

    assert guard_enabled(res.config, has_robust_val=True)


# --- presets --------------------------------------------------------------------------------------
def _fake_cifar(name, split="train", root=None):
    n = 96 if split == "train" else 40
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.slow
def test_cifar10_cpu_preset_trains_a_a_prime_a_nat_and_evaluates(tmp_path, monkeypatch):
    """The cpu preset's wiring at a tiny budget: models, methods, seeds, transfer rows, suite and sweep."""
    monkeypatch.setattr(experiments.datasets, "load", _fake_cifar)
    preset = dataclasses.replace(
        experiments.REPRODUCE["madry-cifar10"]["cpu"].with_training(epochs=1, batch_size=32), epochs_natural=1,
        eval_size=12, standard="fast", standard_size=8, sweep_size=8, sweep_steps=2, report=False)
    ev = experiments.run_madry_experiment(preset, out=tmp_path, echo=lambda s: None, progress=False)
    assert {r.source for r in ev.rows} == {"", "A", "A'", "A_nat"}
    assert {r.name for r in ev.rows if r.source == "A"} >= {"FGSM", "PGD", "CW"}
    for name, method, seed in (("A", "n-fgsm", 0), ("A_prime", "n-fgsm", 1), ("A_nat", "natural", 0)):
        config = json.loads((tmp_path / name / "config.json").read_text())
        run = json.loads((tmp_path / name / "run.json").read_text())
        assert (config["method"], config["seed"], run["model"], run["data"]) == (method, seed, "resnet9", "cifar10")
        assert config["lr_schedule"] == "cyclic" and config["augment"] == "crop-flip"
    assert (tmp_path / "A" / "eval-fast.json").is_file() and (tmp_path / "A" / "sweep-linf.json").is_file()
    sweep = json.loads((tmp_path / "A" / "sweep-linf.json").read_text())
    assert max(sweep["eps"]) == pytest.approx(16 / 255) and len(sweep["eps"]) == 9


def test_reproduce_only_trains_the_named_models_and_refuses_unknown_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments.datasets, "load", _fake_cifar)
    preset = dataclasses.replace(experiments.REPRODUCE["madry-cifar10"]["cpu"].with_training(batch_size=32),
                                 epochs_natural=1)
    assert experiments.run_madry_experiment(preset, out=tmp_path, echo=lambda s: None, progress=False,
                                            only=("A_nat",)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A_nat"]
    with pytest.raises(ValueError, match="does not train"):
        experiments.run_madry_experiment(preset, out=tmp_path, echo=lambda s: None, only=("B",))


def test_fast_at_preset_is_the_paper_recipe_and_needs_cuda(tmp_path):
    recipe = experiments.TRAIN_PRESETS["fast-at-cifar10"]
    config = recipe.config
    assert (config.method, config.epochs, config.lr, config.lr_schedule, config.amp) == ("fgsm-rs", 15, 0.2, "piecewise", True)
    assert recipe.model == "preact-resnet18" and config.eps == pytest.approx(8 / 255)
    if not torch.cuda.is_available():  # on CPU the preset's AMP is refused with a clear error, before any work
        res = CliRunner().invoke(main, ["train", "--preset", "fast-at-cifar10", "--data", "mnist-mini", "--model",
                                        "small-cnn", "--train-size", "64", "--out", str(tmp_path / "f")])
        assert res.exit_code == 2 and "CUDA" in res.output and "Traceback" not in res.output


# --- the committed runs ---------------------------------------------------------------------------
DATA = Path(os.environ.get("ROBUSTOPT_DATA", REPO.parent / "shared" / "data"))


@pytest.mark.skipif(not (DATA / "cifar10").is_dir(), reason="needs the full CIFAR-10 (ROBUSTOPT_DATA)")
@pytest.mark.parametrize("name, min_accuracy", [("A", 0.6), ("A_prime", 0.6), ("A_nat", 0.8)])
def test_committed_cifar10_runs_load_and_classify(name, min_accuracy):
    if not (COMMITTED / name / "run.json").is_file():
        pytest.skip(f"{name} is not trained and committed yet")
    model, info = ro.load_run(COMMITTED / name)
    x, y = ro.data.load("cifar10", split="test", root=DATA)
    with torch.no_grad():
        accuracy = (model(x[:200]).argmax(1) == y[:200]).float().mean().item()
    assert info["data"] == "cifar10" and accuracy >= min_accuracy
