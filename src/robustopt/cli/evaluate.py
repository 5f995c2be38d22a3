"""``robustopt eval``: a run folder, a zoo entry, or a user's model and data against a suite."""

from __future__ import annotations

from pathlib import Path

import click

from robustopt import runs, zoo
from robustopt.cli.group import ATTACK_DEVICE, EPS, NORM, NUMBERS, fail, main
from robustopt.evaluation import suites
from robustopt.threat import Linf

__all__ = ["eval_"]


@main.command("eval")
@click.argument("run", metavar="[RUN | zoo:NAME]", required=False)
@click.option("--suite", type=click.Choice(suites.names()), default="madry", show_default=True,
              help="; ".join(f"{name}: {entry.summary}" for name, entry in suites.SUITES.items()) + ".")
@click.option("--source", "sources", multiple=True, metavar="NAME=RUN",
              help="Transfer source, e.g. \"A'=runs/a2\" or B=runs/b; repeatable.")
@click.option("--norm", type=NORM, default=None, help="Default: the run's training norm.")
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
@ATTACK_DEVICE
@click.option("--weights", default=None, metavar="final|best|FILE",
              help="RUN: final (default) or best (the best validation epoch, results in *-best.*). With --model: "
                   "the model's state dict (.safetensors, or .pt read with weights_only=True).")
@click.option("--model", "model_spec", default=None, metavar="SPEC",
              help="Your model instead of RUN: a registry name | FILE.py:factory | package.module:factory | "
                   "torchscript:PATH | export:PATH. Needs --data, --eps and --out.")
@click.option("--data", "data_spec", default=None, metavar="SPEC",
              help="With --model: a dataset name (its test split) | folder:PATH (one sub-folder per class) | "
                   "npz:PATH (arrays x, y). Read batch by batch.")
@click.option("--mean", type=NUMBERS, default=None, help="With --model: per-channel mean the model expects its "
              "inputs normalized with, e.g. 0.485,0.456,0.406 (with --std; the model then takes [0, 1] images).")
@click.option("--std", type=NUMBERS, default=None, help="With --model: per-channel std, e.g. 0.229,0.224,0.225.")
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
        if weights not in runs.WEIGHTS:
            raise ValueError(f"--weights for a run folder is final or best, got {weights!r}; a weights file goes "
                             "with --model SPEC.")
        if run.startswith(zoo.PREFIX):  # a copy of the entry's run folder, outside the zoo
            run = zoo.prepare_run(run, out)
            click.echo(f"zoo entry {run.name}: evaluating in {run}")
        elif out is not None:
            raise ValueError("--out applies to zoo:NAME only; the results of RUN are written into RUN.")
        parsed = _parse_sources(sources)
        eval_run(run, suite=suite, sources=parsed, norm=norm, eps=eps, limit=limit, max_restarts=max_restarts,
                 mode=mode, batch_size=batch_size, seed=seed, root=root, echo=click.echo, restart=restart,
                 device=device, weights=weights, overwrite=overwrite)
    except (ValueError, TypeError, OSError, ImportError) as err:  # ImportError: Pillow missing
        fail(err)


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
               image_size=image_size, skip_bad=skip_bad, norm=norm or Linf, echo=click.echo, **eval_args)


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
