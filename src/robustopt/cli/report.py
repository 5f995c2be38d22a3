"""``robustopt report`` and ``robustopt card``: the views of a run's results."""

from __future__ import annotations

from pathlib import Path

import click

from robustopt import experiments
from robustopt.cli.group import fail, main
from robustopt.runs import write_card

__all__ = ["report", "card"]


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
        md_path, html_path = experiments.write_report(runs, out=out, root=root, overwrite=overwrite)
    except (ValueError, TypeError, OSError, ImportError) as err:
        fail(err)
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
        path, written = write_card(run, weights=weights, evaluation=evaluation, out=out, link=link,
                                        authors=authors, venue=venue, **fields)
    except (ValueError, TypeError, OSError) as err:
        fail(err)
    click.echo(f"written: {path} ({written['threat_model']} eps {written['eps']} on {written['dataset']}: "
               f"clean {written['clean_acc']}%, robust {written['autoattack_acc']}%)")
    click.echo(f"footnote: {written['footnote']}")
    click.echo(f"For RobustBench, copy it to model_info/{written['dataset']}/{written['threat_model']}/NAME.json "
               "and fill in link, authors and venue if still empty.")
