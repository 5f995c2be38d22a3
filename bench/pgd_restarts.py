#!/usr/bin/env python
"""The paper's strongest white-box row alone: PGD 100 steps x 20 restarts on a run's model.

Madry et al. (2018), Table 1 reports 89.3% for model A under PGD 100 x 20 (step 0.01, random
starts) at L-inf eps 0.3; issue 4's efficiency target is measured with this script. The row is
the madry suite's own (``suites.madry``), evaluated alone on the first ``--n`` test images.
Restarts are per example: an example broken by one restart is not attacked again (the
accuracy is unchanged, the cost is lower). Writes ``OUT.json`` and ``OUT.md``.

    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/pgd_restarts.py \\
        --run bench/results/full-mnist/A --n 1000 --out bench/results/full-mnist-A-pgd100x20-n1000
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish, header, provenance_md, rel, write_report  # noqa: E402

import robustopt as ro  # noqa: E402
from robustopt import data as datasets  # noqa: E402
from robustopt.experiments import load_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="robustopt run folder")
    p.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--restarts", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    report = header("pgd-restarts")
    model, info = load_run(args.run)
    x, y = datasets.load(info["data"], split="test")
    x, y = x[: args.n], y[: args.n]
    rows = [a for a in ro.suites.madry(ro.Linf(args.eps)) if a.name == "PGD" and a.steps == args.steps]
    if not rows:
        sys.exit(f"the madry suite has no PGD row with {args.steps} steps")
    attack = max(rows, key=lambda a: a.restarts)
    attack = dataclasses.replace(attack, restarts=args.restarts, seed=args.seed)
    step = attack.step_size or attack.rel_step_size * args.eps
    ev = ro.evaluate(model, (x, y), [attack], batch_size=args.batch_size, mode="independent", seed=args.seed)
    row = next(r for r in ev.rows if r.name == "PGD")
    report.update(run=rel(args.run), n=len(y), eps=args.eps, steps=args.steps, restarts=args.restarts,
                  step_size=step, clean_accuracy=ev.clean_accuracy, robust_accuracy=row.accuracy,
                  grad_evals=int(row.grad_evals), attack_seconds=row.seconds, threads=torch.get_num_threads())
    finish(report, t0)
    md = "\n".join([
        f"# PGD {args.steps} x {args.restarts} on {rel(args.run)}", "", *provenance_md(report),
        "| n | eps | step | clean | PGD robust | image-grad evals | attack time (s) |", "|---|---|---|---|---|---|---|",
        f"| {len(y)} | {args.eps:g} | {step:g} | {100 * ev.clean_accuracy:.1f}% | "
        f"{100 * row.accuracy:.1f}% | {int(row.grad_evals):,} | {row.seconds:.0f} |", ""])
    write_report(args.out, report, md)
    print(md)


if __name__ == "__main__":
    main()
