"""``robustopt models list``: the registered models."""

from __future__ import annotations

import click

from robustopt.cli.group import main

__all__ = ["models", "models_list"]


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
