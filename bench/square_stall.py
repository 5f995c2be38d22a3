#!/usr/bin/env python
"""Square's early exit, replayed: which stall rule stops the hopeless searches sooner without losing a break.

On the points that the gradient stages of the adaptive suite left (``broken_by`` of the source's
committed ``eval-adaptive.json``: still robust, or broken by Square), Square runs once as the suite
runs it (``AdaptiveAutoAttack(threat).stages()``: 5,000 queries on AutoAttack's schedule) with its
early exit recording instead of stopping: every example's margin at every 1% of the budget, and the
queries each one used (so the query that broke it). Each stall rule is then replayed on these
traces: the queries it would spend and the breaks it would lose (points it stops before the query
that broke them). Every rule sees the same random search, so the comparison is exact on these
points; in a real run a stopped example changes the random stream of the others.

Rules (``early_exit.stalled``: stopped when ``margin + factor * (remaining / window) * gain < 0``):
``average``, today's rule: the gain since the start over the queries so far, checked at every
tenth of the budget; ``recent-W``: the gain over the last W% of the budget, checked every W%.
Writes OUT.{json,md} (default bench/results/autoattack/square-stall-NAME).

Example:
    ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/square_stall.py \\
        mnist-pgd-linf --threads 1
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as `python bench/square_stall.py`: import bench/ as a package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import (default_out, header, load_model, log, parser, provenance_md, publish, rel,  # noqa: E402
                           set_threads)
from robustopt import Evaluation, data, zoo  # noqa: E402
from robustopt import threat as ro_threat  # noqa: E402
from robustopt.attacks import adaptive  # noqa: E402
from robustopt.attacks import square as square_module  # noqa: E402

# The stages' indices in broken_by (adaptive.STAGES, counted from 1): Square's, and "still robust".
SQUARE, ROBUST = adaptive.STAGES.index("Square") + 1, -1
TRACE_EVERY = 100  # margins recorded at every 1/TRACE_EVERY of the budget
RULES = [("average", 10, f) for f in (1, 2, 4)] + [("recent", w, f) for w in (5, 10) for f in (1, 2, 4, 8)]


def rule_of(square) -> tuple[str, int, float]:
    """A Square's early exit as a rule of :data:`RULES` (``Square.stall_window``: None is ``average``)."""
    if square.stall_window is None:
        return "average", 10, square.stall_factor
    return "recent", round(100 * square.stall_window), square.stall_factor


TODAY = rule_of(adaptive.AdaptiveAutoAttack(ro_threat.Linf(0.1)).stages()[SQUARE - 1])  # the adaptive suite's


def source(name: str, root: str | None) -> tuple[Any, torch.Tensor, torch.Tensor, Path, str]:
    """Model, test images and labels, the evaluation file, and the name of a zoo entry or run folder."""
    if Path(name).is_dir():
        under_test = load_model(name)
        model, dataset, folder, label = under_test.model, under_test.info["data"], Path(name), rel(name)
    else:
        item = zoo.entry(name)
        model, dataset, folder, label = zoo.load(item.name), item.dataset, item.folder, f"zoo:{item.name}"
    x, y = data.load(dataset, "test", root=root)
    return model, x, y.long(), folder / "eval-adaptive.json", label


def candidates(path: Path) -> tuple[Evaluation, torch.Tensor, torch.Tensor]:
    """The evaluation, the indices Square would see (robust or broken by Square), and which of them it broke."""
    raw = json.loads(path.read_text())
    row = raw["rows"][-1]
    if "records" not in row:
        raise SystemExit(f"{path} has no per-example records; evaluate again with the adaptive suite.")
    by = row["records"]["examples"]["broken_by"]  # None: misclassified clean
    idx = [i for i, b in enumerate(by) if b in (ROBUST, SQUARE)]
    return (Evaluation.from_dict(raw), torch.tensor(idx, dtype=torch.long),
            torch.tensor([by[i] == SQUARE for i in idx]))


def trace(square, model, x, y, seed: int) -> tuple[torch.Tensor, list[int], torch.Tensor, torch.Tensor]:
    """``square`` with a recording early exit, checked at every 1/TRACE_EVERY of its budget.

    Returns:
        margins (checks + 1, N), the start's first; the queries after which each was taken (0 for the
        start); the queries each example's search used (N; the driver's clean pass not counted, so
        ``queries`` for one that ran the whole budget); success (N).
    """
    margins: list[torch.Tensor] = []
    at: list[int] = []

    def record(margin, margin_then, remaining, window, factor):  # stands in for early_exit.stalled
        if not margins:  # the first check measures from the start
            margins.append(margin_then.detach().clone())
            at.append(0)
        margins.append(margin.detach().clone())
        at.append(square.queries - remaining)  # the check before this iteration: that many queries used
        return torch.zeros_like(margin, dtype=torch.bool)

    saved = square_module.stalled
    square_module.stalled = record
    try:
        recording = dataclasses.replace(square, early_exit=True, stall_window=1 / TRACE_EVERY)
        res = recording.run(model, x, y, generator=torch.Generator().manual_seed(seed))
    finally:
        square_module.stalled = saved
    # no check reached: every example broke within the first 1% of the budget
    stacked = torch.stack(margins) if margins else torch.empty(0, len(x))
    return stacked, at, res.forwards_per_example - 1, res.success  # the driver's clean pass is not the search's


def replay(margins: torch.Tensor, at: list[int], used: torch.Tensor, success: torch.Tensor, queries: int, kind: str,
           every: int, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries each example would use under a rule, and which breaks it would lose.

    ``margins[k]`` is the margin after ``at[k]`` queries (``trace``); ``used`` the queries the
    unstopped search took, so an example is still searching at a check after ``i`` queries when
    ``used > i``, and one stopped there has used ``i``.
    """
    cost, lost = used.clone(), torch.zeros_like(success)
    stopped = torch.zeros_like(success)
    for k in range(every, TRACE_EVERY, every):
        if k >= len(at):  # the search ended: every example broken
            break
        i, m = at[k], margins[k]
        then, window = (margins[0], i) if kind == "average" else (margins[k - every], i - at[k - every])
        gain = (m - then).clamp_min(0)
        stop = ~stopped & (used > i) & (m + factor * ((queries - i) / window) * gain < 0)
        cost[stop] = i
        lost |= stop & success
        stopped |= stop
    return cost, lost


def main(argv=None) -> dict[str, Any]:
    p = parser(__doc__, "root", "threads", "out", script="square_stall")
    p.add_argument("source", help="zoo entry (robustopt zoo list) or run folder, with its eval-adaptive.json")
    p.add_argument("--limit", type=int, default=None, help="only the first K of Square's points (CIFAR-10)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be at least 1, got {args.limit}")
    set_threads(args.threads)
    t0 = time.perf_counter()
    report = header("square stall")
    model, x, y, path, label = source(args.source, args.root)
    ev, idx, broke_then = candidates(path)
    if args.limit is not None:
        idx, broke_then = idx[: args.limit], broke_then[: args.limit]
    square = adaptive.AdaptiveAutoAttack(ev.threat).stages()[SQUARE - 1]  # the suite's Square
    log(f"{label}: Square ({square.queries} queries) on {len(idx)} of {ev.n} points")
    start = time.perf_counter()
    margins, at, used, success = trace(square, model, x[idx].contiguous(), y[idx], args.seed)
    seconds = time.perf_counter() - start
    rows = []
    for kind, every, factor in RULES:
        cost, lost = replay(margins, at, used, success, square.queries, kind, every, factor)
        rows.append({"rule": kind, "every_percent": every, "factor": factor, "queries": int(cost.sum()),
                     "lost": idx[lost].tolist(), "today": (kind, every, factor) == TODAY})
    report.update({"source": label, "evaluation": rel(path), "n": ev.n, "threat": str(ev.threat), "points": len(idx),
                   "indices": idx.tolist(), "broken_in_evaluation": int(broke_then.sum()),
                   "square": {"queries": square.queries, "schedule_queries": square.schedule_queries,
                              "seed": args.seed},
                   "trace_seconds": seconds, "full_budget_queries": int(used.sum()),
                   "broken": idx[success].tolist(), "break_queries": used[success].tolist(), "rules": rows})
    out = Path(args.out) if args.out else default_out("square_stall", f"square-stall-{Path(args.source).name}")
    publish(out, report, markdown, t0)
    return report


def markdown(r: dict[str, Any]) -> str:
    today = next(row for row in r["rules"] if row["today"])
    lines = [f"# Square's stall rules replayed on {r['source']} ({r['threat']})", "",
             f"Square ({r['square']['queries']} queries, schedule of {r['square']['schedule_queries']}, seed "
             f"{r['square']['seed']}) on the {r['points']} points of the first {r['n']} that the adaptive suite's "
             f"gradient stages left ({r['evaluation']}; its Square broke {r['broken_in_evaluation']} of them), "
             f"without stopping: {r['full_budget_queries']:,} queries, {r['trace_seconds']:.0f} s. It broke "
             f"{len(r['broken'])}, after {', '.join(f'{q:,}' for q in r['break_queries']) or 'no'} queries.", "",
             "| rule | checks every | factor | queries | / today's | breaks lost |", "|---|---|---|---|---|---|"]
    for row in r["rules"]:
        name = row["rule"] + (" (today)" if row["today"] else "")
        lines.append(f"| {name} | {row['every_percent']}% | {row['factor']:g} | {row['queries']:,} | "
                     f"{row['queries'] / today['queries']:.2f}x | {len(row['lost'])}"
                     + (f" ({', '.join(map(str, row['lost']))})" if row["lost"] else "") + " |")
    return "\n".join(lines + [""] + provenance_md(r))


if __name__ == "__main__":
    main()
