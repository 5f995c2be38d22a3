#!/usr/bin/env python
"""The gradient-masking audit on every zoo entry: does it flag each masked model, and no honest one?

For each entry (default: all of ``robustopt zoo list``) the audit (``ro.audit``) reads the model,
its first ``--probe`` test images and the entry's committed adaptive-suite evaluation
(``zoo/NAME/eval-adaptive.json``). An entry is *expected* to be flagged when it masks gradients by
construction (every constructed defense: quantized, JPEG-like, saturated logits, softmax output,
input noise) or by training (:data:`MASKED_BY_TRAINING`: catastrophic overfitting). The table gives
per entry its errors and warnings and whether that matches: a masked entry needs an error or a
warning, an honest one no error.

Example:
    ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/zoo_audit.py --threads 1
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/zoo_audit.py`: import bench/ as a package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import RESULTS, header, log, parser, provenance_md, publish, set_threads, threat  # noqa: E402
from robustopt import Evaluation, audit, data, zoo  # noqa: E402

# Entries whose training masks their gradients (no constructed defense says so): FGSM-RS that overfitted.
MASKED_BY_TRAINING = {"mnist-fgsm-rs-co"}


def expected_masked(item: zoo.Entry) -> bool:
    """Whether the audit should flag ``item``: a constructed defense, or a masked training."""
    return item.defense is not None or item.name in MASKED_BY_TRAINING


def audit_entry(name: str, probe: int, root: str | None, seed: int) -> dict[str, Any]:
    """One entry's findings (level, code, message) and whether they match what it is."""
    item = zoo.entry(name)
    model = zoo.load(name)
    x, y = data.load(item.dataset, "test", root=root)
    path = item.folder / "eval-adaptive.json"
    evaluation = Evaluation.from_dict(json.loads(path.read_text())) if path.exists() else None
    start = time.perf_counter()
    findings = audit(model, (x[:probe], y[:probe].long()), evaluation, threat=threat(item.norm, item.eps),
                     probe=probe, seed=seed)
    levels = [f.level for f in findings]
    masked = expected_masked(item)
    flagged = "error" in levels or "warning" in levels
    return {"entry": name, "dataset": item.dataset, "training": item.training, "masked": masked,
            "errors": sorted({f.code for f in findings if f.level == "error"}),
            "warnings": sorted({f.code for f in findings if f.level == "warning"}),
            "evaluation": str(path.relative_to(zoo.root().parent)) if evaluation else None,
            "ok": flagged if masked else "error" not in levels, "seconds": time.perf_counter() - start,
            "findings": [{"level": f.level, "code": f.code, "message": f.message} for f in findings]}


def main(argv=None) -> dict[str, Any]:
    p = parser(__doc__, "root", "seed", "threads", "out", script="zoo_audit")
    p.add_argument("entries", nargs="*", help="zoo entry names (default: every entry)")
    p.add_argument("--probe", type=int, default=200, help="test images the model checks probe")
    args = p.parse_args(argv)
    set_threads(args.threads)
    t0 = time.perf_counter()
    report = header("zoo audit")
    rows = []
    for name in args.entries or zoo.names():
        log(f"{name} ...")
        rows.append(audit_entry(name, args.probe, args.root, args.seed))
    report.update({"probe": args.probe, "seed": args.seed, "rows": rows,
                   "all_ok": all(r["ok"] for r in rows)})
    publish(Path(args.out) if args.out else RESULTS / "zoo-audit" / "full", report, markdown, t0)
    return report


def markdown(r: dict[str, Any]) -> str:
    lines = ["# The audit on every zoo entry", "",
             f"`ro.audit(model, first {r['probe']} test images, the entry's adaptive-suite evaluation)`. Expected: "
             "a masked entry (a constructed defense, or catastrophic overfitting) gets an error or a warning, an "
             f"honest one no error. {sum(x['ok'] for x in r['rows'])} of {len(r['rows'])} entries as expected.", "",
             "| entry | masked | errors | warnings | as expected |", "|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['entry']} | {'yes' if x['masked'] else 'no'} | {', '.join(x['errors']) or '-'} "
                     f"| {', '.join(x['warnings']) or '-'} | {'yes' if x['ok'] else '**no**'} |")
    return "\n".join(lines + [""] + provenance_md(r))


if __name__ == "__main__":
    main()
