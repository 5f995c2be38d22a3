"""Runs on disk: train a model into a run folder, evaluate a run, and the paper's whole experiment.

A run folder holds ``run.json`` (dataset, model, threat), the training log and
checkpoint written by ``ro.training.fit``, and evaluation results
(``eval-SUITE.json`` / ``.md``). The CLI commands ``train``, ``eval`` and
``demo`` are thin wrappers around the functions here.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from robustopt import checkpoint, data as datasets, models
from robustopt._io import atomic_write_json, atomic_write_text
from robustopt.attacks import PGD
from robustopt.evaluation import Evaluation, SweepCurve, evaluate, suites, sweep
from robustopt.threat import L1, L2, Linf, ThreatModel
from robustopt.training import TrainConfig, fit

__all__ = ["ExperimentPreset", "DEMO", "train_run", "eval_run", "sweep_run", "load_run", "run_madry_experiment",
           "threat_of"]

THREATS: dict[str, type[ThreatModel]] = {"linf": Linf, "l2": L2, "l1": L1}
RUN_FILE = "run.json"


def threat_of(norm: str, eps: float) -> ThreatModel:
    """Threat model from a CLI norm name ("linf", "l2", "l1") and eps."""
    try:
        return THREATS[norm.lower()](eps)
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(THREATS)}.") from None


def train_run(
    out: str | Path,
    *,
    data: str = "mnist",
    model: str = "madry-mnist",
    train_size: int | None = None,
    resume: bool = False,
    root: str | Path | None = None,
    progress: bool = True,
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
        **config: ``TrainConfig`` fields (method, norm, eps, epochs, attack_steps, ...).

    Returns:
        The run folder.
    """
    out = Path(out)
    x, y = datasets.load(data, split="train", root=root)
    if train_size is not None:
        if train_size < 1:
            raise ValueError(f"train_size must be >= 1, got {train_size}.")
        x, y = x[:train_size], y[:train_size]
    info = datasets.info(data)
    cfg = TrainConfig(**config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the seed covers the initial weights too
        net = models.create(model, num_classes=info.num_classes, mean=info.mean, std=info.std)
    run_info = {"data": data, "model": model, "train_size": train_size, "norm": cfg.norm, "eps": cfg.eps,
                "method": cfg.method, "seed": cfg.seed}
    out.mkdir(parents=True, exist_ok=True)
    fit(net, (x, y), config=cfg, out=out, resume=resume, progress=progress)
    atomic_write_json(out / RUN_FILE, run_info)
    return out


def load_run(run: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load the trained model of a run folder and its ``run.json``."""
    run = Path(run)
    info_path = run / RUN_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{run} is not a finished robustopt run (no {RUN_FILE}); train it with `robustopt train --out {run}`.")
    info = json.loads(info_path.read_text())
    model, _ = checkpoint.load(run / "model")
    return model.eval(), info


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
) -> Evaluation:
    """Evaluate a run's model on its dataset's test split; write ``eval-SUITE.{json,md}`` into the run.

    The evaluation is resumable: its progress is saved after every batch in
    ``eval-SUITE.progress.json`` inside the run, an interrupted evaluation started
    again with the same arguments continues from there, and the file is deleted
    when the evaluation completes.

    Args:
        run: run folder made by ``train_run``.
        suite: "madry" (the paper's rows), "standard" (AutoAttack-grade: APGD-CE, APGD-T, Square) or "fast".
        sources: transfer sources, table name -> run folder.
        norm / eps: threat model (default: the run's training threat).
        limit: evaluate the first N test images.
        max_restarts: cap on restarts.
        mode: "independent" or "cascade" (default: independent for madry, cascade otherwise).
        batch_size / seed / root / echo / progress: as in ``evaluate`` and ``ro.data.load``.
        restart: discard the saved progress of an interrupted evaluation and start over.
    """
    run = Path(run)
    model, info = load_run(run)
    threat = threat_of(norm or info["norm"], info["eps"] if eps is None else eps)
    source_models = {name: load_run(path)[0] for name, path in (sources or {}).items()}
    preset = "cifar10" if info["data"] == "cifar10" else "mnist"
    if suite == "madry":
        attacks = suites.madry(threat, source_models, preset=preset, max_restarts=max_restarts)
    elif suite in ("standard", "fast"):
        attacks = suites.standard(threat, version=suite, seed=seed)
        mode = mode or "cascade"
    else:
        raise ValueError(f"unknown suite {suite!r}; available: madry, standard, fast.")
    x, y = datasets.load(info["data"], split="test", root=root)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    progress_file = run / f"eval-{suite}.progress.json"
    if restart:
        progress_file.unlink(missing_ok=True)
    elif progress_file.exists():
        echo(f"Resuming the interrupted evaluation saved in {progress_file} "
             "(`robustopt eval --restart` / restart=True starts over).")
    try:
        ev = evaluate(model, (x, y), attacks, batch_size=batch_size, seed=seed, mode=mode or "independent",
                      progress=progress, meta={"run": str(run), "data": info["data"], "sources": {k: str(v) for k, v in (sources or {}).items()}},
                      progress_file=progress_file)
    except ValueError as err:
        if str(err).startswith(str(progress_file)):  # unusable or foreign progress file
            raise ValueError(f"{err} `robustopt eval --restart` (restart=True) discards it.") from err
        raise
    reference = suites.MADRY_REFERENCE[preset] if suite == "madry" and threat.norm == "Linf" and abs(threat.eps - (0.3 if preset == "mnist" else 8 / 255)) < 1e-9 else None
    echo(ev.table(reference=reference))
    ev.to_json(run / f"eval-{suite}.json")
    ev.to_markdown(run / f"eval-{suite}.md", reference=reference)
    return ev


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
) -> SweepCurve:
    """Robust accuracy of a run's model over ``eps_values`` (monotone cascade, PGD with ``steps``).

    Writes ``sweep-NORM.json``, ``sweep-NORM.md`` and, when matplotlib is installed, ``sweep-NORM.png``
    (with the training eps marked when the norm matches the training norm).
    """
    run = Path(run)
    model, info = load_run(run)
    x, y = datasets.load(info["data"], split="test", root=root)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    threat_cls = THREATS[norm]
    attack = lambda t: PGD(t, steps=steps, seed=seed)  # noqa: E731  (step 2.5 * eps / steps at every eps)
    curve = sweep(model, (x, y), threat_cls, eps_values, attack=attack, batch_size=batch_size, seed=seed,
                  progress=progress, meta={"run": str(run), "data": info["data"]})
    echo(curve.table())
    curve.to_json(run / f"sweep-{norm}.json")
    atomic_write_text(run / f"sweep-{norm}.md", curve.table("markdown"))
    try:
        curve.plot(run / f"sweep-{norm}.png", train_eps=info["eps"] if info["norm"] == norm else None)
    except ImportError as err:
        echo(f"no plot: {err}")
    return curve


@dataclass(frozen=True)
class ExperimentPreset:
    """Budget of the whole experiment (four models and the attack table)."""

    model_a: str
    model_b: str
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


# Sized to finish in a few minutes on a 2-core CPU: the fast small CNN as A, 5-step PGD
# training with eps ramped over 3 epochs, 500 test images, at most 2 restarts.
# The full-MNIST recipe is bench/full_mnist.sh (docs/results.md).
DEMO = ExperimentPreset(
    model_a="small-cnn", model_b="tramer-b", eps=0.3, epochs_robust=6, epochs_natural=3,
    attack_steps=5, attack_step_size=0.1, batch_size=50, lr=1e-3, train_size=None,
    eval_size=500, max_restarts=2, eps_warmup_epochs=3,
)


def run_madry_experiment(
    preset: ExperimentPreset,
    *,
    out: str | Path,
    data: str = "mnist-mini",
    seed: int = 0,
    root: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> Evaluation:
    """Madry et al.'s experiment: train A and A' (PGD-AT), B and A_nat (natural); attack A; print the table.

    Finished models in ``out`` are reused, so an interrupted experiment continues where it stopped.
    """
    out = Path(out)
    start = time.perf_counter()
    echo(f"robustopt: Madry et al. (2018) experiment on {data}, eps={preset.eps} (L-inf), run folder {out}")
    echo(f"budget: {preset}")
    common = dict(data=data, train_size=preset.train_size, root=root, progress=progress, batch_size=preset.batch_size,
                  lr=preset.lr, optimizer="adam", norm="linf", eps=preset.eps, attack_steps=preset.attack_steps,
                  attack_step_size=preset.attack_step_size)
    plan = {
        "A": dict(model=preset.model_a, method="pgd", epochs=preset.epochs_robust, seed=seed,
                  eps_warmup_epochs=preset.eps_warmup_epochs),
        "A'": dict(model=preset.model_a, method="pgd", epochs=preset.epochs_robust, seed=seed + 1,
                   eps_warmup_epochs=preset.eps_warmup_epochs),
        "B": dict(model=preset.model_b, method="natural", epochs=preset.epochs_natural, seed=seed),
        "A_nat": dict(model=preset.model_a, method="natural", epochs=preset.epochs_natural, seed=seed),
    }
    folders = {name: out / name.replace("'", "_prime") for name in plan}
    for name, recipe in plan.items():
        folder = folders[name]
        if (folder / RUN_FILE).is_file():
            echo(f"[{name}] reusing {folder}")
            continue
        echo(f"[{name}] training {recipe['model']} ({recipe['method']}) -> {folder}")
        t0 = time.perf_counter()
        train_run(folder, resume=folder.exists(), **common, **recipe)
        echo(f"[{name}] done in {time.perf_counter() - t0:.0f} s")

    echo(f"[eval] madry suite on {preset.eval_size or 'all'} test images"
         + (f", restarts capped at {preset.max_restarts} (the paper uses 20)" if preset.max_restarts else ""))
    ev = eval_run(folders["A"], sources={k: folders[k] for k in ("A'", "B", "A_nat")}, limit=preset.eval_size,
                  max_restarts=preset.max_restarts, root=root, echo=lambda s: None, progress=progress, seed=seed)
    reference = suites.MADRY_REFERENCE["mnist"]
    table = ev.table(reference=reference)
    echo("")
    echo(table)
    echo("The 'Paper' column is Madry et al.'s Table 1 (full MNIST, 100k training steps, 20 restarts);"
         " ours is measured now, with the budget above.")
    summary = {"preset": preset.__dict__, "data": data, "seed": seed, "seconds": time.perf_counter() - start,
               "machine": platform.platform(), "torch": torch.__version__, "runs": {k: str(v) for k, v in folders.items()}}
    atomic_write_json(out / "experiment.json", summary)
    atomic_write_text(out / "table.md", ev.table("markdown", reference=reference))
    ev.to_json(out / "table.json")
    echo(f"written: {out / 'table.md'}, {out / 'table.json'} ({time.perf_counter() - start:.0f} s in all)")
    return ev
