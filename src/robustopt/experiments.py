"""The pipeline: train into a run folder, evaluate and sweep a run, report on runs, the paper's experiment.

The CLI commands ``train``, ``eval``, ``sweep``, ``report``, ``reproduce`` and ``demo`` are thin
wrappers around the functions here, and the presets they name are here too (``DEMO``,
``REPRODUCE``, ``TRAIN_PRESETS``). What a run folder holds, how a run is loaded and how results
are named and protected from silent replacement is :mod:`robustopt.runs`'s.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from robustopt import data as datasets, distributed, models
from robustopt._checks import check_count, check_eps, check_grid_size, check_input_shape
from robustopt._device import resolve_device
from robustopt._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from robustopt._lock import hold, holding
from robustopt._progress import format_seconds
from robustopt.attacks import PGD
from robustopt.attacks.base import eval_mode, predict
from robustopt.data import formats as data_formats
from robustopt.evaluation import Evaluation, Finding, SweepCurve, audit, evaluate, report, suites, sweep
from robustopt.evaluation.records import budget_table
from robustopt.evaluation.evaluate import saved_progress
from robustopt.runs import (
    REPORT_HTML, REPORT_MD, RUN_FILE, adds_rows, check_run, load_run, read_config, read_evaluations, read_info, read_log,
    read_sweeps, refuse_replacement, refuse_restart, refuse_resume_of_nothing, relative, report_request, request_line,
    result_stem, resume_point, saved_request, training_started,
)
from robustopt.threat import ThreatModel, by_name, threat_from_name
from robustopt.training import TrainConfig, TrainResult, fit
from robustopt.training.methods import grad_evals_per_example

__all__ = ["ExperimentPreset", "DEMO", "REPRODUCE", "TRAIN_PRESETS", "reproduce", "train_run", "eval_run", "sweep_run",
           "write_report", "run_madry_experiment", "AUDIT_SIZE", "GALLERY_SIZE", "GALLERY_STEPS"]

threat_of = threat_from_name  # the name bench/harness.py imports; remove once it uses robustopt.threat
PathLike = str | os.PathLike[str]


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
        resume: continue the interrupted run in ``out``, which must hold one (its config.json or a checkpoint);
            without it, ``out`` must hold no training checkpoint.
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
            (e.g. epochs < 1, an eps beyond the [0, 1] box, a device this machine lacks) or a bad ``train_size``.
        FileExistsError: ``out`` holds a training checkpoint and ``resume`` is False.
        FileNotFoundError: ``resume`` is True and ``out`` holds no training.
    """
    out = Path(out)
    info = datasets.info(data)
    _check_model_fits_data(model, data)
    cfg = TrainConfig(**config)
    check_eps(cfg.norm, cfg.eps, info.shape)  # before anything is printed or loaded (fit warns above the usual)
    if resolve_device(cfg.device).type != "cuda" and cfg.amp:
        raise ValueError(f"--amp (amp=True) needs a CUDA device, got --device {cfg.device}; leave --amp out on a CPU.")
    (refuse_resume_of_nothing if resume else refuse_restart)(out)
    if train_size is not None:
        check_count("train_size (--train-size)", train_size)
    x, y = datasets.load(data, split="train", root=root)
    if train_size is not None:
        if train_size > len(x):  # else run.json would record a size the run did not train on
            raise ValueError(f"train_size (--train-size) {train_size:,} exceeds the {len(x):,} training images of "
                             f"{data}; pass at most {len(x):,}, or leave it out for all of them.")
        x, y = x[:train_size], y[:train_size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the seed covers the initial weights too
        net = models.create(model, num_classes=info.num_classes, mean=info.mean, std=info.std)
    run_info = {"data": data, "model": model, "train_size": train_size, "norm": cfg.norm, "eps": cfg.eps,
                "method": cfg.method, "seed": cfg.seed}
    say = echo if echo is not None and distributed.setup().is_main else _quiet
    done = 0  # epochs already trained
    if resume:
        message, done = resume_point(out, cfg.epochs)
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


def _train_plan(model: str, data: str, cfg: TrainConfig, n: int, out: Path, done: int = 0) -> str:
    """One line: what ``train_run`` will do (the epochs after ``done``) and its cost in image-gradient evaluations."""
    n_val = cfg.validation_size(n)
    n_train = n - n_val
    steps = math.ceil(n_train / cfg.batch_size)
    what = f"{cfg.method} training of {model} on {data}"
    if cfg.method != "natural":
        what += f" at {threat_from_name(cfg.norm, cfg.eps)}"
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
                  f"{100 * robust:.1f}% (PGD-{cfg.val_attack_steps} at {threat_from_name(cfg.norm, cfg.eps)})")
        lines.append(f"final validation accuracy: clean {100 * last['val_clean_acc']:.1f}%, robust {robust}")
    lines.append(f"next: robustopt eval {shlex.quote(str(out))}   "
                 "(the paper's attack table; --suite standard for the AutoAttack-grade worst case)")
    return lines


def _attack_setup(run: str | Path, weights: str, device: str) -> tuple[
        Path, distributed.Context, torch.device, nn.Module, dict[str, Any]]:
    """For ``eval_run`` and ``sweep_run``: the run folder, the distributed context, the device, the model on it
    and ``run.json``. Under torchrun every rank attacks its share of the batches and rank 0 writes."""
    ctx = distributed.setup()
    dev = ctx.device(resolve_device(device))
    model, info = load_run(run, weights)
    missing = [k for k in ("data", "norm", "eps") if k not in info]
    if missing:
        raise ValueError(f"{Path(run) / RUN_FILE} has no {', '.join(missing)}: it does not describe a trained run; "
                         "train it again (robustopt train --out RUN).")
    return Path(run), ctx, dev, model.to(dev), info


def _data_info(info: dict[str, Any]) -> datasets.DatasetInfo:
    """The dataset entry of a run's ``run.json``: a registry dataset, or a data SPEC with its options."""
    if data_formats.is_spec(info["data"]):
        return datasets.spec_info(info["data"], **info.get("data_options", {}))
    return datasets.info(info["data"])


def _test_images(info: dict[str, Any], limit: int | None, root: str | Path | None, echo: Callable[[str], None],
                 stream: torch.device | None = None) -> tuple[torch.Tensor | data_formats.Streamed, torch.Tensor]:
    """The first ``limit`` (>= 1) test images of a run's data, all when None; says so when there are fewer.

    A data SPEC comes as tensors too, or with ``stream`` (a device) as a ``Streamed`` that reads
    each batch when it is attacked, and the labels on that device.
    """
    data = info["data"]
    if limit is not None:
        check_count("limit (--n)", limit)
    if data_formats.is_spec(data):
        ds = datasets.load(data, **info.get("data_options", {}))
        if limit is not None and limit > len(ds):
            echo(f"note: --n {limit:,} is more than the {len(ds):,} images of {data}: all {len(ds):,} are used.")
        if stream is None:
            return data_formats.first(ds, limit)
        x = data_formats.Streamed(ds, stream, indices=range(len(ds) if limit is None else min(limit, len(ds))))
        return x, x.labels()
    x, y = datasets.load(data, split="test", root=root)
    if limit is not None and limit > len(x):
        echo(f"note: --n {limit:,} is more than the {len(x):,} test images of {data}: all {len(x):,} are used.")
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _sweep_stem(norm: str, independent: bool, weights: str) -> str:
    """The result name of ``sweep_run`` (``sweep-NORM``, ``-independent``, ``-best``)."""
    return result_stem("sweep", f"{norm}-independent" if independent else norm, weights)


@holding(lambda a: a["run"], "eval", create=False, result=lambda a: result_stem("eval", a["suite"], a["weights"]))
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
        suite: "madry" (the paper's rows), "standard" (AutoAttack-grade: APGD-CE, APGD-T, FAB-T, Square), "fast"
            or "adaptive" (the standard attacks scheduled by evidence; the budget per stage is printed too).
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
            FileExistsError is raised before anything runs. A file whose request this one only
            extends with more rows (more transfer sources, say) is kept and completed instead: its
            rows are not computed again.

    Raises:
        FileExistsError: the run holds another evaluation of this suite and ``overwrite`` is False.
        robustopt.runs.RunFolderBusyError: another process holds the run folder.
    """
    run, ctx, dev, model, info = _attack_setup(run, weights, device)
    echo = echo if ctx.is_main else _quiet
    stem = result_stem("eval", suite, weights)
    if norm is not None and eps is None and norm.lower() != str(info["norm"]).lower():
        raise ValueError(f"--norm {norm} is not the run's training norm ({info['norm']}), so its eps "
                         f"{info['eps']:g} is no radius for it: give one with --eps (eps=).")
    if sources and suite != "madry":
        raise ValueError(f"--source runs transfer rows only in the madry suite (--suite madry); the {suite} suite "
                         "has none. Drop --source, or evaluate the transfer rows with --suite madry.")
    threat = threat_from_name(norm or info["norm"], info["eps"] if eps is None else eps)
    data_info = _data_info(info)
    shape = data_info.shape
    check_eps(threat.norm, threat.eps, shape)  # before any other complaint
    source_models = {name: load_run(path)[0].to(dev) for name, path in (sources or {}).items()}
    for name, source in source_models.items():  # a source for other images fails late and obscurely
        check_input_shape(f"transfer source {name} ({sources[name]}), a {source.config.name} model",
                          source.config.input_size, info["data"], shape)
    preset = data_info.madry_table or "mnist"  # the madry suite's settings: Table 1's unless the data has Table 2's
    if suite == "madry":
        attacks = suites.madry(threat, source_models, preset=preset, max_restarts=max_restarts)
    elif suite in ("standard", "fast", "adaptive", "rand"):
        attacks = suites.standard(threat, version=suite, seed=seed)
        mode = mode or "cascade"
    else:
        raise ValueError(f"unknown suite {suite!r}; available: madry, standard, fast, adaptive, rand.")
    x, y = _test_images(info, limit, root, echo, stream=dev)  # a data SPEC is read batch by batch
    x, y = x.to(dev) if isinstance(x, torch.Tensor) else x, y.to(dev)
    if suite in ("standard", "fast", "adaptive"):  # a randomized model gets the rand version (EOT)
        probe = x[:32] if isinstance(x, torch.Tensor) else x.sample()
        attacks = suites.standard(threat, version=suite, seed=seed, model=model, x=probe)
        if attacks[0].name.endswith(f"EOT-{suites.EOT_DRAWS}"):
            echo(f"The model is random (two forward passes on the same images differ): running the rand version "
                 f"of the suite instead of {suite} (APGD-CE and APGD-DLR, each gradient averaged over "
                 f"{suites.EOT_DRAWS} draws), each point judged over several draws.")
    mode = mode or "independent"
    request = {"weights": weights, "threat": str(threat), "n": len(x), "mode": mode, "seed": seed,
               "batch_size": batch_size, "attacks": [[a.name, a.steps, a.restarts, a.source] for a in attacks],
               "sources": {k: relative(v, run) for k, v in (sources or {}).items()}}
    result = run / f"{stem}.json"
    # An evaluation this one only adds rows to (transfer rows to the white-box ones, say) is kept, not redone:
    # the result is the same, as each attack's random stream depends on its position only.
    prior, saved = None, saved_request(result)
    if adds_rows(request, saved):
        prior = Evaluation.from_json(result)
        echo(f"Keeping the {len(prior.rows) - 1} attack rows of {result} (same settings); "
             f"running the {len(attacks) - len(prior.rows) + 1} new ones.")
    else:
        ctx.run_on_main(lambda: refuse_replacement(result, request, saved, overwrite=overwrite, what="evaluation"))
    progress_file = run / f"{stem}.progress.json"
    if restart and ctx.is_main:
        progress_file.unlink(missing_ok=True)
    try:
        data = x if isinstance(x, data_formats.Streamed) else (x, y)
        resumed = None if restart else ctx.run_on_main(lambda: saved_progress(
            progress_file, model, data, attacks, mode=mode, seed=seed, batch_size=batch_size))
        if resumed is not None:  # the file is known to be usable: now say so
            echo(f"Resuming the interrupted evaluation saved in {progress_file} at attack {resumed['attack'] + 1} "
                 f"of {len(attacks)} (`robustopt eval --restart` / restart=True starts over).")
        ev = evaluate(model, x if isinstance(x, data_formats.Streamed) else (x, y), attacks, batch_size=batch_size, seed=seed, mode=mode,
                      progress=progress, meta={"run": str(run), "weights": weights, "data": info["data"], "sources": {k: str(v) for k, v in (sources or {}).items()},
                                               "request": request},
                      progress_file=progress_file, start_from=prior)
    except ValueError as err:
        if str(err).startswith(str(progress_file)):  # unusable or foreign progress file
            what = str(err).split(" Delete it")[0]  # the library's advice names its keyword; here, the flag
            raise ValueError(f"{what} `robustopt eval --restart` (restart=True) discards it and starts over.") from err
        raise
    reference = suites.MADRY_REFERENCE[preset] if suite == "madry" and threat.norm == "Linf" and abs(threat.eps - (0.3 if preset == "mnist" else 8 / 255)) < 1e-9 else None
    budget = budget_table(ev)  # the budget per stage of a scheduled suite (adaptive); "" for the others
    echo(ev.table(reference=reference) + (f"\n{budget}" if budget else ""))
    if ctx.is_main:
        ev.to_json(result)
        md = ev.to_markdown(run / f"{stem}.md", reference=reference)
        if budget:
            atomic_write_text(md, md.read_text() + "\n" + budget_table(ev, "markdown"))
        echo(f"written: {result} and {md.name}")
    ctx.barrier()
    return ev


@holding(lambda a: a["run"], "sweep", create=False, result=lambda a: _sweep_stem(a["norm"], a["independent"], a["weights"]))
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

    Writes ``sweep-NORM.json``, ``sweep-NORM.md`` and ``sweep-NORM.png``
    (with the training eps marked when the norm matches the training norm). With ``independent=True``
    every eps attacks all clean-correct examples (the cascade's reference cost) and the files are
    ``sweep-NORM-independent.*``; with ``weights="best"`` (see ``load_run``) they end in ``-best``.
    A file made with other parameters (eps grid, steps, n, seed, batch size) is replaced only with
    ``overwrite=True``; otherwise FileExistsError is raised before anything runs.
    """
    run, ctx, dev, model, info = _attack_setup(run, weights, device)
    echo = echo if ctx.is_main else _quiet
    check_grid_size(len(eps_values))  # the request itself first, then its conflicts with files on disk
    if eps_values and all(isinstance(e, (int, float)) for e in eps_values):  # sweep() explains other values
        check_eps(norm, max(eps_values), _data_info(info).shape)
    x, y = _test_images(info, limit, root, echo)
    x, y = x.to(dev), y.to(dev)
    stem = _sweep_stem(norm, independent, weights)
    request = {"weights": weights, "norm": norm, "eps": [float(e) for e in eps_values], "steps": steps, "n": len(x),
               "seed": seed, "batch_size": batch_size}
    result = run / f"{stem}.json"
    ctx.run_on_main(lambda: refuse_replacement(result, request, saved_request(result), overwrite=overwrite,
                                               what="sweep"))
    threat_cls = by_name(norm)
    attack = lambda t: PGD(t, steps=steps, seed=seed)  # noqa: E731  (step 2.5 * eps / steps at every eps)
    curve = sweep(model, (x, y), threat_cls, eps_values, attack=attack, batch_size=batch_size, seed=seed,
                  progress=progress, meta={"run": str(run), "weights": weights, "data": info["data"], "request": request},
                  independent=independent)
    echo(curve.table())
    if ctx.is_main:
        curve.to_json(result)
        atomic_write_text(run / f"{stem}.md", curve.table("markdown"))
        curve.plot(run / f"{stem}.png", train_eps=info["eps"] if info["norm"] == norm else None)
        echo(f"written: {result}, {stem}.md and {stem}.png")
    ctx.barrier()
    return curve


# --- reports: the caller computes, robustopt.evaluation.report renders ----------------------------

AUDIT_SIZE = 200  # test images the report's audit probes, and the gallery's images come from
GALLERY_SIZE = 8  # correctly classified test images in the gallery
GALLERY_STEPS = 40  # PGD steps of the gallery's attack (step 2.5 * eps / steps, random start)


def write_report(runs: PathLike | Iterable[PathLike], out: PathLike | None = None, *,
                 root: PathLike | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``report.md`` (with PNG figures beside it) and a self-contained ``report.html`` for run folders.

    Per run: ``run.json``, the training curve (``log.jsonl``), every ``eval-*.json`` as the paper's
    table (with Madry et al.'s numbers for the madry suite on MNIST at L-inf 0.3 or CIFAR-10 at 8/255),
    every ``sweep-*.json`` as a plot and a table, ``ro.audit`` of the model on the first 200 test images
    and of the results, and 8 PGD-40 adversarial examples; then the environment. The audit and the
    adversarial examples are computed here; :func:`robustopt.evaluation.report.render` draws it all.

    Args:
        runs: one run folder or a list of them (made by ``robustopt train`` / ``train_run``).
        out: folder for the report files (created); default: the first run folder.
        root: data root for the test images (default: ``$ROBUSTOPT_DATA``, else the user cache).
        overwrite: replace a report of other runs in ``out`` (report.md records its runs on its
            first line); a report of the same runs is always refreshed.

    Returns:
        ``(md_path, html_path)``.

    Raises:
        FileNotFoundError: a folder does not exist or is not a finished run (no run.json / model),
            or the test data is missing.
        ValueError: a path is a file, no runs were given, or a result file is damaged.
        FileExistsError: ``out`` holds a report of other runs and ``overwrite`` is False.
        OSError: ``out`` cannot be written, or another process holds it
            (``robustopt.runs.RunFolderBusyError``).

    Example:
        >>> md_path, html_path = write_report(["runs/a"])   # runs/a/report.md, runs/a/report.html
    """
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    try:
        folders = [check_run(r) for r in runs]
    except TypeError:
        raise TypeError(f"runs must be a run folder or a list of run folders, got {runs!r}.") from None
    if not folders:
        raise ValueError("no run folders given: pass at least one folder made by `robustopt train --out RUN`.")
    out_dir = Path(out) if out is not None else folders[0]
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; pass a folder for report.md, report.html and the figures.")
    # What defines a report: its runs, relative to the report (the same wherever the command runs from).
    request = {"runs": [relative(run, out_dir) for run in folders]}
    with hold(out_dir, "report"):
        md_path = out_dir / REPORT_MD
        refuse_replacement(md_path, request, report_request(md_path), overwrite=overwrite, what="report")
        document = report.render([_report_section(run, root) for run in folders])
        for name, png in document.figures.items():
            atomic_write_bytes(out_dir / name, png)
        return (atomic_write_text(md_path, request_line(request) + document.markdown),
                atomic_write_text(out_dir / REPORT_HTML, document.html))


def _report_section(run: Path, root: PathLike | None) -> report.RunReport:
    """What the report shows of ``run``: its files, and the audit and gallery of its model on test images."""
    info = read_info(run)
    evaluations, sweeps = read_evaluations(run), read_sweeps(run)
    model, _ = load_run(run)
    x, y = _test_images(info, AUDIT_SIZE, root, _quiet)
    try:
        threat: ThreatModel | None = threat_from_name(info["norm"], float(info["eps"]))
    except (KeyError, TypeError, ValueError):  # a run.json without a known threat model
        threat = None
    try:
        class_names: Sequence[str] = _data_info(info).classes
    except ValueError:
        class_names = ()
    seed = int(info.get("seed") or 0)
    return report.RunReport(
        path=run, info=info, config=read_config(run), log=read_log(run), evaluations=evaluations, sweeps=sweeps,
        audits=_audits(model, (x, y), threat, evaluations, sweeps, seed),
        gallery=_gallery(model, x, y, threat, seed), class_names=class_names)


def _audits(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], threat: ThreatModel | None,
            evaluations: list[tuple[str, Evaluation]], sweeps: list[tuple[str, SweepCurve]],
            seed: int) -> list[tuple[str, list[Finding]]]:
    """The audit of the model on ``data`` (with the first evaluation), then of each other evaluation and sweep."""
    probe = f"Model on the first {len(data[0])} test images"
    if evaluations:
        (name, first), others = evaluations[0], evaluations[1:]
        parts = [(f"{probe}, and {name}", audit(model, data, first, seed=seed))]
        parts += [(name, audit(None, evaluation=ev, seed=seed)) for name, ev in others]
    else:
        parts = [(probe, audit(model, data, threat=threat, seed=seed))]
    return parts + [(name, audit(None, sweep=curve, seed=seed)) for name, curve in sweeps]


def _gallery(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel | None,
             seed: int) -> report.Gallery | None:
    """PGD adversarial examples of the first ``GALLERY_SIZE`` images of ``x`` the model classifies correctly.

    None when the threat model has no budget (unknown, or eps 0); no examples when no image is
    classified correctly.
    """
    if threat is None or threat.eps <= 0:
        return None
    with eval_mode(model), torch.no_grad():
        ok = predict(model, x).argmax(1) == y
    idx = ok.nonzero().squeeze(1)[:GALLERY_SIZE]
    x, y = x[idx], y[idx]
    x_adv = PGD(threat, steps=GALLERY_STEPS, seed=seed)(model, x, y).detach() if len(idx) else x
    with eval_mode(model), torch.no_grad():
        pred_adv = predict(model, x_adv).argmax(1) if len(idx) else y
    return report.Gallery(x=x, x_adv=x_adv, y=y, pred_adv=pred_adv, threat=threat, steps=GALLERY_STEPS, seed=seed,
                          probed=len(ok))


def _quiet(_: str) -> None:
    """The echo of ranks other than 0 under torchrun."""


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
_DEMO_SWEEPS = (("linf", _grid(0.5, 0.1)), ("l2", _grid(8.0, 2.0)))  # the same ranges, coarser: the demo stays quick

# Sized to finish in a few minutes on a 2-core CPU: the fast small CNN as A, 5-step PGD
# training with eps ramped over 3 epochs, 500 test images, at most 2 restarts.
# The full-MNIST recipe is bench/full_mnist.sh (docs/results.md).
DEMO = ExperimentPreset(
    model_a="small-cnn", model_b="tramer-b", eps=0.3, epochs_robust=6, epochs_natural=3,
    attack_steps=5, attack_step_size=0.1, batch_size=50, lr=1e-3, train_size=None,
    eval_size=500, max_restarts=2, eps_warmup_epochs=3,
)

# `robustopt reproduce NAME --budget B` (`robustopt demo` is madry-mnist's demo). demo: DEMO plus the
# fast standard suite, coarse sweeps (200 test images) and the report (minutes, offline). cpu: full MNIST with the paper's model A at the budget of bench/full_mnist.sh
# (5 epochs of 5-step PGD; about 1 h 15 min on 2 cores, most of it training A and A'). paper: the
# paper's recipes (MNIST: 40 x 0.01, batch 50, Adam 1e-4, ~100k steps; CIFAR-10: 7 x 2/255, batch
# 128, SGD 0.1 with x0.1 at 50% and 75%, ~80k steps), all test images, 20 restarts: for a GPU.
REPRODUCE: dict[str, dict[str, ExperimentPreset]] = {
    "madry-mnist": {
        "demo": dataclasses.replace(DEMO, standard="fast", standard_size=200, sweeps=_DEMO_SWEEPS, sweep_size=200,
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
    preset = dataclasses.replace(preset, device=device) if device else preset
    resolve_device(preset.device)  # before the first line and the first model
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    reused: list[str] = []  # models trained before this call
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
            # Its training time, from its log: the experiment's total stays what a fresh start costs.
            seconds[f"train {name}"] = sum(float(r.get("seconds", 0.0)) for r in read_log(folder) or [])
            reused.append(name)
            echo(f"[{name}] reusing {folder} (trained in {seconds[f'train {name}']:.0f} s)")
            continue
        echo(f"[{name}] training {recipe['model']} ({recipe['method']}) -> {folder}")
        t0 = time.perf_counter()
        train_run(folder, resume=training_started(folder), **common, **recipe)
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
    paper = datasets.info(data).madry_table or "mnist"
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
        t0 = time.perf_counter()
        written += list(write_report([folders["A"]], out=out, root=root, overwrite=True))
        seconds["report"] = time.perf_counter() - t0

    seconds["this call"] = time.perf_counter() - start
    seconds["total"] = seconds["this call"] + sum(seconds[f"train {name}"] for name in reused)
    summary = {"preset": dataclasses.asdict(preset), "data": data, "seed": seed, "seconds": seconds, "reused": reused,
               "machine": platform.platform(), "torch": torch.__version__, "runs": {k: str(v) for k, v in folders.items()}}
    atomic_write_json(out / "experiment.json", summary)
    echo(f"written: {', '.join(str(p) for p in written)} ({seconds['this call']:.0f} s"
         + (f"; {seconds['total']:.0f} s with the training of {', '.join(reused)})" if reused else ")"))
    return ev
