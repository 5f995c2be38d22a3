"""Reports: one Markdown file and one self-contained HTML page for one or more run folders.

For every run folder (made by ``robustopt train``, see :mod:`robustopt.experiments`)
the report shows:

* the run (``run.json`` and the main training settings of ``config.json``);
* the training curve: clean and robust validation accuracy per epoch (``log.jsonl``);
* every ``eval-SUITE.json`` as the paper's table (Method | Steps | Restarts | Source |
  Accuracy), with Madry et al.'s (2018) numbers beside ours when the evaluation is the
  madry suite on MNIST at L-inf eps = 0.3 (Table 1) or CIFAR-10 at 8/255 (Table 2);
* every ``sweep-NORM.json`` as a plot (training eps marked) and a table;
* the gradient-masking audit (:func:`robustopt.audit`) of the model on the first 200
  test images and of every evaluation and sweep;
* a gallery of adversarial examples: 8 correctly classified test images, the PGD-40
  adversarial image at the run's threat model, and the perturbation magnified to the
  full range, with the predicted labels;
* the environment: versions, platform, CPUs, git commit, seeds and the time of the report.

``report.md`` refers to PNG files written beside it; ``report.html`` is one
self-contained page (images embedded as base64 data URIs, inline CSS, no external
resource, no JavaScript) that can be mailed or archived as a single file. Every file
is written atomically. Plots need matplotlib (``pip install robustopt[report]``).

Example:
    >>> md_path, html_path = write_report(["runs/a", "runs/nat"], out="runs/report")
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from torch import nn

from robustopt._io import atomic_write_bytes, atomic_write_text
from robustopt._runfolder import hold, refuse_replacement
from robustopt.evaluation import suites
from robustopt.evaluation.audit import LEVELS, audit, findings_table
from robustopt.evaluation.evaluate import Evaluation, row_key
from robustopt.evaluation.sweep import SweepCurve
from robustopt.threat import L1, L2, Linf, ThreatModel

__all__ = ["write_report", "madry_reference", "REPORT_MD", "REPORT_HTML", "AUDIT_SIZE", "GALLERY_SIZE", "GALLERY_STEPS"]

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
_REQUEST_LINE = "<!-- robustopt-report {} -->"  # report.md's first line: the runs it shows (invisible when rendered)
AUDIT_SIZE = 200  # test images the audit probes
GALLERY_SIZE = 8  # correctly classified test images in the gallery
GALLERY_STEPS = 40  # PGD steps of the gallery's attack (step 2.5 * eps / steps, random start)

PathLike = Union[str, "os.PathLike[str]"]
_THREATS: dict[str, type[ThreatModel]] = {"linf": Linf, "l2": L2, "l1": L1}
# Which reference table of the paper applies, by dataset, and at which L-inf eps.
_REFERENCE_DATA = {"mnist": "mnist", "mnist-mini": "mnist", "cifar10": "cifar10"}
_REFERENCE_EPS = {"mnist": 0.3, "cifar10": 8 / 255}
_REFERENCE_SOURCE = {
    "mnist": "Madry et al. (2018), Table 1: full MNIST, 100k training steps, up to 20 restarts",
    "cifar10": "Madry et al. (2018), Table 2: full CIFAR-10, wide ResNet",
}


# --- the document: a few block types, rendered to Markdown and to HTML ---------------------
@dataclass
class _Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class _Para:
    text: str  # plain text; `backticks` become code
    kind: str = "p"  # "p", "caption" (small, under a table) or "note" (highlighted)


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    align_numbers: bool = True  # right-align numeric cells (off for key-value tables)


@dataclass
class _Figure:
    png: bytes
    name: str  # file name beside report.md
    caption: str
    alt: str


@dataclass
class _Reused:
    """Markdown made by a library view (``Evaluation.table``, ``findings_table``, ...), kept verbatim
    in report.md and parsed into tables and captions for the HTML page."""

    markdown: str
    blocks: list[Any] = field(default_factory=list)


Block = Union[_Heading, _Para, _Table, _Figure, _Reused]


def _parse_markdown_tables(text: str) -> list[Block]:
    """Pipe tables and the plain lines around them, as produced by the library's markdown views."""
    lines = text.strip("\n").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|"):
            table = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                table.append(lines[i])
                i += 1
            cells = [_split_row(line) for line in table]
            body = [c for c in cells[1:] if not all(re.fullmatch(r":?-+:?", x) for x in c)]
            blocks.append(_Table(cells[0], body))
        else:
            if lines[i].strip():
                blocks.append(_Para(lines[i].strip(), "caption"))
            i += 1
    return blocks


def _split_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in line.split("|")]


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, _Para):
            out.append(f"*{b.text}*" if b.kind == "caption" else (f"> {b.text}" if b.kind == "note" else b.text))
        elif isinstance(b, _Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |", "|" + "|".join("---" for _ in b.header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines) + (f"\n\n*{b.caption}*" if b.caption else ""))
        elif isinstance(b, _Figure):
            out.append(f"![{b.alt}]({b.name})\n\n*{b.caption}*")
        elif isinstance(b, _Reused):
            out.append(b.markdown.strip("\n"))
    return "\n\n".join(out) + "\n"


_CODE = re.compile(r"`([^`]+)`")
_NUMERIC = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?$")


def _inline(text: str) -> str:
    """Escaped HTML of ``text`` with `code` spans."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text, quote=True))


def _html_table(t: _Table) -> str:
    rows = []
    rows.append("<thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in t.header) + "</tr></thead>")
    body = []
    for row in t.rows:
        first = row[0] if row else ""
        cls = ""
        if first in LEVELS:
            cls = f' class="level-{first}"'
        elif first.startswith("Worst case"):
            cls = ' class="total"'
        cells = "".join(f'<td class="num">{_inline(c)}</td>' if t.align_numbers and _NUMERIC.match(c)
                        else f"<td>{_inline(c)}</td>" for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    rows.append("<tbody>" + "\n".join(body) + "</tbody>")
    out = "<table>\n" + "\n".join(rows) + "\n</table>"
    if t.caption:
        out += f'\n<p class="caption">{_inline(t.caption)}</p>'
    return out


def _to_html(blocks: Sequence[Block], title: str) -> str:
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, _Reused):
            parts.append('<div class="reused">' + _html_blocks(b.blocks) + "</div>")
        else:
            parts.append(_html_blocks([b]))
    return _PAGE.format(title=html.escape(title), css=_CSS, body="\n".join(parts))


def _html_blocks(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, _Heading):
            anchor = f' id="{html.escape(b.anchor, quote=True)}"' if b.anchor else ""
            out.append(f"<h{b.level}{anchor}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, _Para):
            cls = f' class="{b.kind}"' if b.kind != "p" else ""
            out.append(f"<p{cls}>{_inline(b.text)}</p>")
        elif isinstance(b, _Table):
            out.append(_html_table(b))
        elif isinstance(b, _Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt, quote=True)}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, _Reused):
            out.append(_html_blocks(b.blocks))
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


# --- input checks -------------------------------------------------------------------------
def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "robustopt report draws its plots with matplotlib, which is not installed: "
            "install it with `pip install robustopt[report]` (or `pip install matplotlib`)."
        ) from err


def _check_runs(runs: Any) -> list[Path]:
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    try:
        folders = [Path(r) for r in runs]
    except TypeError:
        raise TypeError(f"runs must be a run folder or a list of run folders, got {runs!r}.") from None
    if not folders:
        raise ValueError("no run folders given: pass at least one folder made by `robustopt train --out RUN`.")
    for run in folders:
        if not run.exists():
            raise FileNotFoundError(f"run folder {run} does not exist; pass a folder made by `robustopt train --out {run}`.")
        if not run.is_dir():
            raise ValueError(f"{run} is a file, not a run folder; pass the folder that holds run.json "
                             "(made by `robustopt train --out RUN`).")
        if not (run / "run.json").is_file():
            raise FileNotFoundError(
                f"{run} is not a robustopt run folder (no run.json): pass a folder made by "
                "`robustopt train --out RUN` (run.json is written when its training has finished; continue an "
                "interrupted training with `robustopt train --resume ...`)."
            )
        if not (run / "model.json").is_file():
            raise FileNotFoundError(f"{run} has run.json but no model checkpoint (model.json); train it again with "
                                    f"`robustopt train --out {run}`.")
    return folders


# --- helpers ------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def _pct(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}%"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _new_figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)  # Agg canvas: no display, no pyplot state
    return fig


def _evaluation_threat(ev: Evaluation) -> ThreatModel | None:
    """The threat model of an evaluation: from its rows' attack configuration, else ``meta.threat``."""
    for r in ev.rows:
        spec = r.attack if isinstance(r.attack, dict) else {}
        t = spec.get("threat")
        if t is None and isinstance(spec.get("attack"), dict):  # Transfer: the inner attack's threat
            t = spec["attack"].get("threat")
        if isinstance(t, dict) and str(t.get("norm", "")).lower() in _THREATS:
            return _THREATS[str(t["norm"]).lower()](float(t["eps"]), bounds=tuple(t.get("bounds", (0.0, 1.0))))
    m = re.fullmatch(r"(\w+)\(eps=([^)]+)\)", str(ev.meta.get("threat") or ""))
    if m and m.group(1).lower() in _THREATS:
        return _THREATS[m.group(1).lower()](float(m.group(2)))
    return None


def madry_reference(ev: Evaluation, data: str | None) -> tuple[dict[tuple, float], str] | None:
    """The paper's numbers for ``ev`` and where they come from, when it is the madry suite on MNIST at
    L-inf eps 0.3 or CIFAR-10 at 8/255; None otherwise."""
    preset = _REFERENCE_DATA.get(str(data))
    threat = _evaluation_threat(ev)
    if preset is None or threat is None or threat.norm != "Linf":
        return None
    if not math.isclose(threat.eps, _REFERENCE_EPS[preset], rel_tol=1e-3):
        return None
    reference = suites.MADRY_REFERENCE[preset]
    if not any(row_key(r) in reference for r in ev.rows if r.name != "Natural"):
        return None  # not the madry suite (e.g. APGD / Square rows)
    return reference, _REFERENCE_SOURCE[preset]


def _result_files(run: Path, kind: str) -> list[Path]:
    """``KIND-NAME.json`` files of a run: eval-madry.json, sweep-linf.json (not eval-madry.progress.json)."""
    return sorted(p for p in run.glob(f"{kind}-*.json") if p.is_file() and "." not in p.name[: -len(".json")])


def _read_log(path: Path) -> list[dict[str, Any]]:
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as err:
                raise ValueError(f"{path}, line {i}, is not JSON ({err}); the training log is damaged.") from err
    return records


def _git_commit() -> str:
    """HEAD of the git working tree robustopt is imported from, "+ uncommitted changes" if dirty; "" if none."""
    import robustopt

    folder = Path(robustopt.__file__).resolve().parent
    try:
        # Only when the package's own source is tracked there (not a site-packages copy inside some repo).
        subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=folder, capture_output=True,
                       check=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + (" (+ uncommitted changes)" if dirty else "")


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001  (not installed, or no metadata)
        module = sys.modules.get(package)
        return str(getattr(module, "__version__", "")) if module else ""


# --- the sections of one run --------------------------------------------------------------
@dataclass
class _RunContext:
    path: Path
    slug: str
    info: dict[str, Any]
    config: dict[str, Any]
    out: Path
    root: PathLike | None
    model: nn.Module | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None

    @property
    def threat(self) -> ThreatModel | None:
        norm = str(self.info.get("norm", "")).lower()
        if norm not in _THREATS or self.info.get("eps") is None:
            return None
        return _THREATS[norm](float(self.info["eps"]))

    @property
    def seed(self) -> int:
        return int(self.info.get("seed") or 0)

    def figure(self, png: bytes, kind: str, caption: str, alt: str) -> _Figure:
        name = f"report-{self.slug}-{kind}.png"
        atomic_write_bytes(self.out / name, png)
        return _Figure(png, name, caption, alt)

    def load(self) -> None:
        from robustopt import data as datasets
        from robustopt.experiments import load_run

        self.model, _ = load_run(self.path)
        x, y = datasets.load(self.info["data"], "test", root=self.root)
        self.x, self.y = x[:AUDIT_SIZE], y[:AUDIT_SIZE]


def _run_info(ctx: _RunContext) -> list[Block]:
    rows = [[k, _fmt(v)] for k, v in ctx.info.items()]
    shown = set(ctx.info)
    for key in ("epochs", "batch_size", "optimizer", "lr", "lr_schedule", "attack_steps", "attack_step_size",
                "eps_warmup_epochs", "val_size", "val_attack_steps", "device"):
        if key in ctx.config and key not in shown:
            rows.append([key, _fmt(ctx.config[key])])
    return [_Table(["Setting", "Value"], rows, align_numbers=False,
                   caption=f"From {ctx.path / 'run.json'}" + (" and config.json." if ctx.config else "."))]


def _training(ctx: _RunContext) -> list[Block]:
    blocks: list[Block] = [_Heading(3, "Training curve")]
    path = ctx.path / "log.jsonl"
    if not path.is_file():
        return blocks + [_Para(f"No training log ({path} is missing).", "note")]
    log = _read_log(path)
    if not log:
        return blocks + [_Para(f"The training log {path} is empty.", "note")]
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(log)]

    def series(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else 100 * float(r[key]) for r in log]

    fig = _new_figure((6.4, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    clean, robust, train = series("val_clean_acc"), series("val_robust_acc"), series("train_acc")
    threat = ctx.threat
    ax.plot(epochs, clean, marker="o", color="tab:blue", label="validation, clean")
    ax.plot(epochs, robust, marker="s", color="tab:red",
            label=f"validation, robust (PGD, {threat})" if threat is not None else "validation, robust")
    ax.plot(epochs, train, linestyle="--", marker="^", markersize=4, color="gray", alpha=0.8,
            label="training batches (crafted by the method)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{ctx.info.get('model', '')} on {ctx.info.get('data', '')}, method {ctx.info.get('method', '')}")
    fig.tight_layout()
    last = log[-1]
    seconds = sum(float(r.get("seconds") or 0) for r in log)
    caption = (f"Accuracy per epoch on the held-out validation images (clean, and under the validation PGD "
               f"attack at the training threat), and on the training batches. Last epoch {epochs[-1]}: "
               f"validation clean {_pct(last.get('val_clean_acc')) or 'n/a'}, robust "
               f"{_pct(last.get('val_robust_acc')) or 'n/a'}; training took {seconds:.{1 if seconds < 10 else 0}f} s.")
    blocks.append(ctx.figure(_png(fig), "training", caption, f"training curve of {ctx.path}"))
    return blocks


def _evaluations(ctx: _RunContext, files: list[Path], evs: list[Evaluation]) -> list[Block]:
    blocks: list[Block] = [_Heading(3, "Evaluations")]
    if not files:
        return blocks + [_Para(f"No evaluation yet: run `robustopt eval {ctx.path}`.", "note")]
    for path, ev in zip(files, evs):
        blocks.append(_Heading(4, f"{path.name}"))
        ref = madry_reference(ev, ev.meta.get("data", ctx.info.get("data")))
        details = [f"{ev.n} test images", f"mode {ev.mode}", f"seed {ev.seed}"]
        if ev.meta.get("threat"):
            details.insert(0, f"threat {ev.meta['threat']}")
        if ev.meta.get("sources"):
            details.append("transfer sources: " + ", ".join(f"{k} = {v}" for k, v in ev.meta["sources"].items()))
        if ev.meta.get("seconds") is not None:
            details.append(f"{float(ev.meta['seconds']):.0f} s on {ev.meta.get('device', '?')}")
        blocks.append(_Para("; ".join(details) + "."))
        md = ev.table("markdown", reference=ref[0] if ref else None)
        blocks.append(_Reused(md, _parse_markdown_tables(md)))
        if ref:
            blocks.append(_Para(f"Paper: {ref[1]}. Ours: measured on this run's model with the budget above.",
                                "caption"))
    return blocks


def _sweeps(ctx: _RunContext, files: list[Path], curves: list[SweepCurve]) -> list[Block]:
    blocks: list[Block] = [_Heading(3, "Epsilon sweeps")]
    if not files:
        return blocks + [_Para(f"No sweep yet: run `robustopt sweep {ctx.path}`.", "note")]
    for path, curve in zip(files, curves):
        blocks.append(_Heading(4, path.name))
        same_norm = str(ctx.info.get("norm", "")).lower() == curve.norm.lower()
        train_eps = ctx.info.get("eps") if same_norm else None
        png_path = ctx.out / f"report-{ctx.slug}-{_slug(path.stem)}.png"
        curve.plot(png_path, train_eps=train_eps, title=f"{curve.norm} sweep of {ctx.path.name}, {curve.n} examples")
        caption = (f"Robust accuracy against eps ({curve.norm}, {curve.mode}; attacks: "
                   + ", ".join(str(a.get("name", a.get("type", "?"))) + (f" {a['steps']} steps" if a.get("steps") else "")
                               for a in curve.attacks)
                   + ")" + (f"; the dashed line is the training eps {float(train_eps):.4g}." if train_eps is not None else "."))
        blocks.append(_Figure(png_path.read_bytes(), png_path.name, caption, f"{curve.norm} sweep of {ctx.path}"))
        md = curve.table("markdown")
        blocks.append(_Reused(md, _parse_markdown_tables(md)))
    return blocks


def _audit(ctx: _RunContext, eval_files: list[Path], evs: list[Evaluation],
           sweep_files: list[Path], curves: list[SweepCurve]) -> list[Block]:
    assert ctx.model is not None and ctx.x is not None and ctx.y is not None
    blocks: list[Block] = [_Heading(3, "Audit (gradient masking and evaluation checks)")]
    parts: list[tuple[str, list[Any]]] = []
    data = (ctx.x, ctx.y)
    if evs:
        parts.append((f"Model on the first {len(ctx.x)} test images, and {eval_files[0].name}",
                      audit(ctx.model, data, evs[0], seed=ctx.seed)))
        parts += [(f, audit(None, evaluation=ev, seed=ctx.seed)) for f, ev in
                  zip((p.name for p in eval_files[1:]), evs[1:])]
    else:
        parts.append((f"Model on the first {len(ctx.x)} test images", audit(ctx.model, data, threat=ctx.threat, seed=ctx.seed)))
    parts += [(p.name, audit(None, sweep=c, seed=ctx.seed)) for p, c in zip(sweep_files, curves)]
    for title, findings in parts:
        blocks.append(_Heading(4, title))
        md = findings_table(findings, fmt="markdown")
        parsed = _parse_markdown_tables(md)
        for b in parsed:  # the "Audit: ..." summary line is the result, not a caption
            if isinstance(b, _Para):
                b.kind = "p" if findings else "ok"
        blocks.append(_Reused(md, parsed))
    blocks.append(_Para("Levels: error = the reported robustness is very likely wrong; warning = suspicious; "
                        "info = context. See `robustopt.evaluation.audit` for every check.", "caption"))
    return blocks


def _gallery(ctx: _RunContext, class_names: Sequence[str]) -> list[Block]:
    from robustopt.attacks import PGD
    from robustopt.attacks.base import eval_mode, predict

    assert ctx.model is not None and ctx.x is not None and ctx.y is not None
    blocks: list[Block] = [_Heading(3, "Adversarial examples")]
    threat = ctx.threat
    if threat is None or threat.eps <= 0:
        return blocks + [_Para(f"No gallery: the run's threat model ({ctx.info.get('norm')}, eps "
                               f"{ctx.info.get('eps')}) has no perturbation budget.", "note")]
    model = ctx.model
    with eval_mode(model), torch.no_grad():
        ok = predict(model, ctx.x).argmax(1) == ctx.y
    idx = ok.nonzero().squeeze(1)[:GALLERY_SIZE]
    if len(idx) == 0:
        return blocks + [_Para(f"No gallery: the model classifies none of the first {len(ctx.x)} test images "
                               "correctly.", "note")]
    x, y = ctx.x[idx], ctx.y[idx]
    attack = PGD(threat, steps=GALLERY_STEPS, seed=ctx.seed)
    x_adv = attack(model, x, y)
    with eval_mode(model), torch.no_grad():
        pred_adv = predict(model, x_adv).argmax(1)
    delta = (x_adv - x).detach()
    name = lambda k: class_names[k] if k < len(class_names) else str(k)  # noqa: E731

    n = len(idx)
    fig = _new_figure((max(1.3 * n, 4.0) + 0.6, 4.9))
    lo, hi = threat.bounds
    for j in range(n):
        img, adv, d = x[j].cpu().numpy(), x_adv[j].detach().cpu().numpy(), delta[j].cpu().numpy()
        m = float(np.abs(d).max())
        cells = []
        for row in range(3):
            ax = fig.add_subplot(3, n, row * n + j + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            cells.append(ax)
        _show(cells[0], img, lo, hi)
        _show(cells[1], adv, lo, hi)
        if img.shape[0] == 1:
            cells[2].imshow(d[0], cmap="bwr", vmin=-max(m, 1e-12), vmax=max(m, 1e-12), interpolation="nearest")
        else:
            cells[2].imshow(np.clip(0.5 + 0.5 * d.transpose(1, 2, 0) / max(m, 1e-12), 0, 1), interpolation="nearest")
        fooled = int(pred_adv[j]) != int(y[j])
        cells[0].set_title(f"clean: {name(int(y[j]))}", fontsize=8, color="darkgreen")
        cells[1].set_title(f"adv: {name(int(pred_adv[j]))}", fontsize=8,
                           color="red" if fooled else "darkgreen", fontweight="bold" if fooled else "normal")
        cells[2].set_title(f"max |δ| {m:.3g}", fontsize=7, color="dimgray")
        if j == 0:
            cells[0].set_ylabel("clean", fontsize=8)
            cells[1].set_ylabel("adversarial", fontsize=8)
            cells[2].set_ylabel("perturbation\n(magnified)", fontsize=8)
    fig.suptitle(f"PGD-{GALLERY_STEPS} adversarial examples, {threat}", fontsize=10)
    fig.tight_layout()
    fooled_count = int((pred_adv != y).sum())
    caption = (f"The first {n} test images the model classifies correctly. Row 1: clean image and its label; row 2: "
               f"adversarial image (PGD, {GALLERY_STEPS} steps of 2.5·eps/{GALLERY_STEPS}, random start, seed "
               f"{ctx.seed}, {threat}) and the model's prediction, red when wrong ({fooled_count} of {n} fooled); "
               "row 3: the perturbation x_adv − x divided by its largest absolute value"
               + (" (blue: darker, red: brighter)." if x.shape[1] == 1 else " (gray: no change)."))
    blocks.append(ctx.figure(_png(fig), "adversarial", caption, f"adversarial examples of {ctx.path}"))
    return blocks


def _show(ax: Any, img: np.ndarray, lo: float, hi: float) -> None:
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    else:
        ax.imshow(np.clip((img.transpose(1, 2, 0) - lo) / (hi - lo), 0, 1), interpolation="nearest")


def _run_sections(ctx: _RunContext, index: int) -> tuple[list[Block], dict[str, str]]:
    from robustopt import data as datasets

    eval_files = _result_files(ctx.path, "eval")
    evs = [Evaluation.from_json(p) for p in eval_files]
    sweep_files = _result_files(ctx.path, "sweep")
    curves = [SweepCurve.from_json(p) for p in sweep_files]
    ctx.load()
    try:
        class_names: Sequence[str] = datasets.info(ctx.info["data"]).classes
    except ValueError:
        class_names = ()

    blocks: list[Block] = [_Heading(2, f"Run {index}: {ctx.path}", anchor=f"run-{index}")]
    blocks += _run_info(ctx)
    blocks += _training(ctx)
    blocks += _evaluations(ctx, eval_files, evs)
    blocks += _sweeps(ctx, sweep_files, curves)
    blocks += _audit(ctx, eval_files, evs, sweep_files, curves)
    blocks += _gallery(ctx, class_names)

    first = evs[0] if evs else None
    summary = {
        "run": str(ctx.path), "data": _fmt(ctx.info.get("data")), "model": _fmt(ctx.info.get("model")),
        "method": _fmt(ctx.info.get("method")), "threat": str(ctx.threat) if ctx.threat is not None else "",
        "clean": _pct(first.clean_accuracy) if first else "",
        "robust": (f"{_pct(first.robust_accuracy)} ({eval_files[0].name})" if first else "not evaluated"),
    }
    return blocks, summary


def _environment(runs: list[_RunContext], now: datetime.datetime) -> list[Block]:
    rows = [
        ["robustopt", _version("robustopt")],
        ["torch", torch.__version__],
        ["numpy", np.__version__],
        ["matplotlib", _version("matplotlib")],
        ["python", platform.python_version() + f" ({platform.python_implementation()})"],
        ["platform", platform.platform()],
        ["CPUs", str(os.cpu_count() or "?")],
        ["torch threads", str(torch.get_num_threads())],
        ["git commit", _git_commit() or "not a git working tree"],
        ["seeds", ", ".join(f"{r.path.name}: {r.seed}" for r in runs)],
        ["report time", now.isoformat(timespec="seconds")],
    ]
    return [_Heading(2, "Environment", anchor="environment"),
            _Table(["Item", "Value"], rows, align_numbers=False,
                   caption="Where this report was made. Each run's training machine and versions are in its "
                           "checkpoint (model.json) and in each evaluation's meta.")]


# --- the entry point ----------------------------------------------------------------------
def write_report(runs: PathLike | Iterable[PathLike], out: PathLike | None = None, *,
                 root: PathLike | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``report.md`` (with PNG figures beside it) and a self-contained ``report.html`` for run folders.

    Per run: ``run.json``, the training curve (``log.jsonl``), every ``eval-*.json`` as the paper's
    table (with Madry et al.'s numbers for the madry suite on MNIST at L-inf 0.3 or CIFAR-10 at 8/255),
    every ``sweep-*.json`` as a plot and a table, ``ro.audit`` of the model on the first 200 test images
    and of the results, and 8 PGD-40 adversarial examples; then the environment.

    Args:
        runs: one run folder or a list of them (made by ``robustopt train`` / ``train_run``).
        out: folder for the report files (created); default: the first run folder.
        root: data root for the test images (default: ``$ROBUSTOPT_DATA``, else the user cache).
        overwrite: replace a report of other runs in ``out`` (report.md records its runs on its
            first line); a report of the same runs is always refreshed.

    Returns:
        ``(md_path, html_path)``.

    Raises:
        FileNotFoundError: a folder does not exist or is not a finished run (no run.json / model),
            or the test data is missing.
        ValueError: a path is a file, no runs were given, or a result file is damaged.
        ImportError: matplotlib is not installed (``pip install robustopt[report]``).
        FileExistsError: ``out`` holds a report of other runs and ``overwrite`` is False.
        OSError: ``out`` cannot be written, or another process holds it
            (``robustopt._runfolder.RunFolderBusyError``).

    Example:
        >>> md_path, html_path = write_report(["runs/a"])   # runs/a/report.md, runs/a/report.html
    """
    folders = _check_runs(runs)
    _require_matplotlib()
    out_dir = Path(out) if out is not None else folders[0]
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; pass a folder for report.md, report.html and the figures.")
    # What defines a report: its runs, relative to the report (the same wherever the command runs from).
    request = {"runs": [os.path.relpath(run.resolve(), out_dir.resolve()) for run in folders]}
    with hold(out_dir, "report"):
        refuse_replacement(out_dir / REPORT_MD, request, _report_request(out_dir / REPORT_MD),
                           overwrite=overwrite, what="report")
        return _write_report(folders, out_dir, root, request)


def _report_request(md_path: Path) -> dict[str, Any] | None:
    """The request recorded on the first line of an existing report.md (None if there is none)."""
    try:
        with open(md_path, encoding="utf-8") as f:
            first = f.readline()
    except OSError:
        return None
    match = re.fullmatch(_REQUEST_LINE.format(r"(\{.*\})") + r"\n?", first)
    try:
        request = json.loads(match.group(1)) if match else None
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def _write_report(folders: list[Path], out_dir: Path, root: PathLike | None,
                  request: dict[str, Any]) -> tuple[Path, Path]:
    """The body of :func:`write_report`, with ``out_dir`` held."""
    now = datetime.datetime.now().astimezone()

    contexts: list[_RunContext] = []
    used: set[str] = set()
    for i, run in enumerate(folders, 1):
        try:
            info = json.loads((run / "run.json").read_text())
        except ValueError as err:
            raise ValueError(f"{run / 'run.json'} is not valid JSON ({err}); train the run again.") from err
        config_path = run / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        slug = _slug(run.resolve().name)
        if slug in used:
            slug = f"{slug}-{i}"
        used.add(slug)
        contexts.append(_RunContext(path=run, slug=slug, info=info, config=config, out=out_dir, root=root))

    sections: list[Block] = []
    summaries = []
    for i, ctx in enumerate(contexts, 1):
        blocks, summary = _run_sections(ctx, i)
        sections += blocks
        summaries.append(summary)

    title = "robustopt report: " + ", ".join(str(c.path) for c in contexts)
    head: list[Block] = [
        _Heading(1, "robustopt report"),
        _Para(f"{len(contexts)} run{'s' if len(contexts) != 1 else ''}, made {now.isoformat(timespec='seconds')}. "
              "Accuracies are on the test split; robust accuracy is the per-example worst case over all rows "
              "of the evaluation."),
        _Table(["Run", "Data", "Model", "Method", "Threat (training)", "Clean", "Robust (worst case)"],
               [[f"{i}. {s['run']}", s["data"], s["model"], s["method"], s["threat"], s["clean"], s["robust"]]
                for i, s in enumerate(summaries, 1)]),
    ]
    blocks = head + sections + _environment(contexts, now)
    md_path = atomic_write_text(out_dir / REPORT_MD, _REQUEST_LINE.format(json.dumps(request)) + "\n" + _to_markdown(blocks))
    html_path = atomic_write_text(out_dir / REPORT_HTML, _to_html(blocks, title))
    return md_path, html_path
