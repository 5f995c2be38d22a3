"""``robustopt train``: one option per ``TrainConfig`` field, a preset, and the run folder."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable, Mapping

import click
from click.core import ParameterSource

from robustopt import data as datasets, experiments, models
from robustopt.cli.group import EPS, FOLDER, NUMBERS, fail, main
from robustopt.training import TrainConfig

__all__ = ["train"]


def _models_by_input() -> str:
    """The registered models grouped by input shape, for ``train --help``."""
    groups: dict[str, list[str]] = {}
    for name in models.names():
        shape = "x".join(str(s) for s in models.default_config(name).input_size)
        groups.setdefault(shape, []).append(name)
    return "; ".join(f"for {shape} data: {' | '.join(names)}" for shape, names in groups.items())


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
        return NUMBERS
    return next(kind for kind in kinds if kind in (int, float, str))


@main.command()
@click.option("--preset", type=click.Choice(sorted(experiments.TRAIN_PRESETS)), default=None,
              help="A named recipe (" + "; ".join(f"{name}: {p.summary}" for name, p in
                                                 experiments.TRAIN_PRESETS.items())
                   + "); the options given explicitly override it.")
@click.option("--data", "dataset", default=None,
              help=f"{' | '.join(datasets.names())}; see robustopt data list; or your own images: folder:PATH "
                   "(one sub-folder per class) | npz:PATH (arrays x, y), read batch by batch.  [default: mnist]")
@click.option("--test-data", default=None,
              help="With folder:/npz: --data: the test images (a SPEC like --data) that eval, sweep and report attack.")
@click.option("--image-size", type=int, default=None, help="folder: data: resize (short side) and center-crop to N.")
@click.option("--skip-bad", is_flag=True, default=False,
              help="folder: data: leave out images that cannot be read (else the first one is an error).")
@click.option("--model", "model_name", default=None,
              help=f"{_models_by_input()}; see robustopt models list.  [default: madry-mnist]")
@_train_config_options
@click.option("--train-size", type=int, default=None, help="Use only the first N training images.  [default: all]")
@click.option("--out", type=FOLDER, required=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root.")
@click.pass_context
def train(ctx: click.Context, preset: str | None, dataset: str | None, test_data: str | None, image_size: int | None,
          skip_bad: bool, model_name: str | None, train_size: int | None, out: Path, resume: bool, root: Path | None,
          **fields: Any) -> None:
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
                  model=model_name or (recipe.model if recipe else "madry-mnist"), test_data=test_data,
                  image_size=image_size, skip_bad=skip_bad, train_size=train_size,
                  resume=resume, root=root, echo=click.echo, config=recipe.config if recipe else None, **explicit)
    except (ValueError, TypeError, OSError) as err:  # OSError: FileExistsError, an unwritable or busy --out, ...
        fail(err)

