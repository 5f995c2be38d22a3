"""Tabulate and plot robust accuracy against training cost for several training runs.

Reads each run folder's ``log.jsonl`` (per epoch: cumulative-able ``grad_evals``, ``seconds``,
``val_clean_acc``, ``val_robust_acc``) and, when present, ``eval-standard.json``, ``eval-adaptive.json``
or ``eval-fast.json`` (the final model's worst case on test images; the first found, in that order).
Writes ``OUT.md``, ``OUT.json`` and ``OUT.png``.

    .venv/bin/python bench/training_curves.py runs/efficiency/* --out bench/results/train-efficiency/small-cnn
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/training_curves.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import header, log, provenance_md, publish  # noqa: E402


SUITES = ("standard", "adaptive", "fast")  # the final evaluation shown: the first found


def pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def read_run(path: Path) -> dict:
    epochs = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((path / "config.json").read_text())
    grad, secs, points = 0, 0.0, []
    for row in epochs:
        grad += int(row.get("grad_evals") or 0)
        secs += float(row.get("seconds") or 0.0)
        points.append({"epoch": row["epoch"], "grad_evals": grad, "seconds": secs,
                       "val_clean": row.get("val_clean_acc"), "val_robust": row.get("val_robust_acc"),
                       "events": row.get("events")})
    final = {}
    for suite in SUITES:
        f = path / f"eval-{suite}.json"
        if f.is_file():
            ev = json.loads(f.read_text())
            final[suite] = {"n": ev["n"], "clean": ev["clean_accuracy"], "robust": ev["robust_accuracy"]}
            break
    return {"run": path.name, "method": config["method"], "config": config, "curve": points, "final": final}


def markdown(report: dict[str, Any]) -> str:
    lines = ["| run | method | epochs | image-grad evals | train time (s) | val clean | val robust (PGD-10) "
             "| test images | test clean | test robust (suite) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        last = r["curve"][-1]
        suite, fin = next(iter(r["final"].items()), ("", {}))
        lines.append(f"| {r['run']} | {r['method']} | {last['epoch']} | {last['grad_evals'] / 1e6:.2f}M | "
                     f"{last['seconds']:.0f} | {pct(last['val_clean'])} | {pct(last['val_robust'])} | "
                     f"{fin.get('n', '')} | {pct(fin.get('clean'))} | {pct(fin.get('robust'))}"
                     f"{f' ({suite})' if suite else ''} |")
    return "\n".join(["# Robust accuracy against training cost", ""] + provenance_md(report) + lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    report = header("training-curves")
    runs = [read_run(r) for r in args.runs if (r / "log.jsonl").is_file()]
    if not runs:
        sys.exit("no run folder with a log.jsonl among the arguments")
    report["runs"] = runs
    publish(args.out, report, markdown, t0)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot")
    else:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for r in runs:
            xs = [pt["grad_evals"] / 1e6 for pt in r["curve"]]
            ys = [100 * pt["val_robust"] if pt["val_robust"] is not None else float("nan") for pt in r["curve"]]
            ax.plot(xs, ys, marker="o", label=r["run"])
        ax.set_xlabel("training image-gradient evaluations (millions)")
        ax.set_ylabel("validation robust accuracy (%, PGD-10)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out.with_name(args.out.name + ".png"), dpi=120)


if __name__ == "__main__":
    main()
