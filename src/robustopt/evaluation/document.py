"""The report's document: a few block types, their Markdown and HTML writers, and the figure helpers.

:func:`robustopt.evaluation.report.render` builds a list of blocks (:class:`Heading`,
:class:`Para`, :class:`Table`, :class:`Figure`); :func:`to_markdown` and :func:`to_html` write
them out, the HTML as one self-contained page (images as base64 data URIs, inline CSS, no
external resource, no JavaScript). Figures are drawn on an Agg canvas (:func:`new_figure`, no
display needed) and stored as PNG bytes (:func:`png_bytes`).
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from robustopt.evaluation.tables import render as render_table

__all__ = ["Heading", "Para", "Table", "Figure", "Block", "to_markdown", "to_html", "slugify", "png_bytes",
           "new_figure"]


@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    text: str  # plain text; `backticks` become code
    kind: str = "p"  # "p", "caption" (small, under a table), "note" (highlighted) or "ok" (all clear)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    align_numbers: bool = True  # right-align numeric cells (off for key-value tables)
    styles: list[str] = field(default_factory=list)  # per row, its CSS class in HTML ("" or missing: none)


@dataclass
class Figure:
    png: bytes
    name: str  # file name beside report.md
    caption: str
    alt: str


Block = Union[Heading, Para, Table, Figure]


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(f"*{b.text}*" if b.kind == "caption" else (f"> {b.text}" if b.kind == "note" else b.text))
        elif isinstance(b, Table):
            out.append(render_table(b.header, b.rows, "markdown", caption=f"*{b.caption}*" if b.caption else ""))
        elif isinstance(b, Figure):
            out.append(f"![{b.alt}]({b.name})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


_CODE = re.compile(r"`([^`]+)`")
_NUMERIC = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?$")


def _inline(text: str) -> str:
    """Escaped HTML of ``text`` with `code` spans."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text, quote=True))


def _html_table(t: Table) -> str:
    rows = []
    rows.append("<thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in t.header) + "</tr></thead>")
    body = []
    for i, row in enumerate(t.rows):
        style = t.styles[i] if i < len(t.styles) else ""
        cls = f' class="{style}"' if style else ""
        cells = "".join(f'<td class="num">{_inline(c)}</td>' if t.align_numbers and _NUMERIC.match(c)
                        else f"<td>{_inline(c)}</td>" for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    rows.append("<tbody>" + "\n".join(body) + "</tbody>")
    out = "<table>\n" + "\n".join(rows) + "\n</table>"
    if t.caption:
        out += f'\n<p class="caption">{_inline(t.caption)}</p>'
    return out


def to_html(blocks: Sequence[Block], title: str) -> str:
    return _PAGE.format(title=html.escape(title), css=_CSS, body=_html_blocks(blocks))


def _html_blocks(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{html.escape(b.anchor, quote=True)}"' if b.anchor else ""
            out.append(f"<h{b.level}{anchor}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = f' class="{b.kind}"' if b.kind != "p" else ""
            out.append(f"<p{cls}>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            out.append(_html_table(b))
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt, quote=True)}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
    return "\n".join(out)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: #1f2328; background: #fff; line-height: 1.45; margin: 0; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.8em; border-bottom: 2px solid #d0d7de; padding-bottom: .25em; }
h2 { font-size: 1.45em; margin-top: 2.2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
h3 { font-size: 1.15em; margin-top: 1.6em; }
h4 { font-size: 1em; margin-top: 1.2em; color: #424a53; }
table { border-collapse: collapse; margin: .6em 0 .3em; font-size: .92em; }
th, td { border: 1px solid #b6bec8; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
tbody tr:nth-child(even) { background: #f8f9fb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid #57606a; }
tr.level-error td:first-child { color: #fff; background: #cf222e; font-weight: 600; }
tr.level-warning td:first-child { background: #f5d76e; font-weight: 600; }
tr.level-info td:first-child { background: #dde7f3; }
td code { white-space: nowrap; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .9em;
       background: #eef1f4; padding: 0 3px; border-radius: 3px; }
p.caption { color: #57606a; font-size: .88em; margin: .2em 0 1em; }
p.ok { color: #1a7f37; font-weight: 600; }
p.note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: 6px 10px; }
figure { margin: 1em 0 1.4em; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: .88em; margin-top: .3em; max-width: 900px; }
nav ul { margin: .3em 0; }
a { color: #0969da; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def png_bytes(fig: Any, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def new_figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)  # Agg canvas: no display, no pyplot state
    return fig
