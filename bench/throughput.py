#!/usr/bin/env python
"""PGD throughput, side by side: robustopt vs the speed limit and vs torchattacks, ART, Foolbox.

For every (model, norm, steps, batch size) the script times, on the same model object, the same
batch and the same torch threads, with the same eps, absolute step size, number of steps and a
random start:

* ``limit``: the model's bare forward + backward to the input in a loop, ``steps`` times (eval
  mode, parameters frozen, ``requires_grad`` on the input only) - no attack can be faster;
* ``robustopt``: ``ro.attacks.PGD(threat, steps=S, step_size=alpha, random_start=True)``;
* ``torchattacks``: ``PGD`` / ``PGDL2``;
* ``art``: ``ProjectedGradientDescent`` on a ``PyTorchClassifier`` (ART's PyTorch implementation);
* ``foolbox``: ``LinfPGD`` / ``L2PGD`` on ``fb.PyTorchModel``.

Repetitions are interleaved (limit, robustopt, torchattacks, art, foolbox, limit, ...) after one
untimed warm-up call of each; the tables report medians. Throughput is image-gradient evaluations
per second: ``batch * steps / median seconds`` (the attacks' nominal work; robustopt also runs a
forward pass without a graph on the last iterate, to score it, Foolbox one forward pass at the end,
ART two at the end for its success-rate log: that is part of what each call costs).

Strength check on the same points: the robust accuracy of each tool's output, recomputed here on
the same model after checking that every point lies in the ball and the box (a point outside
counts as not broken). Only a model that is somewhat robust makes these numbers meaningful: the
random-init madry-mnist and preact-resnet18 rows (kept for throughput) are labelled as not
meaningful; the strength model is a small-cnn trained here with a few hundred steps of PGD-AT on
the shipped mnist-mini (cached in ``bench/.cache/``), or the trained run given with ``--run``.

Peers that are not installed are skipped with a note. Results: ``OUT.json`` and ``OUT.md``
(default ``bench/results/throughput/full``, with ``--quick`` ``.../quick``) with the command, git
commit, machine, date and peak RSS.

Examples:
    # the full grid, on an otherwise idle machine (see bench/README.md for the time it takes)
    .venv/bin/python bench/throughput.py --threads 2
    # a check of the script in about a minute, next to another job
    nice -n 19 .venv/bin/python bench/throughput.py --quick --threads 1
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

if not __package__:  # run as `python bench/throughput.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import robustopt as ro  # noqa: E402
from bench.harness import (DEFAULT_RECIPE, cpu_counters, finish, header, load_model, log, other_runnable,  # noqa: E402
                           out_prefix, package_version, parser, peak_rss_mib, perturbation_stats, predictions,
                           provenance_md, publish, set_threads, state_digest, write_report)
from robustopt._device import resolve_device  # noqa: E402

TOOLS = ["limit", "robustopt", "torchattacks", "art", "foolbox"]
PEERS = {"torchattacks": "torchattacks", "art": "adversarial-robustness-toolbox", "foolbox": "foolbox"}

# eps per data family (pixel space); the step size is Madry et al.'s 2.5 * eps / steps (absolute).
EPS = {"mnist": {"linf": 0.3, "l2": 2.0}, "cifar10": {"linf": 8 / 255, "l2": 0.5}}

# The grid: per model, steps and batch sizes; --steps / --batch-sizes override it for every model.
FULL_GRID = {
    "madry-mnist": dict(steps=[10, 40, 100], batch_sizes=[100, 500]),
    # ~21 ms per image gradient on 2 idle cores: 100 steps would add ~8 h (use --cifar-steps 10,40,100)
    "preact-resnet18": dict(steps=[10, 40], batch_sizes=[100, 500]),
    "resnet9": dict(steps=[10, 40], batch_sizes=[100, 500]),  # the CPU CIFAR-10 network (docs/models.md)
    "strength": dict(steps=[10, 40, 100], batch_sizes=[100, 500]),
}
QUICK_GRID = {
    "madry-mnist": dict(steps=[10], batch_sizes=[32]),
    "preact-resnet18": dict(steps=[3], batch_sizes=[4]),
    "resnet9": dict(steps=[3], batch_sizes=[4]),
    "strength": dict(steps=[10], batch_sizes=[100]),
}
CIFAR_MODELS = ("preact-resnet18", "resnet9")  # random-init CIFAR-10 networks (--cifar-steps applies to them)


# --------------------------------------------------------------------------------------------
# models and data
# --------------------------------------------------------------------------------------------
@dataclass
class Subject:
    key: str  # "madry-mnist" | "preact-resnet18" | "resnet9" | "strength"
    label: str
    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    family: str  # "mnist" | "cifar10"
    weights: str  # description
    data: str  # description
    meaningful_strength: bool
    info: dict[str, Any] = field(default_factory=dict)


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    return model.eval().requires_grad_(False)


def _cifar_data(n: int, root: str | None, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    root = root or os.environ.get("ROBUSTOPT_DATA")
    if root:
        try:
            x, y = ro.data.load("cifar10", "test", root=root, download=False)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"CIFAR-10 not found under {root} ({err}); unset ROBUSTOPT_DATA to use synthetic "
                             "images, or put cifar-10-batches-bin there.") from err
        return x[:n].contiguous(), y[:n], f"CIFAR-10 test images (first {n}, from {root})"
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y, f"synthetic uniform images (torch.rand, seed {seed}; ROBUSTOPT_DATA not set), random labels"


def build_subject(key: str, n: int, args) -> Subject:
    if key == "madry-mnist":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = ro.models.create("madry-mnist")
        x, y = ro.data.load("mnist-mini", "test")
        return Subject(key, "madry-mnist (random init)", _freeze(model), x[:n].contiguous(), y[:n], "mnist",
                       f"random init (torch seed {args.seed})", f"mnist-mini test images (first {n}; real MNIST)", False)
    if key in CIFAR_MODELS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = ro.models.create(key)
        x, y, desc = _cifar_data(n, args.root, args.seed)
        return Subject(key, f"{key} (random init)", _freeze(model), x, y, "cifar10",
                       f"random init (torch seed {args.seed})", desc, False)
    if key == "strength":
        subject = load_model(args.run, folder=Path(args.cache) / DEFAULT_RECIPE)
        x, y = subject.test_set(n, root=args.root)
        family = "cifar10" if x.shape[1] == 3 else "mnist"
        model = subject.model
        name = model.config.name if hasattr(model, "config") else type(model).__name__
        return Subject(key, f"{name} (trained)", _freeze(model), x, y, family, subject.source,
                       f"{subject.data} test images (first {n})", True, {"run_info": subject.info})
    raise ValueError(key)


# --------------------------------------------------------------------------------------------
# the tools: each returns a callable (x, y) -> x_adv (None for the limit)
# --------------------------------------------------------------------------------------------
def available_tools(wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    tools, skipped = [], {}
    for t in wanted:
        if t in PEERS:
            try:
                __import__({"art": "art.attacks.evasion", "foolbox": "foolbox", "torchattacks": "torchattacks"}[t])
            except Exception as err:  # noqa: BLE001 - any import failure means: skip it
                skipped[t] = (f"not importable ({type(err).__name__}: {err}); to install it without touching "
                              "torch, see 'Installing the bench extra' in bench/README.md")
                continue
        tools.append(t)
    return tools, skipped


def make_runner(tool: str, model, threat, *, norm: str, eps: float, alpha: float, steps: int, x: torch.Tensor,
                seed: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]:
    """The tool's attack as ``run(x, y) -> x_adv`` on x's device (None for the limit)."""
    if tool == "limit":
        def run(xb, yb):
            xg = xb.detach().clone().requires_grad_(True)
            for _ in range(steps):
                loss = F.cross_entropy(model(xg), yb, reduction="sum")
                torch.autograd.grad(loss, xg)
            return None
        return run

    if tool == "robustopt":
        atk = ro.attacks.PGD(threat, steps=steps, step_size=alpha, random_start=True, seed=seed)

        def run(xb, yb):
            res = atk.run(model, xb, yb)
            if res.grad_evals != len(xb) * steps:
                raise RuntimeError(f"robustopt counted {res.grad_evals} gradient evaluations, expected {len(xb) * steps}")
            return res.x_adv
        return run

    if tool == "torchattacks":
        import torchattacks

        cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        atk = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        return lambda xb, yb: atk(xb, yb)

    if tool == "art":
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=10, clip_values=(0.0, 1.0), preprocessing=None,
                                device_type="gpu" if x.is_cuda else "cpu")
        atk = ProjectedGradientDescent(clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=alpha,
                                       max_iter=steps, targeted=False, num_random_init=1, batch_size=len(x),
                                       verbose=False)
        impl = type(getattr(atk, "_attack", atk)).__name__
        if impl != "ProjectedGradientDescentPyTorch":
            warnings.warn(f"ART runs {impl}, not its PyTorch implementation", stacklevel=1)

        def run(xb, yb):  # ART's interface is numpy: the copies to and from the host are part of its cost
            return torch.from_numpy(atk.generate(xb.cpu().numpy(), yb.cpu().numpy())).to(xb.device)
        run.impl = impl  # type: ignore[attr-defined]
        return run

    if tool == "foolbox":
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
        cls = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
        atk = cls(abs_stepsize=alpha, steps=steps, random_start=True)

        def run(xb, yb):
            _, clipped, _ = atk(fmodel, xb, yb, epsilons=eps)
            return clipped
        return run
    raise ValueError(tool)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so that a wall-clock time covers the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# the measurement
# --------------------------------------------------------------------------------------------
def measure(subject: Subject, norm: str, steps: int, batch: int, tools: list[str], reps: int, seed: int) -> dict[str, Any]:
    model = subject.model
    x, y = subject.x[:batch], subject.y[:batch]
    eps = EPS[subject.family][norm]
    threat = ro.Linf(eps) if norm == "linf" else ro.L2(eps)
    alpha = 2.5 * eps / steps
    correct = (predictions(model, x, batch) == y)
    runners, errors, impl = {}, {}, {}
    for t in tools:
        try:
            runners[t] = make_runner(t, model, threat, norm=norm, eps=eps, alpha=alpha, steps=steps, x=x, seed=seed)
            impl[t] = getattr(runners[t], "impl", None)
            # untimed warm-up call, one step (oneDNN primitives, allocator, lazy imports)
            warm = make_runner(t, model, threat, norm=norm, eps=eps, alpha=alpha, steps=1, x=x, seed=seed)
            _seed_all(seed)
            warm(x, y)
        except Exception as err:  # noqa: BLE001 - report, do not crash the whole grid
            errors[t] = f"{type(err).__name__}: {err}"
            runners.pop(t, None)
            log(f"    {t}: FAILED {errors[t]}")
    times: dict[str, list[float]] = {t: [] for t in runners}
    cpu: dict[str, list[float]] = {t: [] for t in runners}
    others: dict[str, list[float]] = {t: [] for t in runners}  # CPU seconds of everything else, per call
    steal: dict[str, list[float]] = {t: [] for t in runners}  # seconds the hypervisor took, per call
    faults: dict[str, list[int]] = {t: [] for t in runners}  # minor page faults of this process, per call
    outputs: dict[str, torch.Tensor | None] = {}
    for rep in range(reps):
        for t, run in list(runners.items()):
            _seed_all(seed + rep)
            _sync(x.device)
            f0, m0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, cpu_counters()
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                out = run(x, y)
                _sync(x.device)
            except Exception as err:  # noqa: BLE001
                errors[t] = f"{type(err).__name__}: {err}"
                log(f"    {t}: FAILED {errors[t]}")
                runners.pop(t)
                continue
            times[t].append(time.perf_counter() - t0)
            cpu[t].append(time.process_time() - c0)
            m1 = cpu_counters()
            faults[t].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            if m0 and m1:
                others[t].append(max(0.0, m1[0] - m0[0] - cpu[t][-1]))
                steal[t].append(m1[1] - m0[1])
            outputs[t] = out
        log(f"    rep {rep + 1}/{reps}: " + ", ".join(f"{t} {times[t][-1]:.2f}s" for t in runners if len(times[t]) > rep))

    res: dict[str, Any] = {
        "model": subject.key, "norm": norm, "eps": eps, "step_size": alpha, "steps": steps, "batch": batch,
        "reps": reps, "clean_accuracy": float(correct.float().mean()), "errors": errors, "implementation": impl,
        "tools": {},
    }
    work = batch * steps
    for t in times:
        if not times[t]:
            continue
        med = statistics.median(times[t])
        entry: dict[str, Any] = {"seconds": times[t], "cpu_seconds": cpu[t], "median_seconds": med,
                                 "others_cpu_seconds": others[t], "steal_seconds": steal[t], "minor_faults": faults[t],
                                 "grad_evals_per_second": work / med}
        out = outputs.get(t)
        if out is not None:
            out = out.detach().to(x.dtype)
            stats = perturbation_stats(threat, x, out)
            inside = threat.contains(out, x)
            adv_correct = predictions(model, out, batch) == y
            robust = correct & (adv_correct | ~inside)  # a point outside the threat model does not count as broken
            entry.update({"robust_accuracy": float(robust.float().mean()), "robust": int(robust.sum()),
                          "n_outside_counted_robust": int((correct & ~inside & ~adv_correct).sum()),
                          "perturbation": stats})
        res["tools"][t] = entry
    wall = sum(sum(v) for v in times.values())
    if wall > 0 and any(others.values()):  # mean cores taken by other processes / the hypervisor during the row
        res["others_cores"] = sum(sum(v) for v in others.values()) / wall
        res["steal_cores"] = sum(sum(v) for v in steal.values()) / wall
    thr = {t: e["grad_evals_per_second"] for t, e in res["tools"].items()}
    if "robustopt" in thr:
        res["ratios"] = {f"robustopt/{t}": thr["robustopt"] / v for t, v in thr.items() if t != "robustopt"}
    return res


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _min_ratios(m: dict[str, Any]) -> dict[str, float]:
    """robustopt/tool throughput ratios from each tool's fastest repetition (noise only adds time)."""
    best = {t: min(e["seconds"]) for t, e in m["tools"].items() if e.get("seconds")}
    if "robustopt" not in best:
        return {}
    return {f"robustopt/{t}": v / best["robustopt"] for t, v in best.items() if t != "robustopt"}


def _fmt_rate(v: float | None) -> str:
    return "" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")


def markdown(r: dict[str, Any]) -> str:
    quick = r.get("quick")
    lines = [f"# PGD throughput: robustopt vs the limit and the peers{' (QUICK MODE)' if quick else ''}", ""]
    if quick:
        lines += ["Quick mode checks the script: few steps, small batches, 2 repetitions. Its numbers are not the "
                  "benchmark" + (", and this machine was busy (see the load average below)." if r["busy"] else "."), ""]
    elif r["busy"] and "other_runnable_at_start" not in r:  # results from before the runnable-task check
        lines += [f"**Load average {r['machine']['loadavg_at_start']} at start**: the machine may have been busy (the "
                  "1-minute average also counts a job that ended just before); timings mean something only if "
                  "nothing else ran.", ""]
    elif r["busy"]:
        lines += [f"**The machine was busy** ({r['other_runnable_at_start']} other runnable tasks at start, load "
                  f"average {r['machine']['loadavg_at_start']}): timings are "
                  "not meaningful.", ""]
    tools = r["tools_run"]
    reps = sorted({m["reps"] for m in r["measurements"]}) or [r["settings"]["reps"]]
    mixed = len(reps) > 1  # --resume may add rows measured with another --reps
    lines += [
        "Image-gradient evaluations per second (batch x steps / median wall time of "
        f"{'the' if mixed else reps[0]} interleaved repetitions{' in column reps' if mixed else ''}; higher is "
        "better). `limit` = the model's bare forward + "
        "backward to the input, the speed no attack can beat. Ratios > 1: robustopt is faster; robustopt/limit "
        "close to 1: no overhead left.",
        "",
    ]
    for s in r["subjects"]:
        rows = [m for m in r["measurements"] if m["model"] == s["key"]]
        if not rows:
            continue
        lines += [f"## {s['label']}", "", f"- weights: {s['weights']}", f"- data: {s['data']}",
                  f"- device: {r['settings'].get('device', 'cpu')} ({r['settings'].get('device_name', 'cpu')}); "
                  f"threads: {r['machine']['torch_threads']}; peak RSS after this model: {s.get('peak_rss_mib_after', 0):.0f} MiB", ""]
        others = [t for t in tools if t != "robustopt"]
        watched = any("others_cores" in m for m in rows)  # rows measured with the machine's CPU counters
        head = (["norm", "eps", "steps", "batch"] + ["reps"] * mixed + tools + [f"ro/{t}" for t in others]
                + [f"ro/{t} (best)" for t in others] + ["others / steal (cores)"] * watched)
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in rows:
            cells = [m["norm"], f"{m['eps']:.4g}", str(m["steps"]), str(m["batch"])] + [str(m["reps"])] * mixed
            cells += [_fmt_rate(m["tools"].get(t, {}).get("grad_evals_per_second")) or "error" for t in tools]
            cells += [f"{m.get('ratios', {}).get(f'robustopt/{t}', float('nan')):.2f}" for t in others]
            cells += [f"{_min_ratios(m).get(f'robustopt/{t}', float('nan')):.2f}" for t in others]
            if watched:
                cells.append(f"{m['others_cores']:.2f} / {m['steal_cores']:.2f}" if "others_cores" in m else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Rates and the first ratios use the median repetition; the ratios marked (best) compare each "
                  "tool's fastest repetition, which is less sensitive to a busy or noisy machine."
                  + (" Others / steal: the CPU cores that other processes used, and that the hypervisor took "
                     "from this VM, on average during the row's timed calls (from /proc/stat; this process "
                     "excluded): 0.00 / 0.00 is an undisturbed row." if watched else ""), ""]
    # strength
    attackers = [t for t in tools if t != "limit"]
    lines += ["## Strength check (same points, same model)", "",
              "Robust accuracy of each tool's output, recomputed here on the same model after checking each point "
              "against the ball and the box (a point outside would count as not broken; outside points are listed "
              "under the table). Lower = stronger attack. robustopt returns the best iterate per example, the peers "
              "the last one. **Only rows marked meaningful come from a model that is somewhat robust**; on the "
              "random-init models nearly every point is broken or misclassified anyway.", "",
              "| model | meaningful | norm | eps | steps | batch | clean | " + " | ".join(attackers) + " |",
              "|" + "---|" * (7 + len(attackers))]
    labels = {s["key"]: s for s in r["subjects"]}
    outside = []
    for m in r["measurements"]:
        s = labels[m["model"]]
        cells = [s["label"], "**yes**" if s["meaningful_strength"] else "no (random init)", m["norm"], f"{m['eps']:.4g}",
                 str(m["steps"]), str(m["batch"]), f"{100 * m['clean_accuracy']:.1f}%"]
        for t in attackers:
            e = m["tools"].get(t)
            cells.append("" if e is None or "robust_accuracy" not in e else f"{100 * e['robust_accuracy']:.1f}%")
            if e and e.get("perturbation", {}).get("n_outside_threat_model"):
                outside.append(f"{t} on {s['label']} {m['norm']} {m['steps']} steps batch {m['batch']}: "
                               f"{e['perturbation']['n_outside_threat_model']} points outside (max distance "
                               f"{e['perturbation']['max_distance']:.6g}, eps {m['eps']:.6g})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Points outside the threat model: " + ("; ".join(outside) if outside else "none (every tool's "
              "output lies in the ball and the box, up to robustopt's `contains` tolerance 1e-5).")]
    errs = [f"{t} on {m['model']} {m['norm']} {m['steps']}x{m['batch']}: {e}" for m in r["measurements"]
            for t, e in m["errors"].items()]
    lines += ["", "## Notes", ""]
    set_ = r["settings"]
    lines += [
        f"- Settings: eps MNIST Linf {EPS['mnist']['linf']:g} / L2 {EPS['mnist']['l2']:g}, CIFAR-10 Linf 8/255 / "
        "L2 0.5; absolute step size 2.5 * eps / steps for every tool; one random start; CE loss; "
        f"{'/'.join(map(str, reps))} repetitions, interleaved round-robin ({', '.join(tools)}) after one untimed 1-step "
        "warm-up call of each; seed " + str(set_["seed"]) + ".",
        "- Same model object for every tool, in eval mode with parameters frozen (`requires_grad_(False)`): "
        "with trainable parameters, tools that call `loss.backward()` (ART, Foolbox) would also compute "
        "weight gradients.",
        "- Extra forward passes per call (part of each tool's cost): robustopt 1 (the last iterate, without a "
        "graph, to score it for the best iterate and its success flag), Foolbox 1 (success check), ART 2 (its "
        "success-rate log), torchattacks 0.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
    ]
    if r["art_implementation"]:
        lines.append(f"- ART implementation used: {r['art_implementation']}.")
    for t, why in r["skipped"].items():
        lines.append(f"- **{t} skipped**: {why}")
    for e in errs:
        lines.append(f"- error: {e}")
    for e in r.get("earlier_sessions", []):
        lines.append(f"- Some rows come from an earlier session of this command (`--resume`): started {e['started_utc']}, "
                     f"finished {e['finished_utc']}, git {str((e.get('git') or {}).get('commit'))[:10]}, "
                     + ("other runnable tasks at its start not recorded." if e.get("other_runnable_at_start") is None
                        else f"{e['other_runnable_at_start']} other runnable tasks at its start."))
    lines += ["", *provenance_md(r)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    p = parser(__doc__, "quick", "threads", "run", "cache", "root", "seed", "device", "out", script="throughput",
               quick="a check of the script: 10 steps (CIFAR: 3), batch 32 (strength model 100, CIFAR 4), "
                     "2 repetitions",
               run="trained robustopt run folder for the strength rows (default: small-cnn PGD-AT on mnist-mini, "
                   "trained once and cached)",
               cache="folder for the cached strength model (default bench/.cache)",
               root="data root (default $ROBUSTOPT_DATA; CIFAR-10 is synthetic when neither is set)",
               device="cpu (default), cuda or cuda:N: model and data of every tool")
    p.add_argument("--malloc", choices=("default", "tuned"), default="default",
                   help="tuned: ro.tune_malloc() first (glibc keeps freed blocks, as the robustopt command does)")
    p.add_argument("--models", default="madry-mnist,preact-resnet18,strength",
                   help="comma-separated subset of madry-mnist, preact-resnet18, resnet9, strength "
                        "(default: madry-mnist, preact-resnet18, strength)")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {', '.join(TOOLS)}")
    p.add_argument("--norms", default="linf,l2")
    p.add_argument("--steps", type=_ints, help="steps for every model (default: the grid of each model)")
    p.add_argument("--cifar-steps", type=_ints, help="steps for preact-resnet18 and resnet9 only (full default 10,40)")
    p.add_argument("--batch-sizes", type=_ints, help="batch sizes for every model (default: 100,500)")
    p.add_argument("--reps", type=int, help="timed repetitions per tool (default 3; quick 2)")
    p.add_argument("--resume", action="store_true", help="keep the rows already in OUT.json (same settings and "
                                                          "weights; each row keeps its own --reps) and measure only "
                                                          "the others")
    p.add_argument("--render", metavar="JSON", help="only rewrite the Markdown next to a saved result JSON")
    return p.parse_args(argv)


def _resumable(out: Path, report: dict[str, Any], tools: list[str]) -> tuple[dict[tuple, dict[str, Any]], list]:
    """Rows and subjects of an earlier run of the same settings in OUT.json.

    Rows are keyed by (model, weights digest, norm, steps, batch); each keeps the --reps it was
    measured with. The earlier run's start, end and machine load are kept in
    ``report["earlier_sessions"]``.
    """
    path = out.with_name(out.name + ".json")
    if not path.is_file():
        return {}, []
    prev = json.loads(path.read_text())
    same = {k: prev.get("settings", {}).get(k) == report["settings"][k] for k in ("seed", "device", "eps")}
    same["threads"] = prev.get("machine", {}).get("torch_threads") == report["machine"]["torch_threads"]
    if not all(same.values()) or prev.get("tools_run") != tools:
        raise SystemExit(f"--resume: {path} was made with other settings ({', '.join(k for k, v in same.items() if not v) or 'tools'}"
                         "); use another --out, or drop --resume to overwrite it")
    report["earlier_sessions"] = prev.get("earlier_sessions", []) + [
        {k: prev.get(k) for k in ("started_utc", "finished_utc", "git", "other_runnable_at_start")}]
    digest = {e["key"]: e["state_sha256_16"] for e in prev["subjects"]}
    rows = {(m["model"], m.get("state_sha256_16", digest.get(m["model"])), m["norm"], m["steps"], m["batch"]): m
            for m in prev["measurements"]}
    log(f"--resume: {len(rows)} rows measured earlier in {path}")
    return rows, prev["subjects"]


def _with_earlier(report: dict[str, Any], done: dict[tuple, dict[str, Any]], earlier_subjects: list) -> dict[str, Any]:
    """``report`` plus the rows of the earlier run that this one has not (yet) reused, with their
    models: what --resume writes, at the end or after any row, never loses a row."""
    seen = {e["key"] for e in report["subjects"]}
    kept = [e for e in earlier_subjects if e["key"] not in seen and any(m["model"] == e["key"] for m in done.values())]
    return {**report, "measurements": report["measurements"] + list(done.values()), "subjects": report["subjects"] + kept}


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render:
        report = json.loads(Path(args.render).read_text())
        write_report(Path(args.render).with_suffix(""), report, markdown(report))
        return report
    set_threads(args.threads)
    if args.malloc == "tuned" and not ro.tune_malloc():
        raise SystemExit("--malloc tuned: this system has no glibc mallopt")
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(f"--device: {err}") from None
    t_start = time.perf_counter()
    report = header("throughput", quick=args.quick)
    grid = QUICK_GRID if args.quick else FULL_GRID
    reps = args.reps or (2 if args.quick else 3)
    norms = [n.strip().lower() for n in args.norms.split(",") if n.strip()]
    if not set(norms) <= {"linf", "l2"}:
        raise SystemExit(f"--norms: linf and/or l2, got {args.norms}")
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    if not set(keys) <= set(FULL_GRID):
        raise SystemExit(f"--models: a subset of {', '.join(FULL_GRID)}, got {args.models}")
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not set(wanted) <= set(TOOLS):
        raise SystemExit(f"--tools: a subset of {', '.join(TOOLS)}, got {args.tools}")
    tools, skipped = available_tools(wanted)
    for t, why in skipped.items():
        log(f"note: {t} skipped: {why}")
    report.update({
        "settings": {"reps": reps, "seed": args.seed, "device": str(device),
                     "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "norms": norms, "models": keys, "eps": EPS, "run": args.run,
                     "step_size_rule": "2.5 * eps / steps", "random_start": True, "loss": "ce"},
        "tools_run": tools, "skipped": skipped,
        "versions": {"torch": torch.__version__, "robustopt": ro.__version__,
                     **{t: package_version(PEERS[t]) for t in tools if t in PEERS}},
        "other_runnable_at_start": (others := other_runnable()),
        "busy": others > 0.5 if others is not None else bool(report["machine"]["loadavg_at_start"]
                                                               and report["machine"]["loadavg_at_start"][0] > 0.5),
        "subjects": [], "measurements": [], "art_implementation": None,
    })
    out = out_prefix(args.out, "throughput", args.quick)
    done, earlier_subjects = _resumable(out, report, tools) if args.resume else ({}, [])

    for key in keys:
        g = grid[key]
        steps_list = args.steps or g["steps"]
        if key in CIFAR_MODELS and args.cifar_steps:
            steps_list = args.cifar_steps
        batches = args.batch_sizes or g["batch_sizes"]
        subject = build_subject(key, max(batches), args)
        subject.model.to(device)
        subject.x, subject.y = subject.x.to(device), subject.y.to(device)
        if len(subject.x) < max(batches):
            raise SystemExit(f"{key}: only {len(subject.x)} images for batch {max(batches)}")
        entry = {"key": key, "label": subject.label, "weights": subject.weights, "data": subject.data,
                 "family": subject.family, "meaningful_strength": subject.meaningful_strength,
                 "state_sha256_16": state_digest(subject.model),
                 "parameters": sum(p.numel() for p in subject.model.parameters()), "info": subject.info}
        if any(k[0] == key and k[1] != entry["state_sha256_16"] for k in done):
            raise SystemExit(f"--resume: {out}.json holds {key} rows measured with other weights; use another --out")
        report["subjects"].append(entry)
        log(f"{subject.label}: {subject.weights}; data: {subject.data}")
        for batch in batches:
            for norm in norms:
                for steps in steps_list:
                    m = done.pop((key, entry["state_sha256_16"], norm, steps, batch), None)
                    log(f"  {key} {norm} eps {EPS[subject.family][norm]:.4g}, {steps} steps, batch {batch}"
                        + (" (measured earlier: reused)" if m else ""))
                    m = m or measure(subject, norm, steps, batch, tools, reps, args.seed)
                    m["state_sha256_16"] = entry["state_sha256_16"]
                    report["measurements"].append(m)
                    if m["implementation"].get("art"):
                        report["art_implementation"] = m["implementation"]["art"]
                    entry["peak_rss_mib_after"] = peak_rss_mib()
                    finish(report, t_start)
                    # each finished row survives an interruption, and so do the earlier rows not yet reached
                    partial = _with_earlier(report, done, earlier_subjects)
                    write_report(out, partial, markdown(partial))

    report = _with_earlier(report, done, earlier_subjects)
    publish(out, report, markdown, t_start)
    return report


if __name__ == "__main__":
    main()
