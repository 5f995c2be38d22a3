"""``robustopt sweep``: robust accuracy over an eps grid, and the grid's syntax."""

from __future__ import annotations

import math
from pathlib import Path

import click

from robustopt._checks import check_grid_size
from robustopt.cli.group import ATTACK_DEVICE, NORM, WEIGHTS, fail, main, parse_eps

__all__ = ["parse_eps_grid", "sweep"]


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
@click.option("--norm", type=NORM, default="linf", show_default=True)
@click.option("--eps", "grid", default="0:0.5:0.05", show_default=True,
              help="Grid START:STOP:STEP (START, START+STEP, ... up to STOP, STOP included when on the grid) "
                   "or a comma list, e.g. 0:30/255:2/255.")
@click.option("--steps", type=int, default=40, show_default=True, help="PGD steps at each eps (step 2.5*eps/steps).")
@click.option("--n", "limit", type=int, default=1000, show_default=True, help="First N test images.")
@click.option("--batch-size", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Data root.")
@ATTACK_DEVICE
@click.option("--independent", is_flag=True,
              help="Attack every clean-correct example at every eps (no cascade; the reference cost). "
                   "Writes RUN/sweep-NORM-independent.*.")
@WEIGHTS
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
        fail(err)
