"""The multi-process half of tests/test_distributed.py, run under torchrun.

    torchrun --standalone --nproc_per_node=2 tests/distributed_worker.py OUT

Every rank runs the same calls (they meet in collectives); rank 0 writes the results
into OUT, and the tests compare them with single-process runs of the same functions,
which they import from here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import robustopt as ro
from robustopt import distributed
from robustopt.experiments import train_run
from tiny_problem import mlp, separable

# (a) DDP training against one process: PGD without random start draws no random numbers,
# so the two runs differ only in the float summation order of the gradients.
FIT = dict(method="pgd", attack_random_start=False, epochs=2, batch_size=30, optimizer="sgd", lr=0.05,
           momentum=0.9, eps=0.1, attack_steps=3, attack_step_size=0.05, val_size=40, val_attack_steps=3,
           seed=3, progress=False)
FIT_SIZE = 221  # 181 training examples: 6 global batches of 30 (15 per rank), then 1 example (rank 1: none)

# (b) evaluation: 90 examples in batches of 13 (7 batches, the last one short).
EVAL_BATCH = 13
EVAL_SEED = 5
SWEEP_EPS = [0.0, 0.05, 0.1, 0.2]

# (c) the CLI training that the kill-and-resume tests interrupt (as `robustopt train` arguments).
CLI_TRAIN = dict(data="mnist-mini", model="small-cnn", train_size=250, method="pgd", norm="linf", eps=0.3,
                 attack_steps=2, attack_step_size=0.1, epochs=3, batch_size=50, lr=1e-3, seed=0)


def cli_args(out: Path) -> list[str]:
    """``robustopt train`` arguments equivalent to ``train_run(out, **CLI_TRAIN)``."""
    c = CLI_TRAIN
    return ["train", "--data", c["data"], "--model", c["model"], "--train-size", str(c["train_size"]),
            "--method", c["method"], "--norm", c["norm"], "--eps", str(c["eps"]), "--steps", str(c["attack_steps"]),
            "--step-size", str(c["attack_step_size"]), "--epochs", str(c["epochs"]),
            "--batch-size", str(c["batch_size"]), "--lr", str(c["lr"]), "--seed", str(c["seed"]), "--out", str(out)]


def eval_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[ro.attacks.Attack]]:
    """A fixed linear classifier, 90 random images and attacks that all draw random numbers."""
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(36, 3)
    with torch.no_grad():
        linear.weight.copy_(3 * torch.randn(3, 36, generator=g))
        linear.bias.zero_()
    model = nn.Sequential(nn.Flatten(), linear).eval()
    x = torch.rand(90, 1, 6, 6, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::10] = (y[::10] + 1) % 3  # a few clean mistakes
    t = ro.Linf(0.05)
    attacks = [
        ro.attacks.FGSM(t),
        ro.attacks.PGD(t, steps=4, restarts=2),  # random starts, restarts on what is left
        ro.attacks.APGD(t, steps=5),
        ro.attacks.Square(t, queries=15),
    ]
    return model, x, y, attacks


def evaluations(out: Path | None) -> dict[str, object]:
    """The evaluations and the sweep of (b); written to ``out`` by rank 0 when ``out`` is given."""
    model, x, y, attacks = eval_problem()
    results: dict[str, object] = {}
    for mode in ("cascade", "independent"):
        results[mode] = ro.evaluate(model, (x, y), attacks, batch_size=EVAL_BATCH, seed=EVAL_SEED, mode=mode,
                                    progress=False)
    if out is not None:  # the same evaluation, saving its progress after every round
        results["progress"] = ro.evaluate(model, (x, y), attacks, batch_size=EVAL_BATCH, seed=EVAL_SEED,
                                          progress=False, progress_file=out / "eval.progress.json")
    results["sweep"] = ro.sweep(model, (x, y), ro.Linf, SWEEP_EPS, attack=ro.attacks.PGD(ro.Linf(0.0), steps=4),
                                batch_size=EVAL_BATCH, seed=EVAL_SEED, progress=False)
    return results


def main(out: Path) -> None:
    ctx = distributed.setup()
    assert ctx.world_size == 2, ctx
    ro.training.fit(mlp(), separable(FIT_SIZE), out=out / "fit", **FIT)
    for name, result in evaluations(out).items():
        if ctx.is_main:
            result.to_json(out / f"{name}.json")
    train_run(out / "cli", progress=False, **CLI_TRAIN)  # uninterrupted reference of the CLI runs


if __name__ == "__main__":
    main(Path(sys.argv[1]))
