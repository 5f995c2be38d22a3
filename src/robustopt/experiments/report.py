"""``robustopt report``: compute what a report shows of run folders (audit, adversarial examples), then render it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from robustopt._io import atomic_write_bytes, atomic_write_text
from robustopt._lock import hold
from robustopt.attacks import PGD
from robustopt.attacks.passes import eval_mode, predict
from robustopt.evaluation import Evaluation, Finding, SweepCurve, audit, report
from robustopt.experiments._inputs import data_info, load_test_images, quiet
from robustopt.runs import (
    REPORT_HTML, REPORT_MD, check_run, load_run, read_config, read_evaluations, read_info, read_log, read_sweeps,
    refuse_replacement, relative, report_request, request_line,
)
from robustopt.threat import ThreatModel, threat_from_name

__all__ = ["write_report", "AUDIT_SIZE", "GALLERY_SIZE", "GALLERY_STEPS"]

PathLike = str | os.PathLike[str]

AUDIT_SIZE = 200  # test images the report's audit probes, and the gallery's images come from
GALLERY_SIZE = 8  # correctly classified test images in the gallery
GALLERY_STEPS = 40  # PGD steps of the gallery's attack (step 2.5 * eps / steps, random start)


def write_report(runs: PathLike | Iterable[PathLike], out: PathLike | None = None, *,
                 root: PathLike | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``report.md`` (with PNG figures beside it) and a self-contained ``report.html`` for run folders.

    Per run: ``run.json``, the training curve (``log.jsonl``), every ``eval-*.json`` as the paper's
    table (with Madry et al.'s numbers for the madry suite on MNIST at L-inf 0.3 or CIFAR-10 at 8/255),
    every ``sweep-*.json`` as a plot and a table, ``ro.audit`` of the model on the first 200 test images
    and of the results, and 8 PGD-40 adversarial examples; then the environment. The audit and the
    adversarial examples are computed here; :func:`robustopt.evaluation.report.render` draws it all.

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
        FileExistsError: ``out`` holds a report of other runs and ``overwrite`` is False.
        OSError: ``out`` cannot be written, or another process holds it
            (``robustopt.runs.RunFolderBusyError``).

    Example:
        >>> md_path, html_path = write_report(["runs/a"])   # runs/a/report.md, runs/a/report.html
    """
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    try:
        folders = [check_run(r) for r in runs]
    except TypeError:
        raise TypeError(f"runs must be a run folder or a list of run folders, got {runs!r}.") from None
    if not folders:
        raise ValueError("no run folders given: pass at least one folder made by `robustopt train --out RUN`.")
    out_dir = Path(out) if out is not None else folders[0]
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; pass a folder for report.md, report.html and the figures.")
    # What defines a report: its runs, relative to the report (the same wherever the command runs from).
    request = {"runs": [relative(run, out_dir) for run in folders]}
    with hold(out_dir, "report"):
        md_path = out_dir / REPORT_MD
        refuse_replacement(md_path, request, report_request(md_path), overwrite=overwrite, what="report")
        document = report.render([_report_section(run, root) for run in folders])
        for name, png in document.figures.items():
            atomic_write_bytes(out_dir / name, png)
        return (atomic_write_text(md_path, request_line(request) + document.markdown),
                atomic_write_text(out_dir / REPORT_HTML, document.html))


def _report_section(run: Path, root: PathLike | None) -> report.RunReport:
    """What the report shows of ``run``: its files, and the audit and gallery of its model on test images."""
    info = read_info(run)
    evaluations, sweeps = read_evaluations(run), read_sweeps(run)
    model, _ = load_run(run)
    x, y = load_test_images(info, AUDIT_SIZE, root, quiet)
    try:
        threat: ThreatModel | None = threat_from_name(info["norm"], float(info["eps"]))
    except (KeyError, TypeError, ValueError):  # a run.json without a known threat model
        threat = None
    try:
        class_names: Sequence[str] = data_info(info).classes
    except ValueError:
        class_names = ()
    seed = int(info.get("seed") or 0)
    return report.RunReport(
        path=run, info=info, config=read_config(run), log=read_log(run), evaluations=evaluations, sweeps=sweeps,
        audits=_audits(model, (x, y), threat, evaluations, sweeps, seed),
        gallery=_gallery(model, x, y, threat, seed), class_names=class_names)


def _audits(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], threat: ThreatModel | None,
            evaluations: list[tuple[str, Evaluation]], sweeps: list[tuple[str, SweepCurve]],
            seed: int) -> list[tuple[str, list[Finding]]]:
    """The audit of the model on ``data`` (with the first evaluation), then of each other evaluation and sweep."""
    probe = f"Model on the first {len(data[0])} test images"
    if evaluations:
        (name, first), others = evaluations[0], evaluations[1:]
        parts = [(f"{probe}, and {name}", audit(model, data, first, seed=seed))]
        parts += [(name, audit(None, evaluation=ev, seed=seed)) for name, ev in others]
    else:
        parts = [(probe, audit(model, data, threat=threat, seed=seed))]
    return parts + [(name, audit(None, sweep=curve, seed=seed)) for name, curve in sweeps]


def _gallery(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel | None,
             seed: int) -> report.Gallery | None:
    """PGD adversarial examples of the first ``GALLERY_SIZE`` images of ``x`` the model classifies correctly.

    None when the threat model has no budget (unknown, or eps 0); no examples when no image is
    classified correctly.
    """
    if threat is None or threat.eps <= 0:
        return None
    with eval_mode(model), torch.no_grad():
        ok = predict(model, x).argmax(1) == y
    idx = ok.nonzero().squeeze(1)[:GALLERY_SIZE]
    x, y = x[idx], y[idx]
    x_adv = PGD(threat, steps=GALLERY_STEPS, seed=seed)(model, x, y).detach() if len(idx) else x
    with eval_mode(model), torch.no_grad():
        pred_adv = predict(model, x_adv).argmax(1) if len(idx) else y
    return report.Gallery(x=x, x_adv=x_adv, y=y, pred_adv=pred_adv, threat=threat, steps=GALLERY_STEPS, seed=seed,
                          probed=len(ok))
