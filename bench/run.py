#!/usr/bin/env python
"""Run every performance question of the bench in one command.

Each question is its own script, run here one after the other as a subprocess (so that each
one's peak RSS is its own), with the same ``--quick`` and ``--threads``:

* ``throughput.py``: PGD image-gradient evaluations per second of robustopt vs the bare
  forward+backward limit and vs torchattacks, ART and Foolbox, with a strength check;
* ``eval_cost.py``: the madry suite as a cascade vs independent rows, and one eps sweep vs
  10 separate evaluations;
* ``memory.py``: peak RSS of an evaluation of a tenth of the test set and of all of it.

Each script writes ``bench/results/<question>/full.{json,md}`` (``quick.{json,md}`` with
``--quick``); this one writes ``bench/results/run/full.{json,md}`` (``run/quick``): which scripts
ran, their exact commands, exit codes, wall times and peak RSS, with the command, git commit,
machine and date of the whole run, and the scripts' tables after it. ``--out DIR`` puts all of
them under DIR instead of ``bench/results`` (e.g. a check that must not replace the committed
results).

Examples:
    .venv/bin/python bench/run.py --threads 2                         # the full benchmark (idle machine)
    nice -n 19 .venv/bin/python bench/run.py --quick --threads 1      # a check of the scripts, < 2 minutes
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/run.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import (QUESTIONS, REPO, RESULTS, header, log, parser, peak_rss_mib, provenance_md,  # noqa: E402
                           publish, rel, script_command, set_threads)

SCRIPTS = ["throughput", "eval_cost", "memory"]


def parse_args(argv=None):
    p = parser(__doc__, "quick", "threads", "run", "out",
               quick="every script in its quick mode (a check, not the benchmark)",
               threads="torch threads for every script (default: torch's default)",
               run="trained robustopt run folder for the strength rows and the evaluation cost "
                   "(default: small-cnn PGD-AT on mnist-mini, trained once, cached in bench/.cache)",
               out="folder for every result (default bench/results): DIR/<question>/full, or quick")
    p.add_argument("--only", help=f"comma-separated subset of {', '.join(SCRIPTS)}")
    p.add_argument("--keep-going", action="store_true", help="run the next script when one fails")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)  # recorded in the machine line; the scripts get --threads
    t_start = time.perf_counter()
    report = header("run", quick=args.quick)
    names = [s.strip() for s in args.only.split(",")] if args.only else SCRIPTS
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {', '.join(SCRIPTS)}")
    results = Path(args.out) if args.out else RESULTS
    stem = "quick" if args.quick else "full"
    report["scripts"] = []
    rc_all = 0
    for name in names:
        out = results / QUESTIONS[name] / stem
        cmd = script_command(name, *(["--quick"] if args.quick else []), "--out", str(out))  # in our cwd
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += ["--run", args.run] if args.run else []
        log(f"=== {name}: {' '.join(shlex.quote(c) for c in cmd)}")
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
        entry: dict[str, Any] = {"name": name, "command": cmd, "returncode": rc, "wall_seconds": time.perf_counter() - t0,
                                 "json": rel(Path(f"{out}.json").resolve()), "md": rel(Path(f"{out}.md").resolve())}
        if rc == 0 and Path(f"{out}.json").is_file():
            entry["peak_rss_mib"] = json.loads(Path(f"{out}.json").read_text()).get("peak_rss_mib")
        report["scripts"].append(entry)
        log(f"=== {name}: exit {rc} after {entry['wall_seconds']:.0f} s")
        if rc != 0:
            rc_all = rc
            if not args.keep_going:
                break
    report["peak_rss_mib_children"] = peak_rss_mib(children=True)
    publish(results / QUESTIONS["run"] / stem, report, markdown, t_start)
    return rc_all


def markdown(report: dict[str, Any]) -> str:
    """The run's table and provenance, then each script's own Markdown (its headings one level down)."""
    quick = " (QUICK MODE: a check of the scripts, not the benchmark)" if report.get("quick") else ""
    lines = [f"# Bench run{quick}", "", "| script | exit | wall time | peak RSS | results |", "|---|---|---|---|---|"]
    for e in report["scripts"]:
        rss = f"{e['peak_rss_mib']:.0f} MiB" if e.get("peak_rss_mib") else ""
        lines.append(f"| `{e['name']}.py` | {e['returncode']} | {e['wall_seconds']:.0f} s | {rss} | "
                     f"`{e['md']}`, `{e['json']}` |")
    lines += ["", *provenance_md(report)]
    for e in report["scripts"]:
        md = REPO / e["md"]  # relative to the repository, or absolute (outside it)
        if e["returncode"] == 0 and md.is_file():
            text = "\n".join("#" + ln if ln.startswith("#") else ln for ln in md.read_text().splitlines())
            lines += ["---", "", text, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
