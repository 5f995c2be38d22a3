"""Square's p schedule: rescaled to the query budget (the paper, robustopt's default) or AutoAttack's; and AutoAttack's code.

AutoAttack's standard version runs Square with 5,000 queries and ``resc_schedule=False``: the window
fraction ``p`` halves at the paper's iterations 10, 50, 200, ... of a 10,000-query run, so it stays
larger for longer than the paper's schedule rescaled to 5,000 queries. This script reruns Square
alone, with each schedule and several seeds, and AutoAttack's own SquareAttack, on the points a `bench/compare_autoattack.py` comparison
left open: those robustopt's suite did not break, and those only AutoAttack broke. It counts, per
schedule, how many of them each seed breaks and which.

Usage:
    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/square_schedule.py \
        --comparison bench/results/autoattack/full-mnist-A-l1-eps10-n200 --seeds 8 --threads 1
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as `python bench/square_schedule.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import robustopt as ro  # noqa: E402
from robustopt.attacks.square import AUTOATTACK_SCHEDULE_SCALE  # noqa: E402
from bench.harness import (  # noqa: E402
    header, load_model, log, out_prefix, parser, provenance_md, publish, rel, set_threads, threat as make_threat,
)

# Square.schedule_queries for a budget of q queries: the budget itself (rescaled), or AutoAttack's ratio
SCHEDULES = {"rescaled": lambda q: None, "autoattack": lambda q: AUTOATTACK_SCHEDULE_SCALE * q}
AUTOATTACK_CODE = "autoattack-code"  # AutoAttack's own SquareAttack (pyautoattack), resc_schedule=False


def open_points(comparison: dict, ro_side: dict) -> list[int]:
    """Indices robustopt's suite left robust, and those only AutoAttack broke (sorted)."""
    robust = [i for i, r in enumerate(ro_side["robust"]) if r]
    return sorted(set(robust) | set(comparison["agreement"]["only_autoattack_indices"]))


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, "threads", "root", "out", script="square_schedule")
    p.add_argument("--comparison", required=True, help="prefix of a compare_autoattack result (PREFIX.json and "
                                                       "PREFIX.ro-side.pt)")
    p.add_argument("--seeds", type=int, default=8, help="seeds per schedule (default 8)")
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--variants", default=",".join([*SCHEDULES, AUTOATTACK_CODE]),
                   help=f"comma-separated subset of {', '.join([*SCHEDULES, AUTOATTACK_CODE])} (the last needs "
                        "pyautoattack, the bench extra)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    prefix = Path(args.comparison)
    comparison = json.loads(prefix.with_name(prefix.name + ".json").read_text())
    ro_side = torch.load(prefix.with_name(prefix.name + ".ro-side.pt"), weights_only=False)["value"][0]
    run = comparison["command"].split("--run ")[1].split()[0]  # the run folder the comparison attacked
    threat = make_threat(comparison["threat"]["norm"].lower(), comparison["threat"]["eps"])
    model = load_model(run).model
    x, y = ro.data.load(comparison["data"]["name"], split="test", root=args.root)
    points = open_points(comparison, ro_side)
    xs, ys = x[points], y[points]
    t0 = time.perf_counter()
    report = header("square-schedule")
    report.update(comparison=rel(prefix), run=run, threat=repr(threat), points=points,
                  only_autoattack=comparison["agreement"]["only_autoattack_indices"], queries=args.queries,
                  seeds=args.seeds, results={})
    for name in args.variants.split(","):
        rows = []
        for seed in range(args.seeds):
            start = time.perf_counter()
            if name == AUTOATTACK_CODE:
                success = autoattack_square(model, threat, xs, ys, args.queries, seed)
            else:
                attack = ro.attacks.Square(threat, queries=args.queries, schedule_queries=SCHEDULES[name](args.queries))
                success = attack.run(model, xs, ys, generator=torch.Generator().manual_seed(seed)).success
            broken = [points[i] for i in success.nonzero().flatten().tolist()]
            rows.append({"seed": seed, "broken": broken, "seconds": time.perf_counter() - start})
            log(f"{name} seed {seed}: broke {broken} ({rows[-1]['seconds']:.0f} s)")
        report["results"][name] = rows
    publish(out_prefix(args.out, "square_schedule"), report, markdown, t0)


def autoattack_square(model, threat, x: torch.Tensor, y: torch.Tensor, queries: int, seed: int) -> torch.Tensor:
    """Which points AutoAttack's own SquareAttack (as its standard version configures it) breaks."""
    from pyautoattack.square import SquareAttack

    attack = SquareAttack(model, norm=threat.norm, eps=threat.eps, n_queries=queries, p_init=0.8, n_restarts=1,
                          seed=seed, loss="margin", resc_schedule=False, device=x.device)
    with torch.no_grad():
        x_adv = attack.perturb(x.clone(), y.clone())
        return model(x_adv).argmax(1) != y


def markdown(r: dict) -> str:
    lines = ["# Square's p schedule: rescaled to the budget vs AutoAttack's", "",
             f"Square alone ({r['queries']} queries, {r['threat']}), {r['seeds']} seeds per schedule, on the "
             f"{len(r['points'])} points that robustopt's suite left robust or only AutoAttack broke in "
             f"`{r['comparison']}` (only AutoAttack: {r['only_autoattack']}).", "",
             "| Square | broken per seed (mean) | seeds breaking each point | s per seed |", "|---|---|---|---|"]
    for name, rows in r["results"].items():
        counts = {p: sum(p in row["broken"] for row in rows) for p in r["points"]}
        per_point = ", ".join(f"{p}: {c}" for p, c in counts.items() if c)
        mean = sum(len(row["broken"]) for row in rows) / len(rows)
        secs = sum(row["seconds"] for row in rows) / len(rows)
        lines.append(f"| {name} | {mean:.2f} | {per_point or 'none'} | {secs:.0f} |")
    return "\n".join(lines + [""] + provenance_md(r))


if __name__ == "__main__":
    main()
