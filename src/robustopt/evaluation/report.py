"""Reports: one Markdown document and one self-contained HTML page for one or more runs.

A view: :func:`render` draws :class:`RunReport` objects and computes nothing (no model is
loaded, no attack run, no file read or written). Its caller,
:func:`robustopt.experiments.write_report` (``robustopt report``), reads the run folders,
computes the audit and the adversarial examples, and writes the files. Per run the report shows:

* the run (``run.json`` and the main training settings of ``config.json``);
* the training curve: clean and robust validation accuracy per epoch (``log.jsonl``);
* every evaluation as the paper's table (Method | Steps | Restarts | Source | Accuracy),
  with Madry et al.'s (2018) numbers beside ours when the evaluation is the madry suite on
  MNIST at L-inf eps = 0.3 (Table 1) or CIFAR-10 at 8/255 (Table 2);
* every sweep as a plot (training eps marked) and a table;
* the gradient-masking audit (:func:`robustopt.audit`) findings it is given;
* a gallery of adversarial examples (:class:`Gallery`): correctly classified test images,
  their adversarial images and the perturbation magnified to the full range, with the labels;
* the environment: versions, platform, CPUs, git commit, seeds and the time of the report.

The Markdown refers to PNG figures to be written beside it (``Document.figures``); the HTML
is one self-contained page (images embedded as base64 data URIs, inline CSS, no external
resource, no JavaScript) that can be mailed or archived as a single file. Plots are drawn
with matplotlib on an Agg canvas (no display needed). The blocks and their Markdown and HTML
writers are :mod:`robustopt.evaluation.document`; the machine's rows of the environment table
are :mod:`robustopt.evaluation.environment`.

Example:
    >>> doc = render([RunReport(path=Path("runs/a"), info=info, evaluations=[("eval-madry.json", ev)])])
    >>> doc.markdown.startswith("# robustopt report")
    True
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from robustopt.evaluation.audit import Finding, findings_summary
from robustopt.evaluation.document import (Block, Figure, Heading, Para, Table, new_figure, png_bytes, slugify, to_html,
                                           to_markdown)
from robustopt.evaluation.environment import machine_rows
from robustopt.evaluation.results import Evaluation, row_key
from robustopt.evaluation.records import budget_cells
from robustopt.evaluation.suites import paper_reference
from robustopt.evaluation.sweep import SweepCurve
from robustopt.threat import ThreatModel, threat_from_name

__all__ = ["render", "madry_reference", "RunReport", "Gallery", "Document"]


# --- what the report shows: data in, Markdown, HTML and figures out ---------------------------
@dataclass
class Gallery:
    """Adversarial examples of a model, to show side by side with their clean images.

    Attributes:
        x: clean images (n, C, H, W) in ``threat.bounds`` that the model classifies correctly.
        x_adv: their adversarial images, same shape.
        y: the labels (n,).
        pred_adv: the model's predictions on ``x_adv`` (n,).
        threat: the threat model of the attack.
        steps: PGD steps of the attack (step ``2.5 * eps / steps``, random start).
        seed: the attack's seed.
        probed: how many test images ``x`` was picked from (n is 0 when none was correct).
    """

    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor
    pred_adv: torch.Tensor
    threat: ThreatModel
    steps: int
    seed: int
    probed: int


@dataclass
class RunReport:
    """What the report shows of one run.

    Attributes:
        path: the run folder (shown, and named in the figures' file names).
        info: its ``run.json`` (data, model, method, norm, eps, seed, ...).
        config: its ``config.json`` (the TrainConfig), {} if none.
        log: its ``log.jsonl`` records, one per epoch; None when it has no log.
        evaluations: (file name, evaluation) per ``eval-*.json``.
        sweeps: (file name, curve) per ``sweep-*.json``.
        audits: (title, findings) per audit of the model and of the results.
        gallery: adversarial examples; None when the run's threat model has no budget.
        class_names: the dataset's class names, for the gallery's labels.
    """

    path: Path
    info: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any]] | None = None
    evaluations: list[tuple[str, Evaluation]] = field(default_factory=list)
    sweeps: list[tuple[str, SweepCurve]] = field(default_factory=list)
    audits: list[tuple[str, list[Finding]]] = field(default_factory=list)
    gallery: Gallery | None = None
    class_names: Sequence[str] = ()

    @property
    def threat(self) -> ThreatModel | None:
        """The run's training threat model (from ``run.json``), None when it names none."""
        try:
            return threat_from_name(self.info["norm"], float(self.info["eps"]))
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def seed(self) -> int:
        """The run's seed (``run.json``), 0 when it records none."""
        return int(self.info.get("seed") or 0)


@dataclass
class Document:
    """A rendered report: Markdown, a self-contained HTML page, and the PNG figures the Markdown refers to."""

    markdown: str
    html: str
    figures: dict[str, bytes]  # file name (beside the Markdown) -> PNG bytes


# --- helpers ------------------------------------------------------------------------------
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


def madry_reference(ev: Evaluation, data: str | None) -> tuple[dict[tuple, float], str] | None:
    """The paper's numbers for ``ev`` and where they come from, when it is the madry suite on MNIST at
    L-inf eps 0.3 or CIFAR-10 at 8/255 (``suites.paper_reference``); None otherwise."""
    table = paper_reference(data, ev.threat)
    if table is None:
        return None
    reference = table.reference()
    if not any(row_key(r) in reference for r in ev.rows if not r.natural):
        return None  # not the madry suite (e.g. APGD / Square rows)
    return reference, table.title


# --- the sections of one run --------------------------------------------------------------
@dataclass
class _RunContext:
    """One run's part of the document: the run, its figures' name prefix, and the figures drawn so far."""

    run: RunReport
    slug: str
    figures: dict[str, bytes]

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def info(self) -> dict[str, Any]:
        return self.run.info

    @property
    def config(self) -> dict[str, Any]:
        return self.run.config

    @property
    def threat(self) -> ThreatModel | None:
        return self.run.threat

    def figure(self, png: bytes, kind: str, caption: str, alt: str) -> Figure:
        name = f"report-{self.slug}-{kind}.png"
        self.figures[name] = png
        return Figure(png, name, caption, alt)


def _run_info(ctx: _RunContext) -> list[Block]:
    rows = [[k, _fmt(v)] for k, v in ctx.info.items()]
    shown = set(ctx.info)
    for key in ("epochs", "batch_size", "optimizer", "lr", "lr_schedule", "attack_steps", "attack_step_size",
                "eps_warmup_epochs", "val_size", "val_attack_steps", "device"):
        if key in ctx.config and key not in shown:
            rows.append([key, _fmt(ctx.config[key])])
    return [Table(["Setting", "Value"], rows, align_numbers=False,
                   caption=f"From {ctx.path / 'run.json'}" + (" and config.json." if ctx.config else "."))]


def _training(ctx: _RunContext) -> list[Block]:
    blocks: list[Block] = [Heading(3, "Training curve")]
    path = ctx.path / "log.jsonl"
    log = ctx.run.log
    if log is None:
        return blocks + [Para(f"No training log ({path} is missing).", "note")]
    if not log:
        return blocks + [Para(f"The training log {path} is empty.", "note")]
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(log)]

    def series(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else 100 * float(r[key]) for r in log]

    fig = new_figure((6.4, 3.6))
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
    blocks.append(ctx.figure(png_bytes(fig), "training", caption, f"training curve of {ctx.path}"))
    return blocks


def _results(title: str, results: Sequence[tuple[str, Any]], missing: str,
             draw: Callable[[str, Any], list[Block]]) -> list[Block]:
    """A section of results: a heading, then per result its file name and ``draw(name, result)``."""
    blocks: list[Block] = [Heading(3, title)]
    if not results:
        return blocks + [Para(missing, "note")]
    for name, result in results:
        blocks += [Heading(4, name), *draw(name, result)]
    return blocks


def _evaluations(ctx: _RunContext) -> list[Block]:
    def draw(name: str, ev: Evaluation) -> list[Block]:
        ref = madry_reference(ev, ev.meta.get("data", ctx.info.get("data")))
        details = [f"{ev.n} test images", f"mode {ev.mode}", f"seed {ev.seed}"]
        if ev.threat is not None:
            details.insert(0, f"threat {ev.threat}")
        if ev.meta.get("sources"):
            details.append("transfer sources: " + ", ".join(f"{k} = {v}" for k, v in ev.meta["sources"].items()))
        if ev.meta.get("seconds") is not None:
            details.append(f"{float(ev.meta['seconds']):.0f} s on {ev.meta.get('device', '?')}")
        header, lines, caption = ev.cells(reference=ref[0] if ref else None)
        styles = [""] * (len(lines) - 1) + ["total"]  # the last line is the worst case
        blocks = [Para("; ".join(details) + "."), Table(header, lines, caption, styles=styles)]
        if ref:
            blocks.append(Para(f"Paper: {ref[1]}. Ours: measured on this run's model with the budget above.",
                                "caption"))
        for title, header, lines, decisions in budget_cells(ev):  # a scheduled suite (adaptive): its stages
            blocks += [Para(title + "."), Table(header, lines, " ".join(decisions))]
        return blocks

    return _results("Evaluations", ctx.run.evaluations, f"No evaluation yet: run `robustopt eval {ctx.path}`.", draw)


def _sweeps(ctx: _RunContext) -> list[Block]:
    def draw(name: str, curve: SweepCurve) -> list[Block]:
        same_norm = str(ctx.info.get("norm", "")).lower() == curve.norm.lower()
        train_eps = ctx.info.get("eps") if same_norm else None
        fig = curve.figure(train_eps=train_eps, title=f"{curve.norm} sweep of {ctx.path.name}, {curve.n} examples")
        caption = (f"Robust accuracy against eps ({curve.norm}, {curve.mode}; attacks: "
                   + ", ".join(str(a.get("name", a.get("type", "?"))) + (f" {a['steps']} steps" if a.get("steps") else "")
                               for a in curve.attacks)
                   + ")" + (f"; the dashed line is the training eps {float(train_eps):.4g}." if train_eps is not None else "."))
        return [ctx.figure(png_bytes(fig, dpi=120), slugify(Path(name).stem), caption, f"{curve.norm} sweep of {ctx.path}"),
                Table(*curve.cells())]

    return _results("Epsilon sweeps", ctx.run.sweeps, f"No sweep yet: run `robustopt sweep {ctx.path}`.", draw)


def _audit(ctx: _RunContext) -> list[Block]:
    blocks: list[Block] = [Heading(3, "Audit (gradient masking and evaluation checks)")]
    for title, findings in ctx.run.audits:
        blocks.append(Heading(4, title))
        if findings:
            blocks.append(Table(["Level", "Code", "Finding"], [[f.level, f"`{f.code}`", f.message] for f in findings],
                                 styles=[f"level-{f.level}" for f in findings]))
        # the summary line is the result, not a caption
        blocks.append(Para(findings_summary(findings), "p" if findings else "ok"))
    blocks.append(Para("Levels: error = the reported robustness is very likely wrong; warning = suspicious; "
                        "info = context. See `robustopt.evaluation.audit` for every check.", "caption"))
    return blocks


def _gallery(ctx: _RunContext) -> list[Block]:
    blocks: list[Block] = [Heading(3, "Adversarial examples")]
    g = ctx.run.gallery
    if g is None:
        return blocks + [Para(f"No gallery: the run's threat model ({ctx.info.get('norm')}, eps "
                               f"{ctx.info.get('eps')}) has no perturbation budget.", "note")]
    if len(g.x) == 0:
        return blocks + [Para(f"No gallery: the model classifies none of the first {g.probed} test images "
                               "correctly.", "note")]
    x, y, x_adv, pred_adv, threat, steps = g.x, g.y, g.x_adv, g.pred_adv, g.threat, g.steps
    delta = (x_adv - x).detach()
    class_names = ctx.run.class_names
    name = lambda k: class_names[k] if k < len(class_names) else str(k)  # noqa: E731

    n = len(x)
    fig = new_figure((max(1.3 * n, 4.0) + 0.6, 4.9))
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
    fig.suptitle(f"PGD-{steps} adversarial examples, {threat}", fontsize=10)
    fig.tight_layout()
    fooled_count = int((pred_adv != y).sum())
    caption = (f"The first {n} test images the model classifies correctly. Row 1: clean image and its label; row 2: "
               f"adversarial image (PGD, {steps} steps of 2.5·eps/{steps}, random start, seed "
               f"{g.seed}, {threat}) and the model's prediction, red when wrong ({fooled_count} of {n} fooled); "
               "row 3: the perturbation x_adv − x divided by its largest absolute value"
               + (" (blue: darker, red: brighter)." if x.shape[1] == 1 else " (gray: no change)."))
    blocks.append(ctx.figure(png_bytes(fig), "adversarial", caption, f"adversarial examples of {ctx.path}"))
    return blocks


def _show(ax: Any, img: np.ndarray, lo: float, hi: float) -> None:
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    else:
        ax.imshow(np.clip((img.transpose(1, 2, 0) - lo) / (hi - lo), 0, 1), interpolation="nearest")


def _run_sections(ctx: _RunContext, index: int) -> tuple[list[Block], dict[str, str]]:
    blocks: list[Block] = [Heading(2, f"Run {index}: {ctx.path}", anchor=f"run-{index}")]
    blocks += _run_info(ctx)
    blocks += _training(ctx)
    blocks += _evaluations(ctx)
    blocks += _sweeps(ctx)
    blocks += _audit(ctx)
    blocks += _gallery(ctx)

    first = ctx.run.evaluations[0] if ctx.run.evaluations else None
    summary = {
        "run": str(ctx.path), "data": _fmt(ctx.info.get("data")), "model": _fmt(ctx.info.get("model")),
        "method": _fmt(ctx.info.get("method")), "threat": str(ctx.threat) if ctx.threat is not None else "",
        "clean": _pct(first[1].clean_accuracy) if first else "",
        "robust": (f"{_pct(first[1].robust_accuracy)} ({first[0]})" if first else "not evaluated"),
    }
    return blocks, summary


def _environment(runs: list[_RunContext], now: datetime.datetime) -> list[Block]:
    rows = [*machine_rows(),
            ["seeds", ", ".join(f"{r.path.name}: {r.run.seed}" for r in runs)],
            ["report time", now.isoformat(timespec="seconds")]]
    return [Heading(2, "Environment", anchor="environment"),
            Table(["Item", "Value"], rows, align_numbers=False,
                   caption="Where this report was made. Each run's training machine and versions are in its "
                           "checkpoint (model.json) and in each evaluation's meta.")]


# --- the entry point ----------------------------------------------------------------------
def render(runs: Sequence[RunReport], now: datetime.datetime | None = None) -> Document:
    """The report of ``runs``: one section per run, a summary table first, the environment last.

    Args:
        runs: what to show of each run (see :class:`RunReport`).
        now: the report's time (default: now).

    Returns:
        The Markdown (referring to the figures by file name), the self-contained HTML page and
        the PNG figures, named ``report-RUN-KIND.png``.
    """
    now = now or datetime.datetime.now().astimezone()
    figures: dict[str, bytes] = {}
    contexts: list[_RunContext] = []
    used: set[str] = set()
    for i, run in enumerate(runs, 1):
        slug = slugify(run.path.resolve().name)
        if slug in used:
            slug = f"{slug}-{i}"
        used.add(slug)
        contexts.append(_RunContext(run, slug, figures))

    sections: list[Block] = []
    summaries = []
    for i, ctx in enumerate(contexts, 1):
        blocks, summary = _run_sections(ctx, i)
        sections += blocks
        summaries.append(summary)

    title = "robustopt report: " + ", ".join(str(c.path) for c in contexts)
    head: list[Block] = [
        Heading(1, "robustopt report"),
        Para(f"{len(contexts)} run{'s' if len(contexts) != 1 else ''}, made {now.isoformat(timespec='seconds')}. "
              "Accuracies are on the test split; robust accuracy is the per-example worst case over all rows "
              "of the evaluation."),
        Table(["Run", "Data", "Model", "Method", "Threat (training)", "Clean", "Robust (worst case)"],
               [[f"{i}. {s['run']}", s["data"], s["model"], s["method"], s["threat"], s["clean"], s["robust"]]
                for i, s in enumerate(summaries, 1)]),
    ]
    blocks = head + sections + _environment(contexts, now)
    return Document(to_markdown(blocks), to_html(blocks, title), figures)
