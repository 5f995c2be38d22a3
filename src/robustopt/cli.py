"""The ``robustopt`` command. Thin: it parses arguments into the library's own objects."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import typing
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping

import click
from click.core import ParameterSource

import robustopt as _registry  # imported with robustopt.cli anyway; the help texts list its registries
from robustopt import experiments as _experiments
from robustopt._checks import EpsWarning, check_grid_size
from robustopt.training import TrainConfig

__all__ = ["main", "parse_eps"]


def parse_eps(text: str) -> float:
    """Parse an epsilon such as ``0.3``, ``8/255`` or ``2e-2`` (pixel space)."""
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"{text!r} is not a number; write e.g. 0.3 or 8/255.") from None
    if not value >= 0:
        raise click.BadParameter(f"eps must be >= 0, got {text}.")
    return value


class _Eps(click.ParamType):
    name = "EPS"

    def convert(self, value, param, ctx):  # noqa: D102
        return value if isinstance(value, float) else parse_eps(str(value))


EPS = _Eps()


class _Numbers(click.ParamType):
    name = "LIST"

    def convert(self, value, param, ctx):  # noqa: D102
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers, e.g. 0,15,30.", param, ctx)


_NUMBERS = _Numbers()


class _Folder(click.Path):
    """A folder to write, never empty text: ``--out "$UNSET"`` would otherwise mean the current folder."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx):  # noqa: D102
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; name a folder, e.g. runs/a.", param, ctx)
        return super().convert(value, param, ctx)


_FOLDER = _Folder()

# Options that eval and sweep share.
_ATTACK_DEVICE = click.option("--device", default="cpu", show_default=True,
                              help="cpu | cuda | cuda:N | auto; under torchrun, cuda means each process's own GPU.")
_WEIGHTS = click.option("--weights", type=click.Choice(list(_registry.runs.WEIGHTS)), default="final",
                        show_default=True,
                        help="final: the weights training ended with (model.*); best: the best validation epoch "
                             "(best.*, kept with --early-stopping-patience). Results of best go to *-best.* files.")


def _models_by_input() -> str:
    """The registered models grouped by input shape, for ``train --help``."""
    groups: dict[str, list[str]] = {}
    for name in _registry.models.names():
        shape = "x".join(str(s) for s in _registry.models.default_config(name).input_size)
        groups.setdefault(shape, []).append(name)
    return "; ".join(f"for {shape} data: {' | '.join(names)}" for shape, names in groups.items())


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """EpsWarning as one plain ``warning: ...`` line on stderr; other warnings as Python shows them."""
    if issubclass(category, EpsWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def _fail(err: Exception) -> None:
    if isinstance(err, OSError) and err.strerror and err.filename:  # a raw OS error: name the path in words
        err = f"{err.filename}: {err.strerror}."
    click.echo(f"error: {err}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robustopt")
def main() -> None:
    """robustopt: attacks, adversarial training and honest robustness evaluation (Madry et al. 2018).

    On glibc the command keeps freed activation memory for reuse instead of faulting it in at every
    step (robustopt.malloc); ROBUSTOPT_MALLOC=default keeps glibc's defaults.
    """
    if os.environ.get("ROBUSTOPT_MALLOC", "tuned") != "default":
        from robustopt.malloc import tune_malloc

        tune_malloc()
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", EpsWarning)
    if os.environ.get("WORLD_SIZE", "").strip() not in ("", "1"):  # started by torchrun: join the process group first
        from robustopt import distributed

        try:
            distributed.setup()
        except (ValueError, RuntimeError) as err:  # a WORLD_SIZE left in the environment, a failed rendezvous
            _fail(err)


@main.command()
@click.option("--out", type=_FOLDER, default=Path("runs/demo"), show_default=True,
              help="Run folder for the four models, the tables, the sweeps and the report.")
@click.option("--data", default="mnist-mini", show_default=True, help="Dataset (mnist-mini ships with the package).")
@click.option("--seed", default=0, show_default=True)
def demo(out: Path, data: str, seed: int) -> None:
    """The paper's experiment, small and offline: `robustopt reproduce madry-mnist --budget demo`.

    Trains A, A', B, A_nat and prints the attack table beside the paper's; then the standard
    suite, eps sweeps and the report (OUT/report.md, OUT/report.html).
    """
    _reproduce("madry-mnist", "demo", out=out, data=data, seed=seed)


def _reproduce(experiment: str, budget: str, **kwargs: object) -> None:
    """``reproduce`` and ``demo``: ``experiments.reproduce`` with its lines on stdout and its errors as one line."""
    try:
        _experiments.reproduce(experiment, budget, echo=click.echo, **kwargs)
    except (ValueError, TypeError, OSError, ImportError) as err:  # OSError: an unwritable or busy --out, ...
        _fail(err)


@main.command()
@click.argument("experiment", type=click.Choice(sorted(_experiments.REPRODUCE)))
@click.option("--budget", type=click.Choice(["demo", "cpu", "paper"]), default="demo", show_default=True,
              help="demo: minutes, offline (mnist-mini); cpu: the full dataset on 2 CPU cores (MNIST about 1 h 15 min; "
                   "CIFAR-10 hours, see docs/results.md); "
                   "paper: the paper's recipe, for a GPU.")
@click.option("--out", type=_FOLDER, default=None,
              help="Run folder (default: runs/EXPERIMENT-BUDGET).")
@click.option("--seed", default=0, show_default=True)
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root.")
@click.option("--only", default=None, metavar="NAMES",
              help="Train just these models (comma list of A, A', B, A_nat) and stop; run several such commands "
                   "side by side, then the command without --only reuses them and evaluates.")
@click.option("--device", default=None, help="cpu | cuda | cuda:N | auto (default: the budget's: cpu, or auto for paper).")
def reproduce(experiment: str, budget: str, out: Path | None, seed: int, root: Path | None, only: str | None,
              device: str | None) -> None:
    """The paper's experiment end to end: train A, A', B, A_nat; the attack table beside the paper's;
    the standard suite; eps sweeps; the report (OUT/report.md, OUT/report.html).

    An interrupted run continues where it stopped when started again with the same --out.
    """
    _reproduce(experiment, budget, out=out or Path("runs") / f"{experiment}-{budget}", seed=seed, root=root,
               only=None if only is None else tuple(n.strip() for n in only.split(",") if n.strip()), device=device)


@main.group()
def data() -> None:
    """List or fetch datasets."""


@data.command("list")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root (default: $ROBUSTOPT_DATA or cache).")
def data_list(root: Path | None) -> None:
    """Show the known datasets, whether their official files are present (size and, up to 64 MB, checksum checked),
    and where they were looked for."""
    from robustopt import data as ds

    source = ("--root" if root is not None else f"${ds.ENV_VAR}" if os.environ.get(ds.ENV_VAR, "").strip()
              else f"the user cache; set ${ds.ENV_VAR} or --root for another folder")
    click.echo(f"data root: {ds.default_root(root)} ({source})")
    rows = [(name, ds.status(name, root), ds.locate(name, root)) for name in ds.names()]
    width = max(len(status) for _, status, _ in rows)
    for name, status, found in rows:
        where = ("inside the package" if status == "shipped" else
                 f"in {found}" + (f" (robustopt data fetch {name} names the bad file)" if status == "damaged" else "")
                 if found else
                 f"looked in {', '.join(map(str, ds.search_folders(name, root)))} (robustopt data fetch {name})")
        click.echo(f"{name:15s} {status:{width}s} {where}")


@data.command("fetch")
@click.argument("name")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root (default: $ROBUSTOPT_DATA or cache).")
def data_fetch(name: str, root: Path | None) -> None:
    """Download NAME from its official source and verify its checksums."""
    from robustopt import data as ds

    try:
        click.echo(str(ds.fetch(name, root)))
    except (ValueError, OSError) as err:
        _fail(err)


@main.group()
def models() -> None:
    """List the registered models."""


@models.command("list")
def models_list() -> None:
    """Show every registered model: parameters, input shape, the dataset it is built for, what it is."""
    import torch

    from robustopt import models as registry

    rows = [("name", "parameters", "input", "dataset", "description")]
    for name in registry.names():
        with torch.device("meta"):  # counts parameters without allocating them
            count = registry.count_parameters(registry.create(name))
        config = registry.default_config(name)
        rows.append((name, f"{count:,}", "x".join(str(s) for s in config.input_size), config.dataset or "-",
                     registry.description(name)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
                              row[3].ljust(widths[3]), row[4]]).rstrip())
    click.echo("Use one with `robustopt train --model NAME` (its input shape must match --data), or in Python: "
               "ro.models.create(NAME, weights=PATH) to load a plain PyTorch state dict.")


def _train_config_options(command: Callable[..., None]) -> Callable[..., None]:
    """Decorator: one option per TrainConfig field that has help text in its metadata, with the field's default."""
    hints = typing.get_type_hints(TrainConfig)
    for f in reversed(dataclasses.fields(TrainConfig)):
        meta = f.metadata
        if "help" not in meta:
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        help_text = meta["help"] if meta["names"] is None else f"{' | '.join(meta['names'])}: {meta['help']}"
        kinds = (hints[f.name], *typing.get_args(hints[f.name]))  # the type, and X of X | None
        kwargs: dict[str, Any] = {"default": f.default, "help": help_text, "show_default": f.default is not None}
        if bool in kinds:
            decls = [f"{flag}/--no-{flag[2:]}", f.name]
        else:
            decls = [flag, f.name]
            kwargs["type"] = _option_type(kinds, meta)
        command = click.option(*decls, **kwargs)(command)
    return command


def _option_type(kinds: tuple[Any, ...], meta: Mapping[str, Any]) -> Any:
    """The click type of a TrainConfig field: its choices, EPS for a length in pixels, LIST for a tuple, else its type."""
    if meta["choices"] is not None:
        return click.Choice(list(meta["choices"]))
    if meta["pixels"]:
        return EPS
    if any(typing.get_origin(kind) is tuple for kind in kinds):
        return _NUMBERS
    return next(kind for kind in kinds if kind in (int, float, str))


@main.command()
@click.option("--preset", type=click.Choice(sorted(_experiments.TRAIN_PRESETS)), default=None,
              help="A named recipe (" + "; ".join(f"{name}: {p.summary}" for name, p in
                                                 _experiments.TRAIN_PRESETS.items())
                   + "); the options given explicitly override it.")
@click.option("--data", "dataset", default=None,
              help=f"{' | '.join(_registry.data.names())}; see robustopt data list.  [default: mnist]")
@click.option("--model", "model_name", default=None,
              help=f"{_models_by_input()}; see robustopt models list.  [default: madry-mnist]")
@_train_config_options
@click.option("--train-size", type=int, default=None, help="Use only the first N training images.  [default: all]")
@click.option("--out", type=_FOLDER, required=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root.")
@click.pass_context
def train(ctx: click.Context, preset: str | None, dataset: str | None, model_name: str | None, train_size: int | None,
          out: Path, resume: bool, root: Path | None, **fields: Any) -> None:
    """Train a model naturally or adversarially (PGD-AT, Madry et al. 2018; FGSM-RS, N-FGSM, TRADES, Free).

    The defaults are Madry et al.'s MNIST recipe (madry-mnist, 100 epochs of 40-step PGD on
    full MNIST): days on a CPU; `robustopt demo` is a small version. Before starting, a plan
    line states the work and its cost in image-gradient evaluations; at the end, the run
    folder, the final validation accuracies and the next command.
    """
    from robustopt.experiments import TRAIN_PRESETS, train_run

    recipe = TRAIN_PRESETS[preset] if preset else None
    # The options given on the command line replace the recipe's fields; the others keep the recipe's.
    explicit = {k: v for k, v in fields.items() if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}
    try:
        train_run(out, data=dataset or (recipe.data if recipe else "mnist"),
                  model=model_name or (recipe.model if recipe else "madry-mnist"), train_size=train_size,
                  resume=resume, root=root, echo=click.echo, config=recipe.config if recipe else None, **explicit)
    except (ValueError, TypeError, OSError) as err:  # OSError: FileExistsError, an unwritable or busy --out, ...
        _fail(err)


@main.command("eval")
@click.argument("run", metavar="[RUN | zoo:NAME]", required=False)
@click.option("--suite", type=click.Choice(_registry.suites.names()), default="madry", show_default=True,
              help="; ".join(f"{name}: {entry.summary}" for name, entry in _registry.suites.SUITES.items()) + ".")
@click.option("--source", "sources", multiple=True, metavar="NAME=RUN",
              help="Transfer source, e.g. \"A'=runs/a2\" or B=runs/b; repeatable.")
@click.option("--norm", type=click.Choice(_registry.threat.names()), default=None, help="Default: the run's training norm.")
@click.option("--eps", type=EPS, default=None, help="Default: the run's training eps.")
@click.option("--n", "limit", type=int, default=None, help="Evaluate the first N test images (default: all).")
@click.option("--max-restarts", type=int, default=None, help="Cap on restarts (the paper uses up to 20).")
@click.option("--mode", type=click.Choice(["independent", "cascade"]), default=None,
              help="independent: each row alone (paper tables, default for madry); cascade: worst case, cheaper.")
@click.option("--batch-size", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root.")
@click.option("--restart", is_flag=True, default=False,
              help="Discard the saved progress of an interrupted evaluation (RUN/eval-SUITE.progress.json) and start over.")
@_ATTACK_DEVICE
@click.option("--weights", default=None, metavar="final|best|FILE",
              help="RUN: final (default) or best (the best validation epoch, results in *-best.*). With --model: "
                   "the model's state dict (.safetensors, or .pt read with weights_only=True).")
@click.option("--model", "model_spec", default=None, metavar="SPEC",
              help="Your model instead of RUN: a registry name | FILE.py:factory | package.module:factory | "
                   "torchscript:PATH | export:PATH. Needs --data, --eps and --out.")
@click.option("--data", "data_spec", default=None, metavar="SPEC",
              help="With --model: a dataset name (its test split) | folder:PATH (one sub-folder per class) | "
                   "npz:PATH (arrays x, y). Read batch by batch.")
@click.option("--mean", type=_NUMBERS, default=None, help="With --model: per-channel mean the model expects its "
              "inputs normalized with, e.g. 0.485,0.456,0.406 (with --std; the model then takes [0, 1] images).")
@click.option("--std", type=_NUMBERS, default=None, help="With --model: per-channel std, e.g. 0.229,0.224,0.225.")
@click.option("--image-size", type=int, default=None, help="folder: data: resize (short side) and center-crop to N.")
@click.option("--skip-bad", is_flag=True, default=False,
              help="folder: data: leave out unreadable images (counted) instead of stopping at the first.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace an RUN/eval-SUITE.json made with other settings (n, restarts, threat, sources, mode, "
                   "seed, ...); without it such a file is kept and the command refuses.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="zoo:NAME: the folder to evaluate in and write the results to (default: a folder per entry in "
                   "the user cache; never the zoo itself unless named). --model: the run folder to create, with "
                   "the model's description, for report, sweep and card afterwards.")
def eval_(run, suite, sources, norm, eps, limit, max_restarts, mode, batch_size, seed, root, restart, device,
          weights, model_spec, data_spec, mean, std, image_size, skip_bad, overwrite, out) -> None:
    """Evaluate the model in RUN or the zoo entry NAME; print the table, write RUN/eval-SUITE.{json,md}.

    Your own model and data: robustopt eval --model net.py:make --weights net.pt --data folder:images
    --eps 8/255 --out runs/mine (OUT/eval-SUITE-examples.csv lists each image's file and flags).

    Progress is saved after every batch: run the same command again after an
    interruption and it continues where it stopped.
    """
    from robustopt.experiments import eval_run

    try:
        if model_spec is not None:
            _eval_model(run, out, model_spec, data_spec, weights, mean, std, image_size, skip_bad, sources, norm, eps,
                        suite=suite, limit=limit, max_restarts=max_restarts, mode=mode, batch_size=batch_size,
                        seed=seed, root=root, restart=restart, device=device, overwrite=overwrite)
            return
        given = [flag for flag, value in (("--data", data_spec), ("--mean", mean), ("--std", std),
                                          ("--image-size", image_size), ("--skip-bad", skip_bad)) if value]
        if given:
            raise ValueError(f"{given[0]} goes with --model SPEC; a run folder brings its own data.")
        if run is None:
            raise ValueError("give a run folder RUN, zoo:NAME, or --model SPEC --data SPEC --eps E --out DIR.")
        weights = weights or "final"
        if weights not in _registry.runs.WEIGHTS:
            raise ValueError(f"--weights for a run folder is final or best, got {weights!r}; a weights file goes "
                             "with --model SPEC.")
        if run.startswith(_registry.zoo.PREFIX):  # a copy of the entry's run folder, outside the zoo
            run = _registry.zoo.prepare_run(run, out)
            click.echo(f"zoo entry {run.name}: evaluating in {run}")
        elif out is not None:
            raise ValueError("--out applies to zoo:NAME only; the results of RUN are written into RUN.")
        parsed = _parse_sources(sources)
        eval_run(run, suite=suite, sources=parsed, norm=norm, eps=eps, limit=limit, max_restarts=max_restarts,
                 mode=mode, batch_size=batch_size, seed=seed, root=root, echo=click.echo, restart=restart,
                 device=device, weights=weights, overwrite=overwrite)
    except (ValueError, TypeError, OSError, ImportError) as err:  # ImportError: Pillow missing
        _fail(err)


def parse_eps_grid(text: str) -> list[float]:
    """Parse ``START:STOP:STEP`` or a comma list; values like ``8/255`` are allowed.

    ``START:STOP:STEP`` holds ``START, START + STEP, ...`` up to STOP: numpy's ``arange`` with STOP
    included when it lies on the grid (up to a relative rounding error of 1e-9), never beyond it;
    ``0:0.5:0.3`` is 0 and 0.3.

    Raises:
        click.BadParameter: malformed grid or value (the message names --eps).
        ValueError: more than ``robustopt._checks.MAX_GRID`` (1,000) values.
    """
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise click.BadParameter(f"write the grid as START:STOP:STEP (e.g. 0:0.5:0.05), got {text!r}.",
                                     param_hint="'--eps'")
        start, stop, step = (_grid_value(p, what, text) for p, what in zip(parts, ("START", "STOP", "STEP")))
        if step <= 0 or stop < start:
            raise click.BadParameter(f"the grid {text!r} needs STEP > 0 and STOP >= START.", param_hint="'--eps'")
        count = math.floor((stop - start) / step * (1 + 1e-9) + 1e-9)  # values <= STOP, with a rounding tolerance
        check_grid_size(count + 1)  # before building it: 0:1000:0.0001 would be 10 million attacks
        return [min(round(start + i * step, 10), stop) for i in range(count + 1)]
    values = [p for p in text.split(",") if p.strip()]
    check_grid_size(len(values))
    return [_grid_value(p, "every value", text) for p in values]


def _grid_value(part: str, what: str, text: str) -> float:
    """One number of an eps grid, with an error naming its place in the grid and --eps."""
    try:
        return parse_eps(part)
    except click.BadParameter:
        raise click.BadParameter(f"{what} of the grid {text!r} must be a number >= 0 such as 0.3 or 8/255, "
                                 f"got {part.strip()!r}.", param_hint="'--eps'") from None


@main.command()
@click.argument("run", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--norm", type=click.Choice(_registry.threat.names()), default="linf", show_default=True)
@click.option("--eps", "grid", default="0:0.5:0.05", show_default=True,
              help="Grid START:STOP:STEP (START, START+STEP, ... up to STOP, STOP included when on the grid) "
                   "or a comma list, e.g. 0:30/255:2/255.")
@click.option("--steps", type=int, default=40, show_default=True, help="PGD steps at each eps (step 2.5*eps/steps).")
@click.option("--n", "limit", type=int, default=1000, show_default=True, help="First N test images.")
@click.option("--batch-size", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root.")
@_ATTACK_DEVICE
@click.option("--independent", is_flag=True,
              help="Attack every clean-correct example at every eps (no cascade; the reference cost). "
                   "Writes RUN/sweep-NORM-independent.*.")
@_WEIGHTS
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace an RUN/sweep-NORM.json made with other settings (eps grid, steps, n, seed, ...); "
                   "without it such a file is kept and the command refuses.")
def sweep(run, norm, grid, steps, limit, batch_size, seed, root, device, independent, weights, overwrite) -> None:
    """Robust accuracy against eps (the paper's Figure 2); writes RUN/sweep-NORM.{json,md,png}."""
    from robustopt.experiments import sweep_run

    try:
        eps_values = parse_eps_grid(grid)
        sweep_run(run, norm=norm, eps_values=eps_values, steps=steps, limit=limit, batch_size=batch_size,
                  seed=seed, root=root, echo=click.echo, device=device, independent=independent, weights=weights,
                  overwrite=overwrite)
    except (ValueError, TypeError, OSError) as err:
        _fail(err)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for report.md, report.html and the PNG figures (default: the first RUN).")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root (for the audit and the examples).")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace a report of other runs in the --out folder; without it the command refuses.")
def report(runs, out, root, overwrite) -> None:
    """Markdown + self-contained HTML report of RUN folders: tables, curves, sweeps, audit, adversarial examples."""
    try:
        md_path, html_path = _experiments.write_report(runs, out=out, root=root, overwrite=overwrite)
    except (ValueError, TypeError, OSError, ImportError) as err:
        _fail(err)
    click.echo(f"written: {md_path}")
    click.echo(f"         {html_path}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--weights", type=click.Choice(["final", "best"]), default="final", show_default=True,
              help="Whose evaluation to read: RUN/eval-standard.json (final) or eval-standard-best.json (best).")
@click.option("--eval", "evaluation", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The evaluation JSON to read instead (e.g. another suite's).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the card (default: RUN/robustbench.json, or robustbench-best.json).")
@click.option("--name", default=None,
              help="Model name, RobustBench's 'name' (the paper's title). Default: RUN's folder name.")
@click.option("--architecture", default=None, help="e.g. WideResNet-34-10. Default: the registry model's name.")
@click.option("--link", default="", help="Paper or code URL.")
@click.option("--authors", default="", help="Comma-separated author names.")
@click.option("--venue", default="N/A", show_default=True, help="e.g. 'ICLR 2018'.")
@click.option("--reported", type=float, default=None,
              help="Robust accuracy the authors report, a fraction in [0, 1] (default: the measured one).")
def card(run, weights, evaluation, out, name, architecture, link, authors, venue, reported) -> None:
    """Write RUN's model card in RobustBench's JSON format, from its standard-suite evaluation.

    Run `robustopt eval RUN --suite standard` first (on all test images for a leaderboard entry).
    The card has RobustBench's fields (name, dataset, eps, architecture, clean_acc,
    autoattack_acc, number_forward_passes, ...) plus threat_model and a robustopt block.
    """
    fields = {k: v for k, v in dict(name=name, architecture=architecture, reported=reported).items() if v is not None}
    try:
        path = _registry.runs.write_card(run, weights=weights, evaluation=evaluation, out=out, link=link, authors=authors,
                          venue=venue, **fields)
    except (ValueError, TypeError, OSError) as err:
        _fail(err)
    card_json = json.loads(path.read_text())
    click.echo(f"written: {path} ({card_json['threat_model']} eps {card_json['eps']} on {card_json['dataset']}: "
               f"clean {card_json['clean_acc']}%, robust {card_json['autoattack_acc']}%)")
    click.echo(f"footnote: {card_json['footnote']}")
    click.echo(f"For RobustBench, copy it to model_info/{card_json['dataset']}/{card_json['threat_model']}/NAME.json "
               "and fill in link, authors and venue if still empty.")


@main.group()
def zoo() -> None:
    """The model zoo: trained and constructed models with their cards (ro.zoo)."""


@zoo.command("list")
@click.option("--markdown", is_flag=True, help="The leaderboard in Markdown, one table per dataset and threat model "
                                                "(docs/zoo.md).")
def zoo_list(markdown: bool) -> None:
    """Show every entry: dataset, network, training, threat model, clean and robust accuracy, provenance."""
    try:
        if markdown:
            click.echo(_registry.zoo.leaderboard())
            return
        items = _registry.zoo.entries()
    except (ValueError, OSError) as err:
        _fail(err)
    rows = [("name", "dataset", "network", "training", "threat", "clean", "robust", "provenance")]
    for e in items:
        card = e.card["robustopt"] if e.card else None
        where = (f"{', '.join(card['attacks'])} on {card['n']:,} test images" if card else "not evaluated")
        rows.append((e.name, e.dataset, e.network, e.training, e.threat,
                     f"{100 * card['clean_accuracy']:.1f}%" if card else "-",
                     f"{100 * card['robust_accuracy']:.1f}%" if card else "-", where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]).rstrip())
    click.echo("Load one with ro.zoo.load(NAME); evaluate it with `robustopt eval zoo:NAME --suite adaptive`; "
               "how each was made: its entry.json and robustbench.json.")


def _eval_model(run, out, model_spec, data_spec, weights, mean, std, image_size, skip_bad, sources, norm, eps,
                **eval_args) -> None:  # noqa: ANN001
    """``eval --model SPEC``: the flags checked in CLI terms, then ``robustopt.external.eval_model``."""
    from robustopt.external import eval_model

    if run is not None:
        raise ValueError(f"give RUN or --model SPEC, not both (got {run} and --model {model_spec}).")
    missing = [flag for flag, value in (("--data", data_spec), ("--eps", eps), ("--out", out)) if value is None]
    if missing:
        raise ValueError(f"--model needs {', '.join(missing)}: e.g. --data folder:PATH --eps 8/255 --out runs/mine.")
    if sources:
        raise ValueError("--source takes run folders and goes with RUN, not with --model.")
    eval_model(out, model=model_spec, data=data_spec, eps=eps, weights=weights, mean=mean, std=std,
               image_size=image_size, skip_bad=skip_bad, norm=norm or "linf", echo=click.echo, **eval_args)


def _parse_sources(texts: tuple[str, ...]) -> dict[str, Path]:
    """The --source options as table name -> run folder; each name once."""
    sources: dict[str, Path] = {}
    for text in texts:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--source must look like NAME=RUN (e.g. \"A'=runs/a2\"), got {text!r}.")
        if name in sources:
            raise ValueError(f"--source {name} is given twice ({sources[name]} and {path}); give each source its "
                             "own name, e.g. B1=... and B2=....")
        sources[name] = Path(path)
    return sources


if __name__ == "__main__":
    main()
