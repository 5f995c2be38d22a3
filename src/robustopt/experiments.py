"""Runs on disk: train a model into a run folder, evaluate a run, and the paper's whole experiment.

A run folder holds ``run.json`` (dataset, model, threat), the training log and
checkpoint written by ``ro.training.fit``, and evaluation results
(``eval-SUITE.json`` / ``.md``). The CLI commands ``train``, ``eval`` and
``demo`` are thin wrappers around the functions here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from robustopt import checkpoint, data as datasets, distributed, models
from robustopt._checks import check_count, check_eps, check_grid_size, check_input_shape
from robustopt._device import resolve_device
from robustopt._io import atomic_write_json, atomic_write_text
from robustopt._progress import format_seconds
from robustopt._runfolder import holding, refuse_replacement, saved_request
from robustopt.attacks import PGD
from robustopt.evaluation import Evaluation, SweepCurve, evaluate, suites, sweep
from robustopt.threat import L1, L2, Linf, ThreatModel
from robustopt.training import BEST_NAME, CHECKPOINT_NAME, TrainConfig, TrainResult, fit
from robustopt.training.fit import PARTIAL_NAME, _val_size
from robustopt.training.methods import grad_evals_per_example

__all__ = ["ExperimentPreset", "DEMO", "REPRODUCE", "TRAIN_PRESETS", "reproduce", "train_run", "eval_run", "sweep_run", "load_run", "run_madry_experiment",
           "threat_of"]

THREATS: dict[str, type[ThreatModel]] = {"linf": Linf, "l2": L2, "l1": L1}
RUN_FILE = "run.json"
WEIGHTS = {"final": CHECKPOINT_NAME, "best": BEST_NAME}  # load_run(weights=...) -> checkpoint name in the run


def threat_of(norm: str, eps: float) -> ThreatModel:
    """Threat model from a CLI norm name ("linf", "l2", "l1") and eps."""
    try:
        return THREATS[norm.lower()](eps)
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(THREATS)}.") from None


@holding(lambda a: a["out"], "train")  # one process per run folder, created folders removed on failure
def train_run(
    out: str | Path,
    *,
    data: str = "mnist",
    model: str = "madry-mnist",
    train_size: int | None = None,
    resume: bool = False,
    root: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **config: Any,
) -> Path:
    """Train registry model ``model`` on dataset ``data`` into the run folder ``out``.

    Args:
        out: run folder (created).
        data: dataset name for ``ro.data.load``.
        model: model name for ``ro.models.create``.
        train_size: use only the first N training images (None: all).
        resume: continue an interrupted run.
        root: data root.
        progress: show progress bars.
        echo: prints what the run does (None: nothing): where a resumed run continues from,
            a one-line plan with its cost in image-gradient evaluations, and at the end the run
            folder, the final validation accuracies, the time and the next command.
        **config: ``TrainConfig`` fields (method, norm, eps, epochs, attack_steps, ...).

    Returns:
        The run folder.

    Raises:
        ValueError: a model built for other images than ``data``'s, a bad configuration
            (e.g. epochs < 1, an eps beyond the [0, 1] box) or a bad ``train_size``.
    """
    out = Path(out)
    info = datasets.info(data)
    _check_model_fits_data(model, data)
    cfg = TrainConfig(**config)
    check_eps(cfg.norm, cfg.eps, info.shape)  # before anything is printed or loaded (fit warns above the usual)
    if train_size is not None:
        check_count("train_size (--train-size)", train_size)
    x, y = datasets.load(data, split="train", root=root)
    if train_size is not None:
        x, y = x[:train_size], y[:train_size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the seed covers the initial weights too
        net = models.create(model, num_classes=info.num_classes, mean=info.mean, std=info.std)
    run_info = {"data": data, "model": model, "train_size": train_size, "norm": cfg.norm, "eps": cfg.eps,
                "method": cfg.method, "seed": cfg.seed}
    say = echo if echo is not None and distributed.setup().is_main else _quiet
    done = 0  # epochs already trained
    if resume:
        message, done = _resume_point(out, cfg.epochs)
        say(message)
    if done < cfg.epochs:
        say(_train_plan(model, data, cfg, len(x), out, done))
    out.mkdir(parents=True, exist_ok=True)
    result = fit(net, (x, y), config=cfg, out=out, resume=resume, progress=progress)
    if distributed.setup().is_main:  # under torchrun, rank 0 writes
        atomic_write_json(out / RUN_FILE, run_info)
    for line in _train_summary(result, out, cfg):
        say(line)
    return out


def _check_model_fits_data(model: str, data: str) -> None:
    """Refuse a registry model built for other images than the dataset's, naming the models that fit."""
    shape = datasets.info(data).shape
    fitting = [m for m in models.names() if models.default_config(m).input_size == shape]
    config = models.default_config(model)
    check_input_shape(f"model {model}" + (f" (built for {config.dataset})" if config.dataset else ""),
                      config.input_size, data, shape,
                      f" Models for these images: {', '.join(fitting) or 'none registered'} (robustopt models list).")


def _resume_point(out: Path, epochs: int) -> tuple[str, int]:
    """Where ``train --resume`` continues ``out`` from (or that there is nothing to resume), and the
    number of epochs already trained (``epochs`` when nothing is left to do)."""
    ckpt, partial = out / CHECKPOINT_NAME, out / PARTIAL_NAME
    state = checkpoint.read_metadata(ckpt).get("extra") or {} if checkpoint.exists(ckpt) else {}
    inside = checkpoint.read_metadata(partial).get("extra") or {} if checkpoint.exists(partial) else {}
    epoch, step = state.get("epoch", 0), state.get("step", 0)
    if inside.get("epoch") == epoch:  # a mid-epoch checkpoint of the epoch after the last finished one
        batch = (inside.get("position") or {}).get("batch")
        return (f"resuming {out} inside epoch {epoch + 1} of {epochs}, after batch {batch} "
                f"(optimizer step {inside.get('step')})."), epoch
    if not state:
        return f"nothing to resume in {out}: it holds no training checkpoint, so a new run starts there.", 0
    where = f"resuming {out} after epoch {epoch} of {epochs} (optimizer step {step})"
    if state.get("stopped"):
        return f"{where}: it stopped early ({state['stopped']}), nothing left to train.", epochs
    return (f"{where}: nothing left to train.", epochs) if epoch >= epochs else (f"{where}.", epoch)


def _train_plan(model: str, data: str, cfg: TrainConfig, n: int, out: Path, done: int = 0) -> str:
    """One line: what ``train_run`` will do (the epochs after ``done``) and its cost in image-gradient evaluations."""
    n_val = _val_size(cfg, n)
    n_train = n - n_val
    steps = math.ceil(n_train / cfg.batch_size)
    what = f"{cfg.method} training of {model} on {data}"
    if cfg.method != "natural":
        what += f" at {threat_of(cfg.norm, cfg.eps)}"
    left = cfg.epochs - done
    epochs = f"{left} epoch{'s' * (left != 1)}" + (f" (epochs {done + 1}-{cfg.epochs})" if done else "")
    per_example = grad_evals_per_example(cfg.method, cfg)
    val_steps = cfg.val_attack_steps if cfg.eps > 0 else 0
    if per_example is None:
        cost = f"cost unknown (method {cfg.method!r} declares no grad_evals)"
    else:
        total = left * (n_train * per_example + n_val * val_steps)
        cost = (f"about {_count(total)} image-gradient evaluations ({left} x {n_train:,} x {per_example} for training"
                + (f" + {left} x {n_val:,} x {val_steps} for validation" if n_val and val_steps else "") + ")")
    return (f"plan: {what}: {epochs} of {n_train:,} images ({steps:,} steps of batch {cfg.batch_size}"
            f"{f'; {n_val:,} more held out for validation' if n_val else ''}); {cost}; run folder {out}")


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**7 else f"{n:.2e}"


def _train_summary(result: TrainResult, out: Path, cfg: TrainConfig) -> list[str]:
    """Where the run was saved, its final validation accuracies, the time, and the command to run next."""
    history = result.history
    lines = [f"saved: {out} ({len(history)} epoch{'s' * (len(history) != 1)}, "
             f"{format_seconds(result.seconds)} in this call)"]
    if result.stopped:
        lines.append(f"stopped early ({result.stopped}) after epoch {len(history)} of {cfg.epochs}; "
                     "the saved weights are the restored ones (see log.jsonl).")
    last = history[-1] if history else {}
    if last.get("val_clean_acc") is None:
        lines.append("final validation accuracy: none (no validation split, val_size=0)")
    else:
        robust = last.get("val_robust_acc")
        robust = ("not measured (val_attack_steps=0)" if robust is None else
                  f"{100 * robust:.1f}% (PGD-{cfg.val_attack_steps} at {threat_of(cfg.norm, cfg.eps)})")
        lines.append(f"final validation accuracy: clean {100 * last['val_clean_acc']:.1f}%, robust {robust}")
    lines.append(f"next: robustopt eval {shlex.quote(str(out))}   "
                 "(the paper's attack table; --suite standard for the AutoAttack-grade worst case)")
    return lines


def load_run(run: str | Path, weights: str = "final") -> tuple[nn.Module, dict[str, Any]]:
    """Load the trained model of a run folder and its ``run.json``.

    Args:
        run: run folder made by ``train_run``.
        weights: "final" (``model.*``, the weights training ended with) or "best" (``best.*``, the
            epoch with the best validation robust accuracy, kept when early stopping is on).
    """
    run = Path(run)
    info_path = run / RUN_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{run} is not a finished robustopt run (no {RUN_FILE}); train it with `robustopt train --out {run}`.")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {sorted(WEIGHTS)}, got {weights!r}.")
    path = run / WEIGHTS[weights]
    if not path.with_suffix(".json").is_file() and weights == "final":
        raise FileNotFoundError(f"{run} has no trained weights ({WEIGHTS[weights]}.*): its training ended before "
                                f"it saved any. Continue it with `robustopt train ... --resume --out {run}` (the "
                                "options it was started with).")
    if not path.with_suffix(".json").is_file():
        raise FileNotFoundError(f"{run} has no {WEIGHTS[weights]}.* weights: they are kept only when training runs with "
                                "early stopping (`robustopt train --early-stopping-patience K`); use the final weights.")
    info = json.loads(info_path.read_text())
    model, _ = checkpoint.load(path)
    return model.eval(), info


def _test_images(data: str, limit: int | None, root: str | Path | None,
                 echo: Callable[[str], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (>= 1) test images of ``data``, all when None; says so when there are fewer."""
    if limit is not None:
        check_count("limit (--n)", limit)
    x, y = datasets.load(data, split="test", root=root)
    if limit is not None and limit > len(x):
        echo(f"note: --n {limit:,} is more than the {len(x):,} test images of {data}: all {len(x):,} are used.")
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _result_stem(kind: str, weights: str) -> str:
    """``eval-madry`` for the final weights, ``eval-madry-best`` for the best epoch's."""
    return kind if weights == "final" else f"{kind}-{weights}"


@holding(lambda a: a["run"], "eval", create=False)
def eval_run(
    run: str | Path,
    *,
    suite: str = "madry",
    sources: dict[str, str | Path] | None = None,
    norm: str | None = None,
    eps: float | None = None,
    limit: int | None = None,
    max_restarts: int | None = None,
    mode: str | None = None,
    batch_size: int = 500,
    seed: int = 0,
    root: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    restart: bool = False,
    device: str = "cpu",
    weights: str = "final",
    overwrite: bool = False,
) -> Evaluation:
    """Evaluate a run's model on its dataset's test split; write ``eval-SUITE.{json,md}`` into the run.

    The evaluation is resumable: its progress is saved after every batch in
    ``eval-SUITE.progress.json`` inside the run, an interrupted evaluation started
    again with the same arguments continues from there, and the file is deleted
    when the evaluation completes.

    Args:
        run: run folder made by ``train_run``.
        suite: "madry" (the paper's rows), "standard" (AutoAttack-grade: APGD-CE, APGD-T, FAB-T, Square) or "fast".
        sources: transfer sources, table name -> run folder.
        norm / eps: threat model (default: the run's training threat).
        limit: evaluate the first N test images.
        max_restarts: cap on restarts.
        mode: "independent" or "cascade" (default: independent for madry, cascade otherwise).
        batch_size / seed / root / echo / progress: as in ``evaluate`` and ``ro.data.load``.
        restart: discard the saved progress of an interrupted evaluation and start over.
        device: "cpu", "auto" (CUDA when available) or a torch device string.
        weights: "final" or "best" (see ``load_run``); the best epoch's results go to ``eval-SUITE-best.*``.
        overwrite: replace an ``eval-SUITE.json`` made with other parameters (threat, n, attacks and
            their restarts, sources, mode, seed, batch size); without it such a file is kept and
            FileExistsError is raised before anything runs.

    Raises:
        FileExistsError: the run holds another evaluation of this suite and ``overwrite`` is False.
        robustopt._runfolder.RunFolderBusyError: another process holds the run folder.
    """
    run = Path(run)
    ctx = distributed.setup()  # under torchrun: every rank attacks its share of the batches, rank 0 writes
    echo = echo if ctx.is_main else _quiet
    dev = ctx.device(resolve_device(device))
    model, info = load_run(run, weights)
    model.to(dev)
    stem = _result_stem(f"eval-{suite}", weights)
    threat = threat_of(norm or info["norm"], info["eps"] if eps is None else eps)
    check_eps(threat.norm, threat.eps, datasets.info(info["data"]).shape)  # before any other complaint
    source_models = {name: load_run(path)[0].to(dev) for name, path in (sources or {}).items()}
    for name, source in source_models.items():  # a source for other images fails late and obscurely
        check_input_shape(f"transfer source {name} ({sources[name]}), a {source.config.name} model",
                          source.config.input_size, info["data"], datasets.info(info["data"]).shape)
    preset = "cifar10" if info["data"] == "cifar10" else "mnist"
    if suite == "madry":
        attacks = suites.madry(threat, source_models, preset=preset, max_restarts=max_restarts)
    elif suite in ("standard", "fast"):
        attacks = suites.standard(threat, version=suite, seed=seed)
        mode = mode or "cascade"
    else:
        raise ValueError(f"unknown suite {suite!r}; available: madry, standard, fast.")
    x, y = _test_images(info["data"], limit, root, echo)
    x, y = x.to(dev), y.to(dev)
    mode = mode or "independent"
    request = {"weights": weights, "threat": str(threat), "n": len(x), "mode": mode, "seed": seed,
               "batch_size": batch_size, "attacks": [[a.name, a.steps, a.restarts, a.source] for a in attacks],
               "sources": {k: _relative(v, run) for k, v in (sources or {}).items()}}
    result = run / f"{stem}.json"
    ctx.run_on_main(lambda: refuse_replacement(result, request, saved_request(result), overwrite=overwrite,
                                               what="evaluation"))
    progress_file = run / f"{stem}.progress.json"
    if restart and ctx.is_main:
        progress_file.unlink(missing_ok=True)
    elif progress_file.exists() and not restart:
        echo(f"Resuming the interrupted evaluation saved in {progress_file} "
             "(`robustopt eval --restart` / restart=True starts over).")
    try:
        ev = evaluate(model, (x, y), attacks, batch_size=batch_size, seed=seed, mode=mode,
                      progress=progress, meta={"run": str(run), "weights": weights, "data": info["data"], "sources": {k: str(v) for k, v in (sources or {}).items()},
                                               "request": request},
                      progress_file=progress_file)
    except ValueError as err:
        if str(err).startswith(str(progress_file)):  # unusable or foreign progress file
            raise ValueError(f"{err} `robustopt eval --restart` (restart=True) discards it.") from err
        raise
    reference = suites.MADRY_REFERENCE[preset] if suite == "madry" and threat.norm == "Linf" and abs(threat.eps - (0.3 if preset == "mnist" else 8 / 255)) < 1e-9 else None
    echo(ev.table(reference=reference))
    if ctx.is_main:
        ev.to_json(result)
        ev.to_markdown(run / f"{stem}.md", reference=reference)
    ctx.barrier()
    return ev


@holding(lambda a: a["run"], "sweep", create=False)
def sweep_run(
    run: str | Path,
    *,
    norm: str = "linf",
    eps_values: list[float],
    steps: int = 40,
    limit: int | None = 1000,
    batch_size: int = 500,
    seed: int = 0,
    root: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    device: str = "cpu",
    independent: bool = False,
    weights: str = "final",
    overwrite: bool = False,
) -> SweepCurve:
    """Robust accuracy of a run's model over ``eps_values`` (monotone cascade, PGD with ``steps``).

    Writes ``sweep-NORM.json``, ``sweep-NORM.md`` and, when matplotlib is installed, ``sweep-NORM.png``
    (with the training eps marked when the norm matches the training norm). With ``independent=True``
    every eps attacks all clean-correct examples (the cascade's reference cost) and the files are
    ``sweep-NORM-independent.*``; with ``weights="best"`` (see ``load_run``) they end in ``-best``.
    A file made with other parameters (eps grid, steps, n, seed, batch size) is replaced only with
    ``overwrite=True``; otherwise FileExistsError is raised before anything runs.
    """
    run = Path(run)
    ctx = distributed.setup()  # under torchrun: every rank attacks its share of the batches, rank 0 writes
    echo = echo if ctx.is_main else _quiet
    dev = ctx.device(resolve_device(device))
    model, info = load_run(run, weights)
    model.to(dev)
    check_grid_size(len(eps_values))  # the request itself first, then its conflicts with files on disk
    if eps_values and all(isinstance(e, (int, float)) for e in eps_values):  # sweep() explains other values
        check_eps(norm, max(eps_values), datasets.info(info["data"]).shape)
    x, y = _test_images(info["data"], limit, root, echo)
    x, y = x.to(dev), y.to(dev)
    stem = _result_stem(f"sweep-{norm}-independent" if independent else f"sweep-{norm}", weights)
    request = {"weights": weights, "norm": norm, "eps": [float(e) for e in eps_values], "steps": steps, "n": len(x),
               "seed": seed, "batch_size": batch_size}
    result = run / f"{stem}.json"
    ctx.run_on_main(lambda: refuse_replacement(result, request, saved_request(result), overwrite=overwrite,
                                               what="sweep"))
    threat_cls = THREATS[norm]
    attack = lambda t: PGD(t, steps=steps, seed=seed)  # noqa: E731  (step 2.5 * eps / steps at every eps)
    curve = sweep(model, (x, y), threat_cls, eps_values, attack=attack, batch_size=batch_size, seed=seed,
                  progress=progress, meta={"run": str(run), "weights": weights, "data": info["data"], "request": request},
                  independent=independent)
    echo(curve.table())
    if ctx.is_main:
        curve.to_json(result)
        atomic_write_text(run / f"{stem}.md", curve.table("markdown"))
        try:
            curve.plot(run / f"{stem}.png", train_eps=info["eps"] if info["norm"] == norm else None)
        except ImportError as err:
            echo(f"no plot: {err}")
    ctx.barrier()
    return curve


def _quiet(_: str) -> None:
    """The echo of ranks other than 0 under torchrun."""


def _relative(path: str | Path, run: Path) -> str:
    """``path`` relative to the run folder: the same wherever the command runs from."""
    return os.path.relpath(Path(path).resolve(), run.resolve())


@dataclass(frozen=True)
class ExperimentPreset:
    """Budget of the whole experiment: four models, the attack table, and optionally more.

    The attack table is the madry suite on model A (white-box, and transferred from A', B and
    A_nat). ``standard``, ``sweeps`` and ``report`` add the AutoAttack-grade suite on A, robust
    accuracy against eps, and the Markdown/HTML report, as ``robustopt reproduce`` does.
    Training is L-inf at ``eps`` with ``method`` for A and A' ("natural" for B and A_nat);
    ``model_b=None`` skips model B (the paper's CIFAR-10 table has none).
    """

    model_a: str
    model_b: str | None
    eps: float
    epochs_robust: int
    epochs_natural: int
    attack_steps: int
    attack_step_size: float
    batch_size: int
    lr: float
    train_size: int | None
    eval_size: int | None
    max_restarts: int | None
    eps_warmup_epochs: int = 0
    data: str = "mnist-mini"
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    augment: str = "none"
    device: str = "cpu"
    standard: str | None = None  # "standard" or "fast": suites.standard on A, as a cascade
    standard_size: int | None = None
    sweeps: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (norm, eps grid) on A
    sweep_size: int | None = 1000
    sweep_steps: int = 40
    report: bool = False
    method: str = "pgd"

    def summary(self) -> str:
        """The budget in one readable line (what ``robustopt demo`` / ``reproduce`` print)."""
        attack = f"{self.attack_steps} x {self.attack_step_size:.3g} at eps {self.eps:.4g}"
        if self.eps_warmup_epochs:
            attack += f", eps ramped over {self.eps_warmup_epochs} epochs"
        natural = f"B = {self.model_b}, A_nat = {self.model_a}" if self.model_b else f"A_nat = {self.model_a}"
        size = lambda n: "all" if n is None else f"{n:,}"  # noqa: E731
        parts = [
            f"A, A' = {self.model_a}, {self.epochs_robust} epochs of {self.method} ({attack})",
            f"{natural}, {self.epochs_natural} epochs natural",
            f"batch {self.batch_size}, {self.optimizer} lr {self.lr:g}, {size(self.train_size)} training images",
            f"madry suite on {size(self.eval_size)} test images"
            + (f", at most {self.max_restarts} restarts" if self.max_restarts else ""),
        ]
        if self.standard:
            parts.append(f"{self.standard} suite on {size(self.standard_size)}")
        if self.sweeps:
            grids = ", ".join(f"{norm} ({len(grid)} eps)" for norm, grid in self.sweeps)
            parts.append(f"sweeps {grids} on {size(self.sweep_size)}")
        return "; ".join(parts)


def _grid(stop: float, step: float) -> tuple[float, ...]:
    return tuple(round(i * step, 10) for i in range(int(round(stop / step)) + 1))


_MNIST_SWEEPS = (("linf", _grid(0.5, 0.05)), ("l2", _grid(8.0, 0.5)))  # the paper's Figure 2 ranges
_CIFAR_SWEEPS = (("linf", _grid(30 / 255, 2 / 255)), ("l2", _grid(100 / 255, 10 / 255)))
_CIFAR_CPU_SWEEPS = (("linf", _grid(16 / 255, 2 / 255)),)

# Sized to finish in a few minutes on a 2-core CPU: the fast small CNN as A, 5-step PGD
# training with eps ramped over 3 epochs, 500 test images, at most 2 restarts.
# The full-MNIST recipe is bench/full_mnist.sh (docs/results.md).
DEMO = ExperimentPreset(
    model_a="small-cnn", model_b="tramer-b", eps=0.3, epochs_robust=6, epochs_natural=3,
    attack_steps=5, attack_step_size=0.1, batch_size=50, lr=1e-3, train_size=None,
    eval_size=500, max_restarts=2, eps_warmup_epochs=3,
)

# `robustopt reproduce NAME --budget B`. demo: DEMO plus the standard suite, sweeps and the report
# (minutes, offline). cpu: full MNIST with the paper's model A at the budget of bench/full_mnist.sh
# (5 epochs of 5-step PGD; about 1 h 15 min on 2 cores, most of it training A and A'). paper: the
# paper's recipes (MNIST: 40 x 0.01, batch 50, Adam 1e-4, ~100k steps; CIFAR-10: 7 x 2/255, batch
# 128, SGD 0.1 with x0.1 at 50% and 75%, ~80k steps), all test images, 20 restarts: for a GPU.
REPRODUCE: dict[str, dict[str, ExperimentPreset]] = {
    "madry-mnist": {
        "demo": dataclasses.replace(DEMO, standard="standard", standard_size=500, sweeps=_MNIST_SWEEPS, sweep_size=500,
                                   report=True),
        "cpu": ExperimentPreset(
            model_a="madry-mnist", model_b="tramer-b", eps=0.3, epochs_robust=5, epochs_natural=2, attack_steps=5,
            attack_step_size=0.1, batch_size=100, lr=1e-3, train_size=None, eval_size=1000, max_restarts=2,
            eps_warmup_epochs=3, data="mnist", standard="fast", standard_size=1000, sweeps=_MNIST_SWEEPS,
            sweep_size=500, report=True),
        "paper": ExperimentPreset(
            model_a="madry-mnist", model_b="tramer-b", eps=0.3, epochs_robust=85, epochs_natural=10, attack_steps=40,
            attack_step_size=0.01, batch_size=50, lr=1e-4, train_size=None, eval_size=None, max_restarts=None,
            data="mnist", device="auto", standard="standard", sweeps=_MNIST_SWEEPS, sweep_size=None, report=True),
    },
    "madry-cifar10": {
        "paper": ExperimentPreset(
            model_a="wrn-34-10", model_b=None, eps=8 / 255, epochs_robust=205, epochs_natural=205, attack_steps=7,
            attack_step_size=2 / 255, batch_size=128, lr=0.1, train_size=None, eval_size=None, max_restarts=None,
            data="cifar10", optimizer="sgd", momentum=0.9, weight_decay=2e-4, lr_schedule="step", augment="crop-flip",
            device="auto",
            standard="standard", sweeps=_CIFAR_SWEEPS, sweep_size=1000, report=True),
        # The CPU network (resnet9, 1.6M parameters) with N-FGSM (de Jorge et al. 2022), cyclic LR and
        # crop-flip: 10 epochs of A and A' and 5 of A_nat, docs/results.md for the times.
        "cpu": ExperimentPreset(
            model_a="resnet9", model_b=None, eps=8 / 255, method="n-fgsm", epochs_robust=10, epochs_natural=5,
            attack_steps=1, attack_step_size=8 / 255, batch_size=128, lr=0.2, train_size=None, eval_size=None,
            max_restarts=None, data="cifar10", optimizer="sgd", momentum=0.9, weight_decay=5e-4,
            lr_schedule="cyclic", augment="crop-flip", standard="standard", standard_size=1000,
            sweeps=_CIFAR_CPU_SWEEPS, sweep_size=1000, report=True),
    },
}


# `robustopt train --preset NAME`: train_run arguments (explicit options override them).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # Fast-AT (Wong, Rice & Kolter 2020): preact-resnet18, 15 epochs of FGSM-RS (step 1.25 eps), SGD with
    # the one-cycle LR 0 -> 0.2 at 40% of the epochs -> 0, batch 128, crop-flip, mixed precision: a GPU recipe.
    "fast-at-cifar10": dict(
        data="cifar10", model="preact-resnet18", method="fgsm-rs", norm="linf", eps=8 / 255, epochs=15,
        batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=5e-4, lr_schedule="piecewise",
        augment="crop-flip", amp=True, device="cuda"),
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
    Finished models in ``out`` are reused, so an interrupted experiment continues where it stopped;
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
    preset = dataclasses.replace(preset, device=device) if device else preset
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    echo(f"robustopt: Madry et al. (2018) experiment on {data}, eps={preset.eps:.4g} (L-inf), run folder {out}")
    echo(f"budget: {preset.summary()}")
    common = dict(data=data, train_size=preset.train_size, root=root, progress=progress, batch_size=preset.batch_size,
                  lr=preset.lr, optimizer=preset.optimizer, momentum=preset.momentum,
                  weight_decay=preset.weight_decay, lr_schedule=preset.lr_schedule, augment=preset.augment,
                  device=preset.device,
                  norm="linf", eps=preset.eps, attack_steps=preset.attack_steps,
                  attack_step_size=preset.attack_step_size)
    plan = {
        "A": dict(model=preset.model_a, method=preset.method, epochs=preset.epochs_robust, seed=seed,
                  eps_warmup_epochs=preset.eps_warmup_epochs),
        "A'": dict(model=preset.model_a, method=preset.method, epochs=preset.epochs_robust, seed=seed + 1,
                   eps_warmup_epochs=preset.eps_warmup_epochs),
        "B": dict(model=preset.model_b, method="natural", epochs=preset.epochs_natural, seed=seed),
        "A_nat": dict(model=preset.model_a, method="natural", epochs=preset.epochs_natural, seed=seed),
    }
    if preset.model_b is None:
        del plan["B"]
    folders = {name: out / name.replace("'", "_prime") for name in plan}
    if only is not None:
        unknown = sorted(set(only) - set(plan))
        if unknown:
            raise ValueError(f"only names models {unknown} that this experiment does not train; choose from {list(plan)}.")
    for name, recipe in plan.items():
        if only is not None and name not in only:
            continue
        folder = folders[name]
        if (folder / RUN_FILE).is_file():
            echo(f"[{name}] reusing {folder}")
            continue
        echo(f"[{name}] training {recipe['model']} ({recipe['method']}) -> {folder}")
        t0 = time.perf_counter()
        train_run(folder, resume=folder.exists(), **common, **recipe)
        seconds[f"train {name}"] = time.perf_counter() - t0
        echo(f"[{name}] done in {seconds[f'train {name}']:.0f} s")
    if only is not None:
        return None

    echo(f"[eval] madry suite on {preset.eval_size or 'all'} test images"
         + (f", restarts capped at {preset.max_restarts} (the paper uses 20)" if preset.max_restarts else ""))
    t0 = time.perf_counter()
    ev = eval_run(folders["A"], sources={k: v for k, v in folders.items() if k != "A"}, limit=preset.eval_size,
                  max_restarts=preset.max_restarts, root=root, echo=lambda s: None, progress=progress, seed=seed,
                  device=preset.device, overwrite=True)
    seconds["eval madry"] = time.perf_counter() - t0
    paper = "cifar10" if data == "cifar10" else "mnist"
    reference = suites.MADRY_REFERENCE[paper]
    table = ev.table(reference=reference)
    echo("")
    echo(table)
    echo(f"The 'Paper' column is Madry et al.'s Table {1 if paper == 'mnist' else 2} (full {paper.upper()}, "
         "the paper's training budget, 20 restarts); ours is measured now, with the budget above.")
    atomic_write_text(out / "table.md", ev.table("markdown", reference=reference))
    ev.to_json(out / "table.json")

    if preset.standard:
        echo(f"[eval] {preset.standard} suite (APGD-CE, APGD-T{', FAB-T, Square' if preset.standard == 'standard' else ''};"
             f" cascade) on {preset.standard_size or 'all'} test images")
        t0 = time.perf_counter()
        worst = eval_run(folders["A"], suite=preset.standard, limit=preset.standard_size, root=root, echo=echo,
                         progress=progress, seed=seed, device=preset.device, overwrite=True)
        seconds[f"eval {preset.standard}"] = time.perf_counter() - t0
        echo(f"robust accuracy of A under the {preset.standard} suite: {100 * worst.robust_accuracy:.1f}%")
    for norm, grid in preset.sweeps:
        echo(f"[sweep] {norm}, eps {grid[0]:.4g} to {grid[-1]:.4g} ({len(grid)} values), "
             f"PGD-{preset.sweep_steps} on {preset.sweep_size or 'all'} test images")
        t0 = time.perf_counter()
        sweep_run(folders["A"], norm=norm, eps_values=list(grid), steps=preset.sweep_steps, limit=preset.sweep_size,
                  root=root, echo=echo, progress=progress, seed=seed, device=preset.device, overwrite=True)
        seconds[f"sweep {norm}"] = time.perf_counter() - t0
    written = [out / "table.md", out / "table.json"]
    if preset.report:
        from robustopt.evaluation.report import write_report

        t0 = time.perf_counter()
        written += list(write_report([folders["A"]], out=out, root=root, overwrite=True))
        seconds["report"] = time.perf_counter() - t0

    seconds["total"] = time.perf_counter() - start
    summary = {"preset": dataclasses.asdict(preset), "data": data, "seed": seed, "seconds": seconds,
               "machine": platform.platform(), "torch": torch.__version__, "runs": {k: str(v) for k, v in folders.items()}}
    atomic_write_json(out / "experiment.json", summary)
    echo(f"written: {', '.join(str(p) for p in written)} ({seconds['total']:.0f} s in all)")
    return ev
