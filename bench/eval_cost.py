#!/usr/bin/env python
"""What an honest evaluation costs: cascade vs independent, and one eps sweep vs separate evaluations.

Two measurements on the same model and the same points:

1. The madry suite (``ro.suites.madry(threat)``, the white-box rows of Madry et al. 2018, Table 1)
   evaluated with ``mode="cascade"`` (each attack only on what is still robust) and with
   ``mode="independent"`` (each attack on every clean-correct point): gradient evaluations and
   wall time per row and in total, and the worst-case robust accuracy of both (they should agree
   up to the randomness of the restarts).
2. A sweep over 10 eps values with ``ro.sweep`` (monotone cascade: at each eps only the points
   that survived the previous one are attacked) vs 10 separate ``ro.evaluate`` calls, one per eps,
   with the same attack (PGD, ``steps`` steps of ``2.5 * eps / steps``, random start). Target: the
   sweep costs at most 0.5x the separate evaluations. ``ro.sweep(..., independent=True)`` is run
   too, as a check that it costs what the separate evaluations cost.

The model is a small-cnn trained here with a few hundred steps of PGD-AT on the shipped mnist-mini
(cached in ``bench/.cache/``, shared with ``throughput.py``), or the trained run given with
``--run``. Results: ``OUT.json`` and ``OUT.md`` (default ``bench/results/eval-cost/full``, with
``--quick`` ``.../quick``) with the command, git commit, machine, date and peak RSS.

Examples:
    .venv/bin/python bench/eval_cost.py --threads 2                      # 1000 points, 20 restarts
    nice -n 19 .venv/bin/python bench/eval_cost.py --quick --threads 1   # 100 points, a check
    .venv/bin/python bench/eval_cost.py --run bench/results/full-mnist/A --threads 2
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as `python bench/eval_cost.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import robustopt as ro  # noqa: E402
from bench.harness import (DEFAULT_RECIPE, header, load_model, log, out_prefix, parser, provenance_md,  # noqa: E402
                           publish, set_threads, state_digest)


def suite_cost(model, x, y, threat, args) -> dict[str, Any]:
    attacks = ro.suites.madry(threat, max_restarts=args.max_restarts)
    out: dict[str, Any] = {"attacks": [a.describe() for a in attacks], "max_restarts": args.max_restarts}
    for mode in ("cascade", "independent"):
        log(f"madry suite, mode={mode}: {len(attacks)} attacks on {len(x)} points ...")
        t0 = time.perf_counter()
        ev = ro.evaluate(model, (x, y), attacks, batch_size=args.batch_size, seed=args.seed, mode=mode, progress=False)
        seconds = time.perf_counter() - t0
        rows = [{"name": r.name, "steps": r.steps, "restarts": r.restarts, "attacked": r.attacked,
                 "grad_evals": r.grad_evals, "seconds": r.seconds, "accuracy": r.accuracy, "worst_case": r.worst_case}
                for r in ev.rows]
        out[mode] = {"seconds": seconds, "grad_evals": sum(r["grad_evals"] for r in rows),
                     "clean_accuracy": ev.clean_accuracy, "robust_accuracy": ev.robust_accuracy,
                     "robust": ev.robust.int().tolist(), "rows": rows}
        log(f"  {seconds:.1f} s, {out[mode]['grad_evals']:,} gradient evaluations, robust accuracy "
            f"{100 * ev.robust_accuracy:.1f}%")
    c, i = out["cascade"], out["independent"]
    rc, ri = torch.tensor(c["robust"], dtype=torch.bool), torch.tensor(i["robust"], dtype=torch.bool)
    out["ratio_grad_evals"] = c["grad_evals"] / max(i["grad_evals"], 1)
    out["ratio_seconds"] = c["seconds"] / i["seconds"]
    out["disagree"] = {"robust_only_in_cascade": int((rc & ~ri).sum()), "robust_only_in_independent": int((ri & ~rc).sum())}
    return out


def sweep_cost(model, x, y, threat_cls, eps_grid, args) -> dict[str, Any]:
    steps = args.sweep_steps
    template = ro.attacks.PGD(threat_cls(0.0), steps=steps, rel_step_size=2.5 / steps, random_start=True)
    out: dict[str, Any] = {"eps": eps_grid, "attack": template.describe()}

    log(f"sweep over {len(eps_grid)} eps (cascade) ...")
    t0 = time.perf_counter()
    curve = ro.sweep(model, (x, y), threat_cls, eps_grid, attack=template, batch_size=args.batch_size, seed=args.seed,
                     progress=False)
    out["sweep"] = {"seconds": time.perf_counter() - t0, "grad_evals": curve.total_grad_evals,
                    "accuracy": curve.accuracy, "grad_evals_per_eps": curve.grad_evals, "attacked": curve.attacked}

    log(f"{len(eps_grid)} separate evaluations ...")
    per_eps = []
    t0 = time.perf_counter()
    for eps in eps_grid:
        t1 = time.perf_counter()
        ev = ro.evaluate(model, (x, y), [ro.attacks.PGD(threat_cls(eps), steps=steps, rel_step_size=2.5 / steps,
                                                        random_start=True)],
                         batch_size=args.batch_size, seed=args.seed, mode="cascade", progress=False)
        per_eps.append({"eps": eps, "robust_accuracy": ev.robust_accuracy, "grad_evals": ev.rows[-1].grad_evals,
                        "attacked": ev.rows[-1].attacked, "seconds": time.perf_counter() - t1})
    out["separate"] = {"seconds": time.perf_counter() - t0, "grad_evals": sum(p["grad_evals"] for p in per_eps),
                       "per_eps": per_eps, "accuracy": [p["robust_accuracy"] for p in per_eps]}

    if not args.no_independent_sweep:
        log("sweep with independent=True (check) ...")
        t0 = time.perf_counter()
        ind = ro.sweep(model, (x, y), threat_cls, eps_grid, attack=template, batch_size=args.batch_size, seed=args.seed,
                       progress=False, independent=True)
        out["sweep_independent"] = {"seconds": time.perf_counter() - t0, "grad_evals": ind.total_grad_evals,
                                    "accuracy": ind.accuracy}
    s, e = out["sweep"], out["separate"]
    out["ratio_grad_evals"] = s["grad_evals"] / max(e["grad_evals"], 1)
    out["ratio_seconds"] = s["seconds"] / e["seconds"]
    out["target_ratio"] = 0.5
    return out


def markdown(r: dict[str, Any]) -> str:
    quick = r.get("quick")
    su, sw = r["suite"], r["sweep"]
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    lines = [f"# Evaluation cost: cascade vs independent, sweep vs separate evaluations{' (QUICK MODE)' if quick else ''}",
             ""]
    if quick:
        lines += [f"Quick mode checks the script ({r['n']} points, restarts capped at {su['max_restarts']}, PGD-"
                  f"{sw['attack']['steps']} in the sweep). Gradient evaluations are exact counts; times depend on the "
                  "machine's load (below).", ""]
    lines += [
        f"- model: {r['model']['source']} (state sha256[:16] `{r['model']['state_sha256_16']}`)",
        f"- data: first {r['n']} `{r['data']}` test images; threat {r['threat']}; batch {r['batch_size']}; seed {r['seed']}",
        "",
        "## 1. Madry suite: cascade vs independent",
        "",
        f"`ro.suites.madry({r['threat']}" + (f", max_restarts={su['max_restarts']}" if su["max_restarts"] else "")
        + ")` (white-box rows), same model and points.",
        "",
        "| row | steps | restarts | cascade: attacked | grad evals | s | independent: attacked | grad evals | s | "
        "accuracy alone |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rc, ri in zip(su["cascade"]["rows"], su["independent"]["rows"]):
        if rc["name"] == "Natural":
            continue
        lines.append(f"| {rc['name']} | {rc['steps']} | {rc['restarts']} | {rc['attacked']} | {rc['grad_evals']:,} | "
                     f"{rc['seconds']:.1f} | {ri['attacked']} | {ri['grad_evals']:,} | {ri['seconds']:.1f} | {pct(ri['accuracy'])} |")
    c, i = su["cascade"], su["independent"]
    lines += [
        f"| **total** | | | | **{c['grad_evals']:,}** | **{c['seconds']:.1f}** | | **{i['grad_evals']:,}** | "
        f"**{i['seconds']:.1f}** | |",
        "",
        f"Cascade / independent: **{su['ratio_grad_evals']:.2f}x** the gradient evaluations, "
        f"**{su['ratio_seconds']:.2f}x** the time. Clean accuracy {pct(c['clean_accuracy'])}; worst-case robust "
        f"accuracy: cascade {pct(c['robust_accuracy'])}, independent {pct(i['robust_accuracy'])} "
        f"({su['disagree']['robust_only_in_cascade']} points robust only in the cascade, "
        f"{su['disagree']['robust_only_in_independent']} only in the independent run: fresh random starts).",
        "",
        f"## 2. Sweep over {len(sw['eps'])} eps vs {len(sw['eps'])} separate evaluations",
        "",
        f"PGD-{sw['attack']['steps']} (step 2.5 * eps / {sw['attack']['steps']}, random start) at eps "
        f"{', '.join(f'{e:g}' for e in sw['eps'])} ({r['threat'].split('(')[0]}).",
        "",
        "| eps | sweep: attacked | grad evals | robust acc. | separate: attacked | grad evals | robust acc. |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, p in enumerate(sw["separate"]["per_eps"]):
        s = sw["sweep"]
        lines.append(f"| {p['eps']:g} | {s['attacked'][k]} | {s['grad_evals_per_eps'][k]:,} | {pct(s['accuracy'][k])} | "
                     f"{p['attacked']} | {p['grad_evals']:,} | {pct(p['robust_accuracy'])} |")
    s, e = sw["sweep"], sw["separate"]
    ok = sw["ratio_grad_evals"] <= sw["target_ratio"]
    lines += [
        f"| **total** | | **{s['grad_evals']:,}** ({s['seconds']:.1f} s) | | | **{e['grad_evals']:,}** ({e['seconds']:.1f} s) | |",
        "",
        f"Sweep / separate evaluations: **{sw['ratio_grad_evals']:.2f}x** the gradient evaluations "
        f"({'meets' if ok else 'MISSES'} the target <= {sw['target_ratio']}x), **{sw['ratio_seconds']:.2f}x** the time.",
    ]
    if "sweep_independent" in sw:
        si = sw["sweep_independent"]
        lines += ["", f"Check: `ro.sweep(..., independent=True)` costs {si['grad_evals']:,} gradient evaluations "
                      f"({si['seconds']:.1f} s), i.e. {si['grad_evals'] / max(e['grad_evals'], 1):.2f}x the separate "
                      "evaluations."]
    lines += ["", "The saving depends on the model and the grid: the sweep skips, at each eps, the points already broken "
                  "at a smaller one, so a curve that falls early saves most; points robust at every eps cost the same "
                  "in both.", ""]
    lines += provenance_md(r)
    return "\n".join(lines)


def parse_args(argv=None):
    p = parser(__doc__, "quick", "threads", "run", "cache", "root", "norm", "eps", "batch-size", "seed", "out",
               script="eval_cost", quick="100 points, restarts capped at 1, PGD-10 in the sweep",
               eps="eps of the madry suite (default: the run's)")
    p.add_argument("--n", type=int, help="first N test images (default 1000; quick 100)")
    p.add_argument("--max-restarts", type=int, help="cap on the suite's restarts (default: none = 20; quick 1)")
    p.add_argument("--sweep-eps", help="comma-separated eps grid (default: 10 values, eps/6 .. 5*eps/3)")
    p.add_argument("--sweep-steps", type=int, help="PGD steps in the sweep (default 40; quick 10)")
    p.add_argument("--no-independent-sweep", action="store_true", help="skip the sweep(independent=True) check")
    args = p.parse_args(argv)
    if args.quick:
        args.n = args.n or 100
        args.max_restarts = args.max_restarts or 1
        args.sweep_steps = args.sweep_steps or 10
    args.n = args.n or 1000
    args.sweep_steps = args.sweep_steps or 40
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    t_start = time.perf_counter()
    report = header("eval_cost", quick=args.quick)
    subject = load_model(args.run, folder=Path(args.cache) / DEFAULT_RECIPE)
    model = subject.model
    threat = subject.threat(args.norm, args.eps)
    x, y = subject.test_set(args.n, root=args.root)
    grid = ([float(v) for v in args.sweep_eps.split(",")] if args.sweep_eps
            else [round(threat.eps * k / 6, 6) for k in range(1, 11)])
    report.update({"model": {"source": subject.source, "run_info": subject.info, "state_sha256_16": state_digest(model)},
                   "data": subject.data, "n": args.n, "threat": str(threat), "batch_size": args.batch_size,
                   "seed": args.seed})
    report["suite"] = suite_cost(model, x, y, threat, args)
    report["sweep"] = sweep_cost(model, x, y, type(threat), grid, args)
    publish(out_prefix(args.out, "eval_cost", args.quick), report, markdown, t_start)
    return report


if __name__ == "__main__":
    main()
