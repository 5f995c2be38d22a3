"""The ``robustopt`` command group and what its commands share: option types, options, the error line.

The commands live beside this module, one per theme (``train``, ``evaluate``, ``sweep``,
``report``, ``reproduce``, ``data``, ``models``, ``zoo``); importing :mod:`robustopt.cli`
registers them all on :func:`main`.
"""

from __future__ import annotations

import os
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import click

from robustopt import runs, threat
from robustopt._checks import EpsWarning

__all__ = ["main", "parse_eps", "fail", "EPS", "NUMBERS", "FOLDER", "NORM", "ATTACK_DEVICE", "WEIGHTS"]


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


NUMBERS = _Numbers()


class _Folder(click.Path):
    """A folder to write, never empty text: ``--out "$UNSET"`` would otherwise mean the current folder."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx):  # noqa: D102
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; name a folder, e.g. runs/a.", param, ctx)
        return super().convert(value, param, ctx)


FOLDER = _Folder()


class _Norm(click.Choice):
    """A norm name of the command line ("linf", "l2", "l1"), converted to its threat-model class once, here."""

    def __init__(self) -> None:
        super().__init__(threat.names())

    def convert(self, value, param, ctx):  # noqa: D102
        if isinstance(value, type) and issubclass(value, threat.ThreatModel):
            return value
        return threat.by_name(super().convert(value, param, ctx))


NORM = _Norm()

# Options that eval and sweep share.
ATTACK_DEVICE = click.option("--device", default="cpu", show_default=True,
                             help="cpu | cuda | cuda:N | auto; under torchrun, cuda means each process's own GPU.")
WEIGHTS = click.option("--weights", type=click.Choice(list(runs.WEIGHTS)), default="final", show_default=True,
                       help="final: the weights training ended with (model.*); best: the best validation epoch "
                            "(best.*, kept with --early-stopping-patience). Results of best go to *-best.* files.")


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """EpsWarning as one plain ``warning: ...`` line on stderr; other warnings as Python shows them."""
    if issubclass(category, EpsWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def fail(err: Exception) -> None:
    """Print ``err`` as one ``error: ...`` line on stderr (a raw OS error names its path) and exit with status 2."""
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
            fail(err)
