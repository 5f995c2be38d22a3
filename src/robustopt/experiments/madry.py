"""``robustopt reproduce`` and ``robustopt demo``: Madry et al.'s experiment end to end, and its budgets.

Train A and A' (adversarially) and B and A_nat (naturally), attack A white-box and from the
others, print the table beside the paper's; then, as the budget asks, the standard suite,
eps sweeps and the report. The budgets are :class:`ExperimentPreset` values (``DEMO``,
``REPRODUCE``).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from robustopt._device import resolve_device
from robustopt._io import atomic_write_json, atomic_write_text
from robustopt._lock import holding
from robustopt.evaluation import Evaluation, suites
from robustopt.experiments.attack import eval_run, sweep_run
from robustopt.experiments.report import write_report
from robustopt.experiments.train import train_run
from robustopt.runs import RUN_FILE, read_log, training_started
from robustopt.threat import L2, Linf, ThreatModel
from robustopt.training import TrainConfig

__all__ = ["ExperimentPreset", "DEMO", "REPRODUCE", "reproduce", "run_madry_experiment"]


@dataclass(frozen=True)
class ExperimentPreset:
    """Budget of the whole experiment: four models, the attack table, and optionally more.

    The attack table is the madry suite on model A (white-box, and transferred from A', B and
    A_nat). ``standard``, ``sweeps`` and ``report`` add the AutoAttack-grade suite on A, robust
    accuracy against eps, and the Markdown/HTML report, as ``robustopt reproduce`` does.

    Args:
        model_a: registry model of A, A' and A_nat.
        model_b: registry model of B (Tramer et al.'s); None skips B (the paper's CIFAR-10 table has none).
        train: the training of A and A' (A' with seed + 1); B and A_nat train with the same
            configuration, naturally, for ``epochs_natural`` epochs without eps warm-up.
        epochs_natural: epochs of B and A_nat.
        eval_size: test images of the madry suite (None: all).
        max_restarts: cap on the madry suite's restarts (None: the paper's up to 20).
        data: dataset of the experiment.
        train_size: training images of every model (None: all).
        standard: a suite run on A as a cascade ("standard", "fast", ...), or None.
        standard_size: its test images (None: all).
        sweeps: (threat-model class, eps grid) pairs swept on A, e.g. ``((ro.Linf, (0.0, 0.1, 0.3)),)``.
        sweep_size: test images of the sweeps (None: all).
        sweep_steps: PGD steps of the sweeps.
        report: write ``report.md`` and ``report.html``.
    """

    model_a: str
    model_b: str | None
    train: TrainConfig
    epochs_natural: int
    eval_size: int | None
    max_restarts: int | None
    data: str = "mnist-mini"
    train_size: int | None = None
    standard: str | None = None
    standard_size: int | None = None
    sweeps: tuple[tuple[type[ThreatModel], tuple[float, ...]], ...] = ()
    sweep_size: int | None = 1000
    sweep_steps: int = 40
    report: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}.")
        if self.standard is not None:
            suites.get_suite(self.standard)

    def with_training(self, **fields: Any) -> ExperimentPreset:
        """This budget with the fields of ``train`` replaced, e.g. ``DEMO.with_training(epochs=1)``."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **fields))

    def recipes(self, seed: int) -> dict[str, tuple[str, TrainConfig]]:
        """The models of the experiment by table name: (registry model, configuration)."""
        natural = dataclasses.replace(self.train, method="natural", epochs=self.epochs_natural, eps_warmup_epochs=0,
                                      seed=seed)
        plan = {"A": (self.model_a, dataclasses.replace(self.train, seed=seed)),
                "A'": (self.model_a, dataclasses.replace(self.train, seed=seed + 1)),
                "B": (self.model_b, natural),
                "A_nat": (self.model_a, natural)}
        return {name: recipe for name, recipe in plan.items() if recipe[0] is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, with the sweeps' norms by name (``[["linf", [0.0, 0.1]], ...]``)."""
        out = dataclasses.asdict(self)
        out["sweeps"] = [[norm.norm.lower(), list(grid)] for norm, grid in self.sweeps]
        return out

    def summary(self) -> str:
        """The budget in one readable line (what ``robustopt demo`` / ``reproduce`` print)."""
        t = self.train
        step = "2.5 eps / steps" if t.attack_step_size is None else f"{t.attack_step_size:.3g}"
        attack = f"{t.attack_steps} x {step} at eps {t.eps:.4g}"
        if t.eps_warmup_epochs:
            attack += f", eps ramped over {t.eps_warmup_epochs} epochs"
        natural = f"B = {self.model_b}, A_nat = {self.model_a}" if self.model_b else f"A_nat = {self.model_a}"
        size = lambda n: "all" if n is None else f"{n:,}"  # noqa: E731
        parts = [
            f"A, A' = {self.model_a}, {t.epochs} epochs of {t.method} ({attack})",
            f"{natural}, {self.epochs_natural} epochs natural",
            f"batch {t.batch_size}, {t.optimizer} lr {t.lr:g}, {size(self.train_size)} training images",
            f"madry suite on {size(self.eval_size)} test images"
            + (f", at most {self.max_restarts} restarts" if self.max_restarts else ""),
        ]
        if self.standard:
            parts.append(f"{self.standard} suite on {size(self.standard_size)}")
        if self.sweeps:
            grids = ", ".join(f"{norm.norm.lower()} ({len(grid)} eps)" for norm, grid in self.sweeps)
            parts.append(f"sweeps {grids} on {size(self.sweep_size)}")
        return "; ".join(parts)


def _grid(stop: float, step: float) -> tuple[float, ...]:
    return tuple(round(i * step, 10) for i in range(int(round(stop / step)) + 1))


_MNIST_SWEEPS = ((Linf, _grid(0.5, 0.05)), (L2, _grid(8.0, 0.5)))  # the paper's Figure 2 ranges
_CIFAR_SWEEPS = ((Linf, _grid(30 / 255, 2 / 255)), (L2, _grid(100 / 255, 10 / 255)))
_CIFAR_CPU_SWEEPS = ((Linf, _grid(16 / 255, 2 / 255)),)
_DEMO_SWEEPS = ((Linf, _grid(0.5, 0.1)), (L2, _grid(8.0, 2.0)))  # the same ranges, coarser: the demo stays quick

# Sized to finish in a few minutes on a 2-core CPU: the fast small CNN as A, 5-step PGD
# training with eps ramped over 3 epochs, 500 test images, at most 2 restarts.
# The full-MNIST recipe is bench/full_mnist.sh (docs/results.md).
DEMO = ExperimentPreset(
    model_a="small-cnn", model_b="tramer-b", epochs_natural=3, eval_size=500, max_restarts=2,
    train=TrainConfig(eps=0.3, epochs=6, attack_steps=5, attack_step_size=0.1, batch_size=50, lr=1e-3,
                      eps_warmup_epochs=3),
)

# `robustopt reproduce NAME --budget B` (`robustopt demo` is madry-mnist's demo). demo: DEMO plus the
# fast standard suite, coarse sweeps (200 test images) and the report (minutes, offline). cpu: full MNIST with the
# paper's model A at the budget of bench/full_mnist.sh (5 epochs of 5-step PGD; about 1 h 15 min on 2 cores, most of
# it training A and A'). paper: the paper's recipes (MNIST: 40 x 0.01, batch 50, Adam 1e-4, ~100k steps; CIFAR-10:
# 7 x 2/255, batch 128, SGD 0.1 with x0.1 at 50% and 75%, ~80k steps), all test images, 20 restarts: for a GPU.
REPRODUCE: dict[str, dict[str, ExperimentPreset]] = {
    "madry-mnist": {
        "demo": dataclasses.replace(DEMO, standard="fast", standard_size=200, sweeps=_DEMO_SWEEPS, sweep_size=200,
                                    report=True),
        "cpu": ExperimentPreset(
            model_a="madry-mnist", model_b="tramer-b", epochs_natural=2, eval_size=1000, max_restarts=2, data="mnist",
            train=TrainConfig(eps=0.3, epochs=5, attack_steps=5, attack_step_size=0.1, batch_size=100, lr=1e-3,
                              eps_warmup_epochs=3),
            standard="fast", standard_size=1000, sweeps=_MNIST_SWEEPS, sweep_size=500, report=True),
        "paper": ExperimentPreset(
            model_a="madry-mnist", model_b="tramer-b", epochs_natural=10, eval_size=None, max_restarts=None,
            data="mnist",
            train=TrainConfig(eps=0.3, epochs=85, attack_steps=40, attack_step_size=0.01, batch_size=50, lr=1e-4,
                              device="auto"),
            standard="standard", sweeps=_MNIST_SWEEPS, sweep_size=None, report=True),
    },
    "madry-cifar10": {
        "paper": ExperimentPreset(
            model_a="wrn-34-10", model_b=None, epochs_natural=205, eval_size=None, max_restarts=None, data="cifar10",
            train=TrainConfig(eps=8 / 255, epochs=205, attack_steps=7, attack_step_size=2 / 255, batch_size=128,
                              lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=2e-4, lr_schedule="step",
                              augment="crop-flip", device="auto"),
            standard="standard", sweeps=_CIFAR_SWEEPS, sweep_size=1000, report=True),
        # The CPU network (resnet9, 1.6M parameters) with N-FGSM (de Jorge et al. 2022), cyclic LR and
        # crop-flip: 15 epochs of A and A' (the length 2 hours of 2 cores hold: the robustness-per-hour
        # frontier of docs/results.md) with the attack passes through folded batch norm, 5 of A_nat.
        "cpu": ExperimentPreset(
            model_a="resnet9", model_b=None, epochs_natural=5, eval_size=None, max_restarts=None, data="cifar10",
            train=TrainConfig(method="n-fgsm", eps=8 / 255, epochs=15, attack_steps=1, attack_step_size=8 / 255,
                              batch_size=128, lr=0.2, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                              lr_schedule="cyclic", augment="crop-flip", fold_bn=True),
            standard="standard", standard_size=1000, sweeps=_CIFAR_CPU_SWEEPS, sweep_size=1000, report=True),
    },
}


def reproduce(name: str, budget: str = "demo", **kwargs: Any) -> Evaluation:
    """Run preset ``REPRODUCE[name][budget]`` with :func:`run_madry_experiment` (same keyword arguments)."""
    if name not in REPRODUCE:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(REPRODUCE)}.")
    if budget not in REPRODUCE[name]:
        raise ValueError(f"{name} has no budget {budget!r}; choose one of {sorted(REPRODUCE[name])}.")
    return run_madry_experiment(REPRODUCE[name][budget], **kwargs)


# The experiment folder: exclusive for the whole experiment, shared by `--only` runs training side by side.
@holding(lambda a: a["out"], "demo/reproduce", shared=lambda a: a["only"] is not None)
def run_madry_experiment(
    preset: ExperimentPreset,
    *,
    out: str | Path,
    data: str | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    only: tuple[str, ...] | None = None,
    device: str | None = None,
) -> Evaluation | None:
    """Madry et al.'s experiment: train A and A' (PGD-AT), B and A_nat (natural); attack A; print the table.

    Then, as the preset asks, the standard suite on A (``A/eval-standard.*``), sweeps of A
    (``A/sweep-NORM.*``) and the report (``out/report.md`` and ``out/report.html``).
    Finished models in ``out`` are reused, so an interrupted experiment continues where it stopped
    (``out/experiment.json`` counts their training time, from their logs, in its total);
    the experiment's own results in ``out`` (evaluations, sweeps, report) are recomputed and replaced.

    Args:
        preset: the budget (``DEMO`` or a ``REPRODUCE`` entry).
        out: run folder of the experiment (one sub-folder per model).
        data: dataset (default: the preset's).
        seed: seed of A, B, A_nat and the evaluation; A' uses ``seed + 1``.
        root / echo / progress: data root, line printer, progress bars.
        only: train just these models (names of the plan: "A", "A'", "B", "A_nat") and stop
            before the evaluation; lets several processes train the models side by side.
            A later call without ``only`` reuses them.
        device: "cpu", "cuda", "auto", ... for training and evaluation (default: the preset's).

    Returns:
        The madry-suite evaluation of A, or None when ``only`` is given.
    """
    out = Path(out)
    data = data or preset.data
    preset = preset.with_training(device=device) if device else preset
    resolve_device(preset.train.device)  # before the first line and the first model
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    reused: list[str] = []  # models trained before this call
    threat = preset.train.threat()
    echo(f"robustopt: Madry et al. (2018) experiment on {data}, eps={threat.eps:.4g} "
         f"({'L-inf' if threat.norm == 'Linf' else threat.norm}), run folder {out}")
    echo(f"budget: {preset.summary()}")
    plan = preset.recipes(seed)
    folders = {name: out / name.replace("'", "_prime") for name in plan}
    if only is not None:
        unknown = sorted(set(only) - set(plan))
        if unknown:
            raise ValueError(f"only names models {unknown} that this experiment does not train; choose from {list(plan)}.")
    for name, (model, config) in plan.items():
        if only is not None and name not in only:
            continue
        folder = folders[name]
        if (folder / RUN_FILE).is_file():
            # Its training time, from its log: the experiment's total stays what a fresh start costs.
            seconds[f"train {name}"] = sum(float(r.get("seconds", 0.0)) for r in read_log(folder) or [])
            reused.append(name)
            echo(f"[{name}] reusing {folder} (trained in {seconds[f'train {name}']:.0f} s)")
            continue
        echo(f"[{name}] training {model} ({config.method}) -> {folder}")
        t0 = time.perf_counter()
        train_run(folder, data=data, model=model, train_size=preset.train_size, resume=training_started(folder),
                  root=root, progress=progress, config=config)
        seconds[f"train {name}"] = time.perf_counter() - t0
        echo(f"[{name}] done in {seconds[f'train {name}']:.0f} s")
    if only is not None:
        return None

    echo(f"[eval] madry suite on {preset.eval_size or 'all'} test images"
         + (f", restarts capped at {preset.max_restarts} (the paper uses 20)" if preset.max_restarts else ""))
    t0 = time.perf_counter()
    ev = eval_run(folders["A"], sources={k: v for k, v in folders.items() if k != "A"}, limit=preset.eval_size,
                  max_restarts=preset.max_restarts, root=root, echo=lambda s: None, progress=progress, seed=seed,
                  device=preset.train.device, overwrite=True)
    seconds["eval madry"] = time.perf_counter() - t0
    paper = suites.get_suite("madry").paper(data, threat)
    reference = None if paper is None else paper.reference()
    echo("")
    echo(ev.table(reference=reference))
    if paper is not None:
        echo(f"The 'Paper' column is {paper.title}; ours is measured now, with the budget above.")
    atomic_write_text(out / "table.md", ev.table("markdown", reference=reference))
    ev.to_json(out / "table.json")

    if preset.standard:
        echo(f"[eval] {preset.standard} suite (APGD-CE, APGD-T{', FAB-T, Square' if preset.standard == 'standard' else ''};"
             f" cascade) on {preset.standard_size or 'all'} test images")
        t0 = time.perf_counter()
        worst = eval_run(folders["A"], suite=preset.standard, limit=preset.standard_size, root=root, echo=echo,
                         progress=progress, seed=seed, device=preset.train.device, overwrite=True)
        seconds[f"eval {preset.standard}"] = time.perf_counter() - t0
        echo(f"robust accuracy of A under the {preset.standard} suite: {100 * worst.robust_accuracy:.1f}%")
    for norm, grid in preset.sweeps:
        name = norm.norm.lower()
        echo(f"[sweep] {name}, eps {grid[0]:.4g} to {grid[-1]:.4g} ({len(grid)} values), "
             f"PGD-{preset.sweep_steps} on {preset.sweep_size or 'all'} test images")
        t0 = time.perf_counter()
        sweep_run(folders["A"], norm=norm, eps_values=list(grid), steps=preset.sweep_steps, limit=preset.sweep_size,
                  root=root, echo=echo, progress=progress, seed=seed, device=preset.train.device, overwrite=True)
        seconds[f"sweep {name}"] = time.perf_counter() - t0
    written = [out / "table.md", out / "table.json"]
    if preset.report:
        t0 = time.perf_counter()
        written += list(write_report([folders["A"]], out=out, root=root, overwrite=True))
        seconds["report"] = time.perf_counter() - t0

    seconds["this call"] = time.perf_counter() - start
    seconds["total"] = seconds["this call"] + sum(seconds[f"train {name}"] for name in reused)
    summary = {"preset": preset.to_dict(), "data": data, "seed": seed, "seconds": seconds, "reused": reused,
               "machine": platform.platform(), "torch": torch.__version__, "runs": {k: str(v) for k, v in folders.items()}}
    atomic_write_json(out / "experiment.json", summary)
    echo(f"written: {', '.join(str(p) for p in written)} ({seconds['this call']:.0f} s"
         + (f"; {seconds['total']:.0f} s with the training of {', '.join(reused)})" if reused else ")"))
    return ev
