#!/usr/bin/env python
"""The paper's strongest white-box row alone: PGD 100 steps x 20 restarts on a run's model.

Madry et al. (2018), Table 1 reports 89.3% for model A under PGD 100 x 20 (step 0.01, random
starts) at L-inf eps 0.3; this script measures the same row on a robustopt run, for a budget
against robustness comparison (docs/results.md). The row is the madry suite's own
(``suites.madry``), evaluated alone on the first ``--n`` test images. Restarts are per example:
an example broken by one restart is not attacked again (the accuracy is unchanged, the cost is
lower). Writes ``OUT.json`` and ``OUT.md``.

    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/pgd_restarts.py \\
        --run bench/results/full-mnist/A --n 1000 --out bench/results/pgd-restarts/full-mnist-A-pgd100x20-n1000
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as `python bench/pgd_restarts.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import robustopt as ro  # noqa: E402
from bench.harness import header, load_model, provenance_md, publish, rel, set_threads  # noqa: E402


def markdown(r: dict[str, Any]) -> str:
    return "\n".join([
        f"# PGD {r['steps']} x {r['restarts']} on {r['run']}", "", *provenance_md(r),
        "| n | eps | step | clean | PGD robust | image-grad evals | attack time (s) |", "|---|---|---|---|---|---|---|",
        f"| {r['n']} | {r['eps']:g} | {r['step_size']:g} | {100 * r['clean_accuracy']:.1f}% | "
        f"{100 * r['robust_accuracy']:.1f}% | {r['grad_evals']:,} | {r['attack_seconds']:.0f} |", ""])


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="robustopt run folder")
    p.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    p.add_argument("--root", help="data root (default $ROBUSTOPT_DATA)")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--restarts", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = p.parse_args(argv)
    set_threads(args.threads)
    t0 = time.perf_counter()
    report = header("pgd-restarts")
    subject = load_model(args.run)
    x, y = subject.test_set(args.n, root=args.root)
    rows = [a for a in ro.suites.madry(ro.Linf(args.eps)) if a.name == "PGD" and a.steps == args.steps]
    if not rows:
        sys.exit(f"the madry suite has no PGD row with {args.steps} steps")
    attack = max(rows, key=lambda a: a.restarts)
    attack = dataclasses.replace(attack, restarts=args.restarts, seed=args.seed)
    step = attack.step_size or attack.rel_step_size * args.eps
    ev = ro.evaluate(subject.model, (x, y), [attack], batch_size=args.batch_size, mode="independent", seed=args.seed)
    row = next(r for r in ev.rows if r.name == "PGD")
    report.update(run=rel(args.run), n=len(y), eps=args.eps, steps=args.steps, restarts=args.restarts,
                  step_size=step, clean_accuracy=ev.clean_accuracy, robust_accuracy=row.accuracy,
                  grad_evals=int(row.grad_evals), attack_seconds=row.seconds, threads=torch.get_num_threads())
    publish(args.out, report, markdown, t0)
    return report


if __name__ == "__main__":
    main()
