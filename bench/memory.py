#!/usr/bin/env python
"""Memory of an evaluation as the number of points grows: peak RSS at N and at 10 N points.

Each N runs in a fresh subprocess (peak RSS is per process): it loads the model and the first N
test points, takes the resident set size (RSS) before the evaluation, resets the kernel's peak
counter where Linux allows it (``/proc/self/clear_refs``), runs ``ro.evaluate`` (FGSM and PGD-S,
cascade, batch B) and reads the peak RSS of the evaluation. If the autograd tape held every point,
the growth during the evaluation would scale with N; with one batch on the tape (what
``tests/test_evaluation.py::test_the_autograd_tape_holds_one_batch_not_the_dataset`` checks), it
stays near one batch's activations, plus per-example bookkeeping that is small beside the data.

The model is the small-cnn of the other scripts (PGD-AT on mnist-mini, cached in
``bench/.cache/``) or the trained run given with ``--run``. Results: ``OUT.json`` and ``OUT.md``
(default ``bench/results/memory/full``, with ``--quick`` ``.../quick``) with the command, git
commit, machine and date.

Examples:
    # model A on 1,000 and 10,000 full-MNIST test points (by default a tenth of the test set and all of it)
    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/memory.py --run bench/results/full-mnist/A --threads 2
    nice -n 19 .venv/bin/python bench/memory.py --quick --threads 1   # 100 and 1,000 mnist-mini points, batch 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/memory.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

import robustopt as ro  # noqa: E402
from bench.harness import (DEFAULT_RECIPE, ModelUnderTest, header, load_model, log, out_prefix, parser,  # noqa: E402
                           peak_rss_mib, provenance_md, publish, script_command, set_threads)
from robustopt.attacks import FGSM, PGD  # noqa: E402


def _status_mib(field: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in MiB (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def load_subject(args) -> tuple[ModelUnderTest, torch.Tensor, torch.Tensor]:
    """The model under test and its whole test set."""
    subject = load_model(args.run, folder=Path(args.cache) / DEFAULT_RECIPE)
    return subject, *subject.test_set(root=args.root)


def child(args) -> dict[str, Any]:
    """One measurement in this process: load, note RSS, evaluate, note the peak."""
    subject, x, y = load_subject(args)
    model = subject.model
    threat = subject.threat(args.norm, args.eps)
    x, y = x[: args.child].contiguous(), y[: args.child].contiguous()
    attacks = [FGSM(threat), PGD(threat, steps=args.steps, step_size=2.5 * threat.eps / args.steps)]
    before = _status_mib("VmRSS") or peak_rss_mib()
    reset = _reset_peak()
    t0 = time.perf_counter()
    ev = ro.evaluate(model, (x, y), attacks, batch_size=args.batch_size, seed=args.seed, mode="cascade",
                     progress=False)
    seconds = time.perf_counter() - t0
    peak = (_status_mib("VmHWM") if reset else None) or peak_rss_mib()
    return {"n": args.child, "data": subject.data, "threat": str(threat), "attacks": [a.describe() for a in attacks],
            "data_mib": x.numel() * x.element_size() / 2**20, "rss_before_mib": before, "peak_mib": peak,
            "peak_is_of_the_evaluation": reset, "growth_mib": peak - before, "seconds": seconds,
            "grad_evals": sum(r.grad_evals for r in ev.rows), "robust_accuracy": ev.robust_accuracy,
            "source": subject.source}


def markdown(r: dict[str, Any]) -> str:
    m = r["measurements"]
    lines = [f"# Memory of an evaluation as the points grow{' (QUICK MODE)' if r.get('quick') else ''}", "",
             f"- model: {m[0]['source']}; data: first N `{m[0]['data']}` test images; threat {m[0]['threat']}",
             f"- attacks: FGSM and PGD-{r['steps']}, cascade, batch {r['batch_size']}, seed {r['seed']}; each N in a "
             "fresh process", "",
             "| N | the N images | RSS before the evaluation | peak RSS during it | growth | gradient evaluations | "
             "seconds |", "|---|---|---|---|---|---|---|"]
    for e in m:
        lines.append(f"| {e['n']:,} | {e['data_mib']:.1f} MiB | {e['rss_before_mib']:.0f} MiB | "
                     f"{e['peak_mib']:.0f} MiB | {e['growth_mib']:.0f} MiB | {e['grad_evals']:,} | {e['seconds']:.1f} |")
    first, last = m[0], m[-1]
    lines += ["", f"{last['n'] // max(first['n'], 1)}x the points: the growth during the evaluation goes from "
                  f"{first['growth_mib']:.0f} to {last['growth_mib']:.0f} MiB "
                  f"({last['growth_mib'] / max(first['growth_mib'], 1e-9):.2f}x). Each process loaded the whole "
                  "test set before its first reading, so the N images are in memory before the evaluation "
                  "at every N."]
    if not all(e["peak_is_of_the_evaluation"] for e in m):
        lines += ["", "The peak counter could not be reset here, so the peak may come from loading, before the "
                      "evaluation: the growth is then a lower bound."]
    lines += ["", *provenance_md(r)]
    return "\n".join(lines)


def parse_args(argv=None):
    p = parser(__doc__, "quick", "threads", "run", "cache", "root", "norm", "eps", "seed", "out", script="memory",
               quick="PGD-5 instead of PGD-10", eps="radius (default: the run's)")
    p.add_argument("--n", help="comma-separated numbers of points (default: a tenth of the test set and all of it)")
    p.add_argument("--steps", type=int, help="PGD steps (default 10; quick 5)")
    p.add_argument("--batch-size", type=int, help="examples per attack call (default: 500, at most a tenth of the "
                                                   "test set)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one measurement, JSON on stdout
    args = p.parse_args(argv)
    args.steps = args.steps or (5 if args.quick else 10)
    if args.n:
        args.n = [int(v) for v in args.n.split(",") if v.strip()]
    return args


def main(argv=None) -> dict[str, Any] | None:
    args = parse_args(argv)
    set_threads(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return None
    t_start = time.perf_counter()
    report = header("memory", quick=args.quick)
    size = len(load_subject(args)[1])  # the children get the resolved --n and --batch-size
    args.n = args.n or [size // 10, size]
    args.batch_size = args.batch_size or min(500, size // 10)
    if max(args.n) > size:
        raise SystemExit(f"--n {max(args.n)}: the test set has {size} images (set ROBUSTOPT_DATA for the full one)")
    if min(args.n) < args.batch_size:
        raise SystemExit(f"--n {min(args.n)} is below the batch size {args.batch_size}: its batches would be smaller, "
                         "which is not the comparison; pass a smaller --batch-size")
    report.update({"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "measurements": []})
    passed = list(argv if argv is not None else sys.argv[1:])
    for n in args.n:
        log(f"{n} points ...")
        cmd = script_command("memory", *passed, "--batch-size", str(args.batch_size), "--child", str(n))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # in our cwd: paths as typed
        if proc.returncode != 0:
            raise SystemExit(f"the measurement at {n} points failed (exit {proc.returncode}; its message is above)")
        e = json.loads(proc.stdout.strip().splitlines()[-1])
        log(f"  RSS {e['rss_before_mib']:.0f} MiB before, peak {e['peak_mib']:.0f} MiB, {e['seconds']:.1f} s")
        report["measurements"].append(e)
    publish(out_prefix(args.out, "memory", args.quick), report, markdown, t_start)
    return report


if __name__ == "__main__":
    main()
