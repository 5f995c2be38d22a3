"""The robustness-per-hour frontier of the CIFAR-10 training recipes: test robust accuracy against cost.

One point per training run: its cost (the training image-gradient evaluations of its log, which do
not depend on the machine, and the wall time it took) against its clean and robust accuracy on
the first ``--n`` test images under one suite (the adaptive suite by default). A run is a run
folder (its ``log.jsonl``, ``config.json`` and ``eval-SUITE.json``, read on its first N examples)
or a run of a ``bench/training_curves.py`` report (``REPORT.json#RUN``: its folder is gone, its
final evaluation must be on exactly N images). The plot's lower axis is the cost; its upper axis
converts it to hours at ``--seconds-per-million`` (a rate measured on one machine), because
the runs' own wall times come from different machines and loads; the table gives them as measured.
The frontier is the runs that no cheaper run beats on robust accuracy.

    .venv/bin/python bench/recipe_frontier.py bench/results/cifar10-cpu/A \\
        bench/results/cifar10-recipes/resnet9-4-epochs.json#n-fgsm ... --seconds-per-million 4400
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/recipe_frontier.py`: import bench/ as a package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import default_out, header, log, parser, provenance_md, publish, rel  # noqa: E402
from bench.training_curves import read_run  # noqa: E402


def _recipe(config: dict[str, Any]) -> str:
    """A short description of a run's recipe: its method and the levers that differ from A's."""
    parts = [f"pgd-{config['attack_steps']}" if config["method"] == "pgd" else config["method"]]
    if config.get("lr") not in (None, 0.2):
        parts.append(f"LR {config['lr']:g}")
    if config.get("ema_decay"):
        parts.append(f"EMA {config['ema_decay']:g}")
    if config.get("label_smoothing"):
        parts.append(f"smoothing {config['label_smoothing']:g}")
    if config.get("finish_method"):
        parts.append(f"{config['finish_method']} last {config['finish_epochs']}")
    return ", ".join(parts)


def read_point(spec: str, n: int, suite: str) -> dict[str, Any]:
    """One run's point: a run folder, or ``REPORT.json#RUN`` (module docstring).

    Raises:
        ValueError: no evaluation with that suite, or one on fewer than ``n`` images (or, from a
            report, not on exactly ``n``).
    """
    if "#" in spec:
        report, name = spec.split("#", 1)
        run = next((r for r in json.loads(Path(report).read_text())["runs"] if r["run"] == name), None)
        if run is None:
            raise ValueError(f"{report} has no run {name!r}.")
        final = run["final"].get(suite)
        if final is None or final["n"] != n:
            raise ValueError(f"{spec}: its final evaluation is not the {suite} suite on {n} images ({run['final']}).")
        source, clean, robust = f"{rel(report)}#{name}", final["clean"], final["robust"]
    else:
        folder = Path(spec)
        ev_file = folder / f"eval-{suite}.json"
        if not ev_file.is_file():
            raise ValueError(f"{folder} has no {ev_file.name}: run `robustopt eval {folder} --suite {suite} --n {n}`.")
        ev = json.loads(ev_file.read_text())
        if ev["n"] < n:
            raise ValueError(f"{ev_file} is on {ev['n']} images, fewer than {n}.")
        run = read_run(folder)
        source, clean, robust = rel(folder), sum(ev["correct"][:n]) / n, sum(ev["robust"][:n]) / n
    last = run["curve"][-1]  # cumulative cost
    return {"source": source, "recipe": _recipe(run["config"]), "epochs": last["epoch"], "grad_evals": last["grad_evals"],
            "seconds": last["seconds"], "clean": clean, "robust": robust}


def frontier(points: list[dict[str, Any]]) -> None:
    """Mark ``on_frontier`` on the points that no cheaper (or equally cheap) point beats on robustness."""
    best = -1.0
    for p in sorted(points, key=lambda p: (p["grad_evals"], -p["robust"])):
        p["on_frontier"] = p["robust"] > best
        best = max(best, p["robust"])


def markdown(report: dict[str, Any]) -> str:
    m = report["measured"]
    lines = [f"# Robust accuracy against training cost: CIFAR-10 recipes ({m['suite']} suite, first {m['n']} test images)",
             "", *provenance_md(report),
             "| recipe | epochs | image-grad evals | wall time (as run) | test clean | test robust | frontier | source |",
             "|---|---|---|---|---|---|---|---|"]
    for p in sorted(m["points"], key=lambda p: (p["grad_evals"], p["recipe"])):
        lines.append(f"| {p['recipe']} | {p['epochs']} | {p['grad_evals'] / 1e6:.2f} M | {p['seconds']:,.0f} s | "
                     f"{100 * p['clean']:.1f}% | {100 * p['robust']:.1f}% | {'yes' if p['on_frontier'] else ''} | "
                     f"{p['source']} |")
    lines += ["", f"Hours on the plot's upper axis: {m['seconds_per_million']:,.0f} s per million image-gradient "
              "evaluations (`--seconds-per-million`)."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot")
        return
    m = report["measured"]
    rate = m["seconds_per_million"] / 3600  # hours per million evaluations
    fig, ax = plt.subplots(figsize=(7, 4.4))
    recipes = sorted({p["recipe"] for p in m["points"]})
    markers = "osD^v<>ph*"
    for i, recipe in enumerate(recipes):
        pts = sorted((p for p in m["points"] if p["recipe"] == recipe), key=lambda p: p["grad_evals"])
        ax.plot([p["grad_evals"] / 1e6 for p in pts], [100 * p["robust"] for p in pts], marker=markers[i % len(markers)],
                linestyle="-" if len(pts) > 1 else "none", label=recipe)
    front = sorted((p for p in m["points"] if p["on_frontier"]), key=lambda p: p["grad_evals"])
    ax.step([p["grad_evals"] / 1e6 for p in front], [100 * p["robust"] for p in front], where="post", color="gray",
            alpha=0.5, linewidth=3, zorder=0, label="frontier")
    ax.set_xlabel("training cost (million image-gradient evaluations)")
    ax.set_ylabel(f"test robust accuracy (%, {m['suite']} suite, first {m['n']})")
    top = ax.secondary_xaxis("top", functions=(lambda v: v * rate, lambda h: h / rate))
    top.set_xlabel(f"hours on 2 cores at {m['seconds_per_million']:,.0f} s per million")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__, "out", out="output path without suffix (default bench/results/cifar10-recipes/frontier)")
    p.add_argument("runs", nargs="+", help="run folders, or REPORT.json#RUN of a bench/training_curves.py report")
    p.add_argument("--n", type=int, default=500, help="the first N test images (default 500)")
    p.add_argument("--suite", default="adaptive", help="the evaluation read (default adaptive)")
    p.add_argument("--seconds-per-million", type=float, required=True,
                   help="wall seconds per million image-gradient evaluations of training, for the hours axis")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    report = header("recipe-frontier")
    points = [read_point(spec, args.n, args.suite) for spec in args.runs]
    frontier(points)
    report["measured"] = {"n": args.n, "suite": args.suite, "seconds_per_million": args.seconds_per_million,
                          "points": points}
    out = Path(args.out) if args.out else default_out("recipe_frontier", "frontier")
    publish(out, report, markdown, t0)
    plot(report, out.with_name(out.name + ".png"))
    return report


if __name__ == "__main__":
    main()
