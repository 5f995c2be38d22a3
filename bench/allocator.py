#!/usr/bin/env python
"""How much of a CPU attack's time is the memory allocator's: glibc malloc (default and tuned) vs jemalloc vs tcmalloc.

On CPU every PGD step allocates the model's activations anew. glibc serves blocks above its mmap
threshold (at most 32 MiB on 64-bit Linux: a preact-resnet18 activation at batch 500 is ~130 MB)
straight from the kernel and returns them on free, so each step faults in and zero-fills fresh
pages: ``throughput.py`` counts ~2 million minor page faults per step at batch 500, the same for
every tool, the limit included. Allocators that keep freed memory for reuse (jemalloc, tcmalloc)
can avoid that; they are loaded with ``LD_PRELOAD``, which only works at process start, so each
allocator runs ``throughput.py`` in its own subprocess (the limit and robustopt, same model, data
and threads), in ``--rounds`` interleaved rounds (glibc, jemalloc, tcmalloc, glibc, ...) so that
a slow drift of the machine does not favour one of them. "glibc-tuned" is glibc after
``ro.tune_malloc()`` (what the ``robustopt`` command applies at start-up): no preload, the same
subprocess with ``throughput.py --malloc tuned``.

Results: ``OUT.json`` and ``OUT.md`` (default ``bench/results/allocator/full``, with ``--quick``
``.../quick``): per allocator
the median rate of every timed call over the rounds, the ratio to glibc, minor page faults per
step and peak RSS, with the command, git commit, machine and date; each subprocess's own result
under ``OUT/``. Allocators whose library is not installed are skipped and listed (Debian:
``apt-get install libjemalloc2 libtcmalloc-minimal4``).

Examples:
    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/allocator.py --threads 2   # preact-resnet18, batch 500
    nice -n 19 .venv/bin/python bench/allocator.py --quick --threads 1              # a check of the script
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/allocator.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import header, log, out_prefix, provenance_md, publish, rel, script_command, set_threads  # noqa: E402

# name -> ctypes name of the library to preload; glibc-tuned is glibc with ro.tune_malloc() (throughput.py --malloc tuned)
LIBRARIES = {"glibc": None, "glibc-tuned": None, "jemalloc": "jemalloc", "tcmalloc": "tcmalloc_minimal"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See bench/README.md.")
    p.add_argument("--quick", action="store_true", help="a check of the script: madry-mnist, 3 steps, batch 32, 1 round")
    p.add_argument("--allocators", default=",".join(LIBRARIES), help=f"comma-separated subset of {', '.join(LIBRARIES)}")
    p.add_argument("--model", default="preact-resnet18", help="a model of throughput.py (default preact-resnet18)")
    p.add_argument("--steps", type=int, default=2, help="PGD steps per timed call (default 2)")
    p.add_argument("--batch", type=int, default=500, help="batch size (default 500)")
    p.add_argument("--reps", type=int, default=2, help="timed calls per tool in each round (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the allocators (default 2)")
    p.add_argument("--threads", type=int, help="torch threads of every subprocess")
    p.add_argument("--out", help="output path without suffix (default bench/results/allocator/full, "
                                 "with --quick .../quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.steps, args.batch, args.reps, args.rounds = "madry-mnist", 3, 32, 1, 1
    for name in ("steps", "batch", "reps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def preload(name: str) -> str | None:
    """The ``LD_PRELOAD`` value for an allocator ('' for glibc), None when it is not installed or
    does not load (checked in a fresh process's memory map)."""
    lib = LIBRARIES[name]
    if lib is None:
        return ""
    found = ctypes.util.find_library(lib)  # not dlopen-ed here: jemalloc cannot be after start (static TLS)
    if not found:
        return None
    probe = subprocess.run([sys.executable, "-c", "print(open('/proc/self/maps').read())"], capture_output=True,
                           text=True, env={**os.environ, "LD_PRELOAD": found})
    return found if found in probe.stdout else None  # mapped into a fresh process: the preload works


def run_one(name: str, lib: str, rnd: int, args, folder: Path) -> dict[str, Any]:
    """``throughput.py`` for the limit and robustopt under one allocator; its report."""
    out = folder / f"{name}-{rnd}"
    cmd = script_command("throughput", "--models", args.model, "--tools", "limit,robustopt", "--norms", "linf",
                         "--steps", str(args.steps), "--batch-sizes", str(args.batch), "--reps", str(args.reps),
                         "--out", str(out))  # in our cwd, as typed
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += ["--malloc", "tuned"] if name == "glibc-tuned" else []
    env = {**os.environ, "LD_PRELOAD": lib} if lib else {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    log(f"round {rnd}: {name}")
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or "ld.so" in proc.stderr:  # ld.so warns, and goes on, when a preload fails
        raise SystemExit(f"{name}: throughput.py failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(out.with_name(out.name + ".json").read_text())


def summarize(name: str, runs: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Median rate of every timed call of every round, faults per step and peak RSS, per tool."""
    row: dict[str, Any] = {"allocator": name, "rounds": len(runs), "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}
    batch = runs[0]["measurements"][0]["batch"]
    for tool in ("limit", "robustopt"):
        cells = [r["measurements"][0]["tools"][tool] for r in runs]
        seconds = [s for c in cells for s in c["seconds"]]
        faults = [f for c in cells for f in c.get("minor_faults") or []]
        row[tool] = {"seconds": seconds, "evals_per_second": batch * steps / statistics.median(seconds),
                     "minor_faults_per_step": statistics.median(faults) / steps if faults else None}
    return row


def markdown(r: dict[str, Any]) -> str:
    s = r["settings"]
    base = {row["allocator"]: row for row in r["rows"]}.get("glibc")
    lines = ["# CPU memory allocator: glibc malloc (default and tuned) vs jemalloc vs tcmalloc", "",
             f"PGD (Linf) on {s['model']}, batch {s['batch']}, {s['steps']} steps per call, {s['reps']} timed calls per "
             f"tool and round, {s['rounds']} interleaved rounds; image-gradient evaluations per second (median of "
             "every timed call; higher is better), each allocator in its own process (`LD_PRELOAD`).", "",
             "| allocator | limit | robustopt | limit vs glibc | robustopt vs glibc | minor faults per step (limit) | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lim, ro_ = row["limit"], row["robustopt"]
        vs = [f"{row[t]['evals_per_second'] / base[t]['evals_per_second']:.2f}x" if base else "" for t in ("limit", "robustopt")]
        faults = lim["minor_faults_per_step"]
        lines.append(f"| {row['allocator']} | {lim['evals_per_second']:,.1f} | {ro_['evals_per_second']:,.1f} | {vs[0]} | "
                     f"{vs[1]} | {f'{faults:,.0f}' if faults is not None else 'n/a'} | {row['peak_rss_mib']:,.0f} |")
    libraries = ", ".join(f"{k}: {v or 'the default'}" for k, v in r["libraries"].items())
    lines += ["", f"Libraries: {libraries}."]
    if r["skipped"]:
        lines.append(f"Not installed (or not preloadable), skipped: {', '.join(r['skipped'])}.")
    lines += ["", f"Each subprocess's result: `{r['runs_folder']}/`.", ""] + provenance_md(r)
    return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)  # recorded in the machine line; the subprocesses get --threads
    t_start = time.perf_counter()
    report = header("allocator", quick=args.quick)
    names = [a.strip() for a in args.allocators.split(",") if a.strip()]
    if not names or not set(names) <= set(LIBRARIES):
        raise SystemExit(f"--allocators: a subset of {', '.join(LIBRARIES)}, got {args.allocators}")
    libs = {n: preload(n) for n in names}
    skipped = [n for n, lib in libs.items() if lib is None]
    for n in skipped:
        log(f"note: {n} skipped: its library is not installed or does not preload")
    libs = {n: lib for n, lib in libs.items() if lib is not None}
    out = out_prefix(args.out, "allocator", args.quick)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in libs}
    for rnd in range(1, args.rounds + 1):
        for name, lib in libs.items():
            runs[name].append(run_one(name, lib, rnd, args, out))  # OUT/NAME-ROUND.*
    report.update({
        "settings": {"model": args.model, "steps": args.steps, "batch": args.batch, "reps": args.reps,
                     "rounds": args.rounds, "threads": args.threads},
        "libraries": libs, "skipped": skipped, "runs_folder": rel(out),
        "rows": [summarize(n, rs, args.steps) for n, rs in runs.items()],
    })
    publish(out, report, markdown, t_start)
    return report


if __name__ == "__main__":
    main()
