"""``robustopt zoo list``: the model zoo's entries and leaderboard."""

from __future__ import annotations

import click

from robustopt import zoo as _zoo
from robustopt.cli.group import fail, main

__all__ = ["zoo", "zoo_list"]


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
            click.echo(_zoo.leaderboard())
            return
        items = _zoo.entries()
    except (ValueError, OSError) as err:
        fail(err)
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
