#!/usr/bin/env python
"""Where Square's time goes on a small batch: its forward rate against the bare model's, and a profile.

Square (1,000 queries) on the first ``--n`` test images of a zoo entry, at one torch thread; then
1,000 bare forward passes on the same batch; then the top functions of a cProfile of the Square run.
docs/performance.md ("Zoo") reads it for the adaptive suite's fixed-size Square samples.

Example:
    ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/square_small_batch.py mnist-n-fgsm-linf --n 20
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

import robustopt as ro
from robustopt import data, zoo
from robustopt.attacks import Square


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("entry", help="zoo entry (robustopt zoo list)")
    p.add_argument("--n", type=int, default=20, help="first N test images (default 20, a Square sample)")
    p.add_argument("--queries", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    item = zoo.entry(args.entry)
    model = zoo.load(item.name)
    x, y = data.load(item.dataset, "test")
    x, y = x[: args.n].contiguous(), y[: args.n].long()
    square = Square(ro.Linf(item.eps) if item.norm == "linf" else ro.L2(item.eps), queries=args.queries)
    t0 = time.perf_counter()
    res = square.run(model, x, y, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t0
    print(f"Square: {res.forwards} forwards in {seconds:.2f} s = {res.forwards / seconds:,.0f} images/s")
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(1000):
            model(x)
        seconds = time.perf_counter() - t0
    print(f"bare model, batch {args.n}: 1,000 calls in {seconds:.2f} s = {1000 * args.n / seconds:,.0f} images/s")
    profile = cProfile.Profile()
    profile.runcall(square.run, model, x, y, generator=torch.Generator().manual_seed(0))
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
