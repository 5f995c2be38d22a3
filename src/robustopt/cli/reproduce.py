"""``robustopt demo`` and ``robustopt reproduce``: the paper's experiment end to end."""

from __future__ import annotations

from pathlib import Path

import click

from robustopt import experiments
from robustopt.cli.group import FOLDER, fail, main

__all__ = ["demo", "reproduce"]


@main.command()
@click.option("--out", type=FOLDER, default=Path("runs/demo"), show_default=True,
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
        experiments.reproduce(experiment, budget, echo=click.echo, **kwargs)
    except (ValueError, TypeError, OSError, ImportError) as err:  # OSError: an unwritable or busy --out, ...
        fail(err)


@main.command()
@click.argument("experiment", type=click.Choice(sorted(experiments.REPRODUCE)))
@click.option("--budget", type=click.Choice(["demo", "cpu", "paper"]), default="demo", show_default=True,
              help="demo: minutes, offline (mnist-mini); cpu: the full dataset on 2 CPU cores (MNIST about 1 h 15 min; "
                   "CIFAR-10 hours, see docs/results.md); "
                   "paper: the paper's recipe, for a GPU.")
@click.option("--out", type=FOLDER, default=None,
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

