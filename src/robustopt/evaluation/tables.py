"""The one table renderer: every table robustopt prints or writes goes through :func:`render`.

Results are data; a table is a view of their cells (strings). Text tables pad each column to
its widest cell, two spaces apart, with a dashed rule under the header (and above a footer);
Markdown tables are pipe tables whose cells have ``|`` escaped and line breaks removed. Both
end without a newline; a caption follows the table after one line break (text) or a blank
line (Markdown).

Example:
    >>> print(render(["eps", "Accuracy"], [["0.1", "91.0%"], ["0.3", "89.3%"]], align="right"))
    eps  Accuracy
    -------------
    0.1     91.0%
    0.3     89.3%
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

__all__ = ["render", "markdown_cell"]

Format = Literal["text", "markdown"]
FORMATS: tuple[str, ...] = ("text", "markdown")
_ALIGN = {"left": "<", "right": ">"}


def markdown_cell(value: Any) -> str:
    """``value`` as the text of one Markdown table cell: ``|`` escaped, line breaks as spaces."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(
    header: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    fmt: Format = "text",
    *,
    align: Literal["left", "right"] = "left",
    footer: int = 0,
    caption: str = "",
) -> str:
    """A table of ``rows`` under ``header``, as text for the terminal or as Markdown.

    Args:
        header: the column names.
        rows: the lines of the table, one cell per column (``str()`` of each is shown).
        fmt: "text" (padded columns, trailing spaces dropped) or "markdown" (a pipe table).
        align: how text columns are padded: "left" or "right".
        footer: how many last rows are totals; the text format sets them off by a second rule.
        caption: a line under the table ("" for none).

    Returns:
        The table, without a final newline.

    Raises:
        ValueError: an unknown ``fmt`` or ``align``, a negative ``footer``, or a row whose length
            differs from the header's.

    Example:
        >>> render(["Method", "Accuracy"], [["PGD", "89.3%"]], "markdown")
        '| Method | Accuracy |\\n|---|---|\\n| PGD | 89.3% |'
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}.")
    if align not in _ALIGN:
        raise ValueError(f"align must be 'left' or 'right', got {align!r}.")
    if isinstance(footer, bool) or not isinstance(footer, int) or not 0 <= footer <= len(rows):
        raise ValueError(f"footer must be an integer from 0 to the number of rows ({len(rows)}), got {footer!r}.")
    head = [str(c) for c in header]
    body = [[str(c) for c in row] for row in rows]
    for row in body:
        if len(row) != len(head):
            raise ValueError(f"every row needs one cell per column ({len(head)}: {head}); got {row}.")
    if fmt == "markdown":
        out = ["| " + " | ".join(markdown_cell(c) for c in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in body]
        return "\n".join(out) + (f"\n\n{caption}" if caption else "")
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    line = "  ".join("{:%s%d}" % (_ALIGN[align], w) for w in widths)
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    split = len(body) - footer
    out = [line.format(*head), rule] + [line.format(*row) for row in body[:split]]
    if footer:
        out += [rule] + [line.format(*row) for row in body[split:]]
    return "\n".join(s.rstrip() for s in out) + (f"\n{caption}" if caption else "")
