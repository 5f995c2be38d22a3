"""The ``robustopt`` command. Thin: it parses arguments into the library's own objects.

:func:`main` is the command group (:mod:`robustopt.cli.group`, with the option types the
commands share); each theme's commands live in a module of their own and are registered on
``main`` when this package is imported.
"""

from robustopt.cli.group import main, parse_eps
from robustopt.cli import data, evaluate, models, report, reproduce, sweep, train, zoo  # noqa: F401  (registers the commands)

__all__ = ["main", "parse_eps"]
