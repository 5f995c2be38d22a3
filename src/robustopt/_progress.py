"""Progress display shared by training, evaluation and sweeps: a bar on a terminal, plain lines in a log.

On a terminal (or in Jupyter) :func:`progress_bar` returns a tqdm bar. When stderr
is not a terminal (``robustopt train ... > log 2>&1``, a batch job), it returns a
:class:`PlainProgress` instead, which writes one plain line at most every
:data:`PLAIN_EVERY` seconds and one when the task ends, e.g.::

    epoch 3/10: 700/1080 steps (65%), 2 min 10 s, loss=0.412, acc=0.873
    epoch 3/10: 1080/1080 steps in 3 min 21 s, loss=0.398, acc=0.880, val=0.981, val_rob=0.902

``$ROBUSTOPT_PROGRESS`` overrides the choice: ``bar``, ``plain`` or ``off``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "PlainProgress", "PLAIN_EVERY", "ENV_VAR", "format_seconds"]

PLAIN_EVERY = 30.0  # seconds between two plain progress lines
ENV_VAR = "ROBUSTOPT_PROGRESS"
_STYLES = ("bar", "plain", "off")


def progress_bar(total: int, desc: str, unit: str, *, enabled: bool = True, leave: bool = True) -> Any:
    """A progress display for ``total`` units of work (see the module docstring).

    Args:
        total: units of work (steps, images, eps values).
        desc: what is being done, e.g. "epoch 1/10"; ``set_description`` changes it.
        unit: name of one unit, e.g. "step" or "image".
        enabled: False gives a display that shows nothing (e.g. ``progress=False``, or a
            process other than rank 0 under torchrun).
        leave: keep the bar on the terminal once closed (plain lines are always kept).

    Returns:
        An object with tqdm's ``update``, ``set_description``, ``set_postfix``, ``refresh`` and ``close``.
    """
    style = _style() if enabled else "off"
    if style == "bar":
        return tqdm(total=total, desc=desc, unit=unit, leave=leave)
    if style == "plain":
        return PlainProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=True)


def _style() -> str:
    chosen = os.environ.get(ENV_VAR, "").strip().lower()
    if chosen in _STYLES:
        return chosen
    interactive = "ipykernel" in sys.modules or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return "bar" if interactive else "plain"


class PlainProgress:
    """tqdm's interface, printed as plain lines on stderr: every ``every`` seconds and at the end."""

    def __init__(self, total: int, desc: str, unit: str, every: float | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.every = PLAIN_EVERY if every is None else every
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self._start = self._last = time.monotonic()
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; print a line if the last one is ``every`` seconds old."""
        self.n += n
        if n and self.n < self.total:
            self.refresh()

    def refresh(self) -> None:
        """Print the current line (count, time, postfix) if the last one is ``every`` seconds old."""
        now = time.monotonic()
        if now - self._last >= self.every and not self._closed:
            self._last = now
            share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
            self._write(f"{self.n}/{self.total} {self.unit}s{share}, {format_seconds(now - self._start)}")

    def set_description(self, desc: str, refresh: bool = True) -> None:  # noqa: ARG002 (tqdm's signature)
        self.desc = desc

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,  # noqa: ARG002
                    **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            self._write(f"{self.n}/{self.total} {self.unit}s in {format_seconds(time.monotonic() - self._start)}")

    def _write(self, text: str) -> None:
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {text}{extra}", file=sys.stderr, flush=True)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 5 s`` or ``2 h 10 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
