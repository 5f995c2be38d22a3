#!/usr/bin/env python
"""Where Square's time goes on a small batch: its forward rate against the bare model's, and a profile.

Square (``--queries``) on the first ``--n`` test images of a zoo entry; then 1,000 bare forward passes
of the model on the same batch; then the top functions of a cProfile of the Square run. The adaptive
suite's fixed-size Square samples (docs/performance.md, "Zoo") are such batches. Writes
OUT.{json,md} (default bench/results/autoattack/square-small-batch-NAME).

Example:
    ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/square_small_batch.py \\
        mnist-n-fgsm-linf --n 20 --threads 1
"""

from __future__ import annotations

import cProfile
import io
import pstats
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as `python bench/square_small_batch.py`: import bench/ as a package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import default_out, header, parser, provenance_md, publish, set_threads, threat  # noqa: E402
from robustopt import data, zoo  # noqa: E402
from robustopt.attacks import Square  # noqa: E402


def main(argv=None) -> dict[str, Any]:
    p = parser(__doc__, "root", "threads", "out", script="square_small_batch")
    p.add_argument("entry", help="zoo entry (robustopt zoo list)")
    p.add_argument("--n", type=int, default=20, help="first N test images (default 20, a Square sample)")
    p.add_argument("--queries", type=int, default=1000)
    args = p.parse_args(argv)
    set_threads(args.threads)
    t0 = time.perf_counter()
    report = header("square small batch")
    item = zoo.entry(args.entry)
    model = zoo.load(item.name)
    x, y = data.load(item.dataset, "test", root=args.root)
    x, y = x[: args.n].contiguous(), y[: args.n].long()
    square = Square(threat(item.norm, item.eps), queries=args.queries)
    start = time.perf_counter()
    res = square.run(model, x, y, generator=torch.Generator().manual_seed(0))
    square_s = time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(1000):
            model(x)
        bare_s = time.perf_counter() - start
    profile = cProfile.Profile()
    profile.runcall(square.run, model, x, y, generator=torch.Generator().manual_seed(0))
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
    report.update({"entry": item.name, "n": args.n, "queries": args.queries, "square_forwards": res.forwards,
                   "square_seconds": square_s, "square_images_per_s": res.forwards / square_s,
                   "bare_calls": 1000, "bare_seconds": bare_s, "bare_images_per_s": 1000 * args.n / bare_s,
                   "profile": _relative(text.getvalue())})
    out = Path(args.out) if args.out else default_out("square_small_batch", f"square-small-batch-{item.name}")
    publish(out, report, markdown, t0)
    return report


def _relative(profile: str) -> str:
    """The profile's file names relative to the repository (and to site-packages for libraries)."""
    root = str(Path(__file__).resolve().parents[1]) + "/"
    return re.sub(r"\S*/site-packages/", "", profile.replace(root, ""))


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Square on {r['n']} points of zoo:{r['entry']} ({r['queries']} queries)", "",
             "| | forwards | seconds | images / s |", "|---|---|---|---|",
             f"| Square | {r['square_forwards']:,} | {r['square_seconds']:.2f} | {r['square_images_per_s']:,.0f} |",
             f"| bare model, {r['bare_calls']:,} calls of batch {r['n']} | {r['bare_calls'] * r['n']:,} | "
             f"{r['bare_seconds']:.2f} | {r['bare_images_per_s']:,.0f} |", "",
             "Profile of the Square run (top 12 by own time):", "", "```", r["profile"].strip(), "```", ""]
    return "\n".join(lines + provenance_md(r))


if __name__ == "__main__":
    main()
