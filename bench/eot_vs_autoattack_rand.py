#!/usr/bin/env python
"""robustopt's rand suite (EOT) against AutoAttack's version='rand' on a randomized model.

The model is a run's network behind Gaussian input noise (``--sigma``, a fresh draw on every
forward pass, in eval mode too). Both sides attack the same first ``--n`` test images under
L-inf ``--eps``: robustopt as ``evaluate(model, (x, y), suites.standard(threat, version="rand"))``
(APGD-CE and APGD-DLR, each gradient averaged over 20 draws), AutoAttack as
``AutoAttack(model, version="rand")`` (the same attacks, ``eot_iter=20``). Both sides' points are
judged by one rule, robustopt's: an example counts as broken when its point fools the model in
most of ``--draws`` forward passes; the robust accuracy per draw (mean and spread) is reported too.

Example:
    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/eot_vs_autoattack_rand.py \\
        --run bench/results/full-mnist/A --n 50 --eps 0.3 --sigma 0.2 --threads 1 \\
        --out bench/results/autoattack/full-mnist-A-noise0.2-rand-n50
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as `python bench/eot_vs_autoattack_rand.py`: import bench/ as a package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import header, load_model, loadavg, log, parser, publish, set_threads  # noqa: E402
from robustopt import evaluate, suites  # noqa: E402
from robustopt.threat import Linf  # noqa: E402


class InputNoise(torch.nn.Module):
    """``model(x + sigma * N(0, I))``: a new draw of the noise on every forward pass."""

    def __init__(self, model: torch.nn.Module, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + self.sigma * torch.randn_like(x))


def judge(model, x_adv, y, draws: int) -> torch.Tensor:
    """bool (N, draws): the point fools the model in each of ``draws`` forward passes."""
    with torch.no_grad():
        return torch.stack([model(x_adv).argmax(1) != y for _ in range(draws)], dim=1)


def main(argv=None) -> dict:
    p = parser(__doc__, "root", "eps", "seed", "threads", "out")
    p.add_argument("--run", required=True, help="robustopt run folder")
    p.add_argument("--n", type=int, default=50, help="first N test images")
    p.add_argument("--sigma", type=float, default=0.2, help="std of the Gaussian input noise")
    p.add_argument("--draws", type=int, default=10, help="forward passes that judge each point")
    args = p.parse_args(argv)
    set_threads(args.threads)
    started = time.perf_counter()
    report = header("comparison")
    from pyautoattack import AutoAttack

    subject = load_model(args.run)
    model = InputNoise(subject.model.eval(), args.sigma).eval()
    x, y = subject.test_set(args.n, root=args.root)
    y = y.long()
    threat = Linf(args.eps if args.eps is not None else 0.3)

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    ev = evaluate(model, (x, y), suites.standard(threat, version="rand", seed=args.seed), seed=args.seed,
                  draws=args.draws, progress=False)
    ro_seconds = time.perf_counter() - t0
    log(f"robustopt rand: {100 * ev.robust_accuracy:.1f}% ({ro_seconds:.0f} s)")

    torch.manual_seed(args.seed)
    aa = AutoAttack(model, norm="Linf", eps=threat.eps, version="rand", seed=args.seed, device="cpu")
    t0 = time.perf_counter()
    out = aa.run_standard_evaluation(x, y, batch_size=args.n)
    aa_seconds = time.perf_counter() - t0
    x_adv = (out[0] if isinstance(out, (tuple, list)) else out).detach()
    inside = bool(threat.contains(x_adv, x).all())
    torch.manual_seed(args.seed + 1)
    fooled = judge(model, x_adv, y, args.draws) | ~ev.correct[:, None]  # the clean errors count as broken
    aa_robust = ev.correct & ~(2 * fooled.sum(1) > args.draws)
    aa_per_draw = (~fooled).float().mean(0)
    log(f"AutoAttack rand: {100 * float(aa_robust.float().mean()):.1f}% ({aa_seconds:.0f} s)")

    n = len(x)
    rows = {
        "robustopt": {"robust_accuracy": ev.robust_accuracy, "robust": int(ev.robust.sum()),
                      "per_draw_mean": ev.draws.mean, "per_draw_std": ev.draws.std, "seconds": ro_seconds,
                      "grad_evals": sum(r.grad_evals for r in ev.rows)},
        "autoattack": {"robust_accuracy": float(aa_robust.float().mean()), "robust": int(aa_robust.sum()),
                       "per_draw_mean": float(aa_per_draw.mean()), "per_draw_std": float(aa_per_draw.std()),
                       "seconds": aa_seconds, "points_inside_threat": inside},
    }
    only_ro = int((ev.correct & ~ev.robust & aa_robust).sum())
    only_aa = int((ev.correct & ev.robust & ~aa_robust).sum())
    report.update({"model": f"{args.run} behind Gaussian input noise, sigma {args.sigma}", "n": n,
                   "threat": str(threat), "draws": args.draws, "seed": args.seed,
                   "clean_accuracy": ev.clean_accuracy, "rows": rows, "only_robustopt_breaks": only_ro,
                   "only_autoattack_breaks": only_aa, "loadavg_end": loadavg(), "evaluation": ev.to_dict()})
    md_lines = [
        "# robustopt's rand suite (EOT) vs AutoAttack version='rand'", "",
        f"- model: `{args.run}` behind Gaussian input noise (sigma {args.sigma}, a new draw per forward pass)",
        f"- data: first {n} test images; threat {threat}; seed {args.seed}; torch threads {torch.get_num_threads()}",
        f"- judged by one rule for both: broken when the point fools the model in most of {args.draws} draws; "
        f"clean accuracy (same rule) {100 * ev.clean_accuracy:.1f}%", "",
        "| | robust (majority of draws) | per-draw mean ± std | wall time |", "|---|---|---|---|",
        *(f"| {k} | {100 * v['robust_accuracy']:.1f}% ({v['robust']}/{n}) | {100 * v['per_draw_mean']:.1f}% ± "
          f"{100 * v['per_draw_std']:.1f}% | {v['seconds']:.0f} s |" for k, v in rows.items()),
        "", f"Only robustopt breaks {only_ro}, only AutoAttack breaks {only_aa}. AutoAttack's points inside the "
        f"threat model: {inside}. Load average at the end: {loadavg()}.", "",
        "Command:", "", "```", " ".join(["ROBUSTOPT_DATA=../shared/data .venv/bin/python", *sys.argv]), "```", "",
    ]
    publish(Path(args.out), report, lambda _: "\n".join(md_lines), started)
    return report


if __name__ == "__main__":
    main()
