#!/usr/bin/env python
"""One row of the zoo's comparison: the adaptive suite, the standard suite and the original AutoAttack on a zoo entry.

All three run in this process on the same first ``--n`` test images of the entry's dataset, under
the entry's threat model, at the same thread count: robustopt's ``suites.standard(version=
"adaptive")`` and ``suites.standard()`` through ``ro.evaluate`` (cascade), and AutoAttack
(pyautoattack) ``version="standard"``, or ``version="rand"`` for a randomized entry (input noise).
Gradient evaluations and forward passes are counted for all three by bench/compare_autoattack.py's
``PassCounter``; AutoAttack's robust accuracy is recomputed from its points (for a randomized
entry: a point counts as broken when it fools the model in most of ``--draws`` draws).

Each finished side is saved next to OUT (``OUT.SIDE-side.pt``) and reused by a rerun of the same
command. A side left out of ``--sides`` keeps its row from the published OUT.json when that row was
measured under the same key (the model's weights, points, threat, seed, batch size, threads and
draws), e.g. ``--sides adaptive`` after a change to the adaptive suite, without rerunning AutoAttack;
the row says when it was measured. ``--adaptive FIELD=VALUE`` measures a variant of the adaptive
suite (e.g. ``eot=10``) into its own ``--out``, with the other sides of the entry's published run.
``--table`` prints the Markdown table of every result in
bench/results/zoo-vs-autoattack.

Examples:
    ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/zoo_vs_autoattack.py \\
        mnist-pgd-linf --n 1000 --threads 1
    .venv/bin/python bench/zoo_vs_autoattack.py --table
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as `python bench/zoo_vs_autoattack.py`: import bench/ as a package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.compare_autoattack import (PassCounter, aa_version_of, import_autoattack, load_side,  # noqa: E402
                                      make_autoattack, parse_aa_cascade, run_autoattack, save_side)
from bench.harness import header, log, parser, predictions, publish, set_threads, state_digest, threat  # noqa: E402
from robustopt import Evaluation, data, evaluate, suites, zoo  # noqa: E402
from robustopt.evaluation.records import budget_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "zoo-vs-autoattack"
SIDES = ("adaptive", "standard", "autoattack")
RANDOMIZED = {"noise"}  # defense kinds whose model draws randomness at every call


def parse_args(argv=None):
    p = parser(__doc__, "root", "batch-size", "seed", "threads", "out",
               out="output path without suffix (default bench/results/zoo-vs-autoattack/NAME)")
    p.add_argument("entry", nargs="?", help="zoo entry name (robustopt zoo list)")
    p.add_argument("--n", type=int, default=None, help="first N test images (default: 1000 MNIST, 500 CIFAR-10)")
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma list of {', '.join(SIDES)}")
    p.add_argument("--draws", type=int, default=10, help="randomized entries: draws per point for the majority vote")
    p.add_argument("--adaptive", action="append", default=[], metavar="FIELD=VALUE",
                   help="a variant of the adaptive suite, e.g. --adaptive eot=10 (an AdaptiveAutoAttack field; "
                        "repeatable); give it its own --out: the other sides are reused from the entry's default one")
    p.add_argument("--again", default="", help="comma list of sides to run again even where a saved one matches "
                                               "(the key holds the suite's configuration, not its code)")
    p.add_argument("--table", action="store_true", help="print the Markdown table of all results and exit")
    return p.parse_args(argv)


def broken_by(model, x_adv, x, y, threat_model, batch_size: int, draws: int) -> torch.Tensor:
    """Per point: the attack's point lies in the threat model and fools the model (in most of ``draws`` draws)."""
    fooled = torch.stack([predictions(model, x_adv, batch_size) != y for _ in range(draws)]).float().mean(0) > 0.5
    return fooled.cpu() & threat_model.contains(x_adv, x).cpu()


def main(argv=None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.table:
        print(table())
        return None
    if not args.entry:
        raise SystemExit("give a zoo entry (robustopt zoo list) or --table")
    if args.adaptive and not args.out:  # else the variant would replace the entry's published row
        raise SystemExit("--adaptive measures a variant of the adaptive suite: give it its own --out "
                         "(e.g. bench/results/zoo-vs-autoattack/eot/NAME-VARIANT)")
    set_threads(args.threads)
    t0 = time.perf_counter()
    report = header("zoo vs AutoAttack")
    item = zoo.entry(args.entry)
    model = zoo.load(item.name)
    randomized = bool(item.defense and item.defense["kind"] in RANDOMIZED)
    draws = args.draws if randomized else 1
    n = args.n or (500 if item.dataset == "cifar10" else 1000)
    x, y = data.load(item.dataset, "test", root=args.root)
    x, y = x[:n].contiguous(), y[:n].long().contiguous()
    t = threat(item.norm, item.eps)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    again = {s.strip() for s in args.again.split(",") if s.strip()}
    out = Path(args.out) if args.out else RESULTS / item.name
    variant = {field: _value(text) for field, _, text in (a.partition("=") for a in args.adaptive)}
    key = {"model": state_digest(model), "entry": item.name, "n": n, "threat": str(t), "seed": args.seed,
           "batch_size": args.batch_size, "threads": torch.get_num_threads(), "draws": draws}
    aa_module, AutoAttack = import_autoattack()
    aa_version = "rand" if randomized else "standard"
    with torch.no_grad():
        predictions(model, x[: args.batch_size], args.batch_size)  # warm-up outside the timings

    def suite(version: str) -> list:
        attacks = suites.standard(t, version=version, seed=args.seed)
        return [dataclasses.replace(a, **variant) for a in attacks] if version == "adaptive" else attacks

    def run_suite(version: str):
        counter = PassCounter(model)
        start = time.perf_counter()
        ev = evaluate(counter, (x, y), suite(version), batch_size=args.batch_size,
                      seed=args.seed, mode="cascade", progress=False)
        # as JSON text: a saved side is read back with weights_only=True (tensors and plain data only)
        return {"evaluation": json.dumps(ev.to_dict(), default=str), "seconds": time.perf_counter() - start, "counted": counter.counts()}

    def run_aa():
        counter = PassCounter(model)
        if aa_version == "standard":
            aa = make_autoattack(AutoAttack, counter, norm=item.norm.capitalize() if item.norm == "linf" else "L2",
                                 eps=t.eps, seed=args.seed, version="standard", attacks=None)
        else:
            aa = AutoAttack(counter, norm="Linf" if item.norm == "linf" else "L2", eps=t.eps, seed=args.seed,
                            version="rand")
        x_adv, lines, seconds = run_autoattack(aa, x.clone(), y.clone(), args.batch_size, echo_log=False)
        return {"x_adv": x_adv.cpu(), "log": lines, "seconds": seconds, "counted": counter.counts(),
                "attacks": list(aa.attacks_to_run)}

    runners = {"adaptive": lambda: run_suite("adaptive"), "standard": lambda: run_suite("standard"), "autoattack": run_aa}
    results, finished = {}, {}
    # robustopt's sides are also keyed by their attacks' configurations: a changed suite runs again
    side_keys = {side: {**key, "attacks": repr([a.describe() for a in suite(side)])} for side in ("adaptive", "standard")}
    default = RESULTS / item.name
    for side in sides:
        path = out.with_name(f"{out.name}.{side}-side.pt")
        side_key = side_keys.get(side, key)
        blob = None if side in again else load_side(path, side_key)
        if blob is None and out != default and side not in again:  # a variant's other sides: as measured at the entry's default place
            blob = load_side(default.with_name(f"{default.name}.{side}-side.pt"), side_key)
        if blob is None:
            log(f"{item.name}: {side} ...")
            blob = save_side(path, side_key, runners[side]())
        results[side], finished[side] = blob["value"], blob["finished_utc"]
        log(f"{item.name}: {side} done ({results[side]['seconds']:.1f} s)")

    correct = torch.stack([predictions(model, x, args.batch_size) == y for _ in range(draws)]).float().mean(0) > 0.5
    rows = {}
    for side, value in results.items():
        if side == "autoattack":
            robust = correct.cpu() & ~broken_by(model, value["x_adv"], x, y, t, args.batch_size, draws)
            extra = {"version": aa_version, "attacks": value["attacks"], "cascade": parse_aa_cascade(value["log"], n)}
        else:
            ev = Evaluation.from_dict(json.loads(value["evaluation"]))
            robust = ev.robust.bool()
            extra = {"rows": [{"attack": r.name, "after": r.worst_case, "seconds": r.seconds} for r in ev.rows],
                     "budget_per_stage": budget_table(ev, "markdown")}
        rows[side] = {"robust_accuracy": float(robust.float().mean()), "robust": int(robust.sum()),
                      "seconds": value["seconds"], "grad_evals_per_point": value["counted"]["grad_evals"] / n,
                      "forwards_per_point": value["counted"]["forwards"] / n, "finished_utc": finished[side],
                      "robust_indices": robust.nonzero().squeeze(1).tolist(), **extra}
    published = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else None
    if published and published.get("key") == key:  # the same weights, points, threat, seed, batch, threads, draws
        for side in SIDES:  # the sides not run now keep their published rows (with their finished_utc)
            if side not in rows and side in published["sides"]:
                rows[side] = {**published["sides"][side], "carried_from": published.get("started_utc")}
        rows = {side: rows[side] for side in SIDES if side in rows}
    report.update({"key": key, "entry": item.name, "dataset": item.dataset, "n": n, "threat": str(t),
                   "randomized": randomized, "adaptive_variant": variant,
                   "draws": draws, "clean_accuracy": float(correct.float().mean()), "seed": args.seed,
                   "batch_size": args.batch_size, "autoattack_package": f"{aa_module.__name__} {aa_version_of(aa_module)}",
                   "sides": rows})
    publish(out, report, markdown, t0)
    return report


def _value(text: str) -> Any:
    """A command-line field value: a number where it reads as one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def markdown(r: dict[str, Any]) -> str:
    """One entry's result."""
    from bench.harness import provenance_md

    lines = [f"# zoo:{r['entry']}: adaptive suite, standard suite, AutoAttack", "",
             f"First {r['n']} {r['dataset']} test images, {r['threat']}; clean accuracy {_pct(r['clean_accuracy'])}"
             + (f" (majority over {r['draws']} draws: a randomized entry)" if r["randomized"] else "") + "; "
             f"{r['autoattack_package']}."
             + (f" Adaptive suite variant: {r['adaptive_variant']}." if r.get("adaptive_variant") else ""), "",
             "| side | robust accuracy | wall time | grad evals / point | forwards / point |", "|---|---|---|---|---|"]
    for side, s in r["sides"].items():
        name = f"AutoAttack ({s['version']})" if side == "autoattack" else f"robustopt {side}"
        lines.append(f"| {name} | {_pct(s['robust_accuracy'])} ({s['robust']}) | {s['seconds']:.1f} s | "
                     f"{s['grad_evals_per_point']:,.1f} | {s['forwards_per_point']:,.1f} |")
    carried = [side for side, s in r["sides"].items() if s.get("carried_from")]
    if carried:
        lines += ["", "Carried from the run published before (same weights, points, threat, seed, batch size, "
                      "threads, draws): "
                      + ", ".join(f"{side} (finished {r['sides'][side]['finished_utc']})" for side in carried) + "."]
    for side, s in r["sides"].items():
        if s.get("budget_per_stage"):
            lines += ["", f"Budget per stage of robustopt {side}:", "", s["budget_per_stage"]]
    if "autoattack" in r["sides"] and "adaptive" in r["sides"]:
        aa, ad = set(r["sides"]["autoattack"]["robust_indices"]), set(r["sides"]["adaptive"]["robust_indices"])
        lines += ["", f"Points the adaptive suite leaves robust and AutoAttack breaks: {sorted(ad - aa)}; "
                      f"the other way round: {sorted(aa - ad)}."]
    return "\n".join(lines + [""] + provenance_md(r))


def table(folder: Path = RESULTS) -> str:
    """Every result in ``folder`` as one Markdown table (docs/performance.md)."""
    lines = ["| entry | n | clean | adaptive | standard | AutoAttack | adaptive − AA (points) | adaptive time "
             "| standard time | AA time | adaptive / AA time | grad evals / point (adaptive, standard, AA) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        s = r["sides"]
        get = lambda side, k: s[side][k] if side in s else None  # noqa: E731
        diff = (f"{100 * (s['adaptive']['robust_accuracy'] - s['autoattack']['robust_accuracy']):+.1f}"
                if "adaptive" in s and "autoattack" in s else "")
        ratio = (f"{s['adaptive']['seconds'] / s['autoattack']['seconds']:.2f}x"
                 if "adaptive" in s and "autoattack" in s else "")
        secs = lambda side: f"{get(side, 'seconds'):.0f} s" if side in s else ""  # noqa: E731
        grads = ", ".join(f"{get(side, 'grad_evals_per_point'):,.0f}" if side in s else "-" for side in SIDES)
        aa_name = f"AutoAttack{' (rand)' if r['randomized'] else ''}"
        lines.append(f"| {r['entry']} | {r['n']} | {_pct(r['clean_accuracy'])} | {_pct(get('adaptive', 'robust_accuracy'))} "
                     f"| {_pct(get('standard', 'robust_accuracy'))} | {_pct(get('autoattack', 'robust_accuracy'))}"
                     f"{'' if aa_name == 'AutoAttack' else ' (rand)'} | {diff} | {secs('adaptive')} | {secs('standard')} "
                     f"| {secs('autoattack')} | {ratio} | {grads} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
