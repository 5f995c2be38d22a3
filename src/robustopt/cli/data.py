"""``robustopt data list | fetch``: the datasets, where they are looked for, and their download."""

from __future__ import annotations

import os
from pathlib import Path

import click

from robustopt.cli.group import fail, main

__all__ = ["data", "data_list", "data_fetch"]


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
        fail(err)

