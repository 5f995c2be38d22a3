#!/usr/bin/env python
"""Compare robustopt's ``suites.standard`` with the original AutoAttack code on the same model and points.

Both run once, in this process, on the same first ``--n`` test images, on the same machine:
robustopt as ``evaluate(model, (x, y), suites.standard(threat, version=...), mode="cascade")``,
AutoAttack (PyPI package ``pyautoattack``, import name ``pyautoattack``; the GitHub
checkout's ``autoattack`` is accepted too) as ``AutoAttack(...).run_standard_evaluation``.
AutoAttack's robust accuracy is recomputed here from the points it returns, on the same
model, after checking that they lie inside the threat model (max distance reported).

Reported: clean and robust accuracy and wall time of each, their gradient evaluations and
forward passes per point (counted the same way for both by a wrapper around the model, see
``PassCounter``; robustopt's own counters beside), AutoAttack's per-attack cascade (from its
log), robustopt's budget per stage (``--version adaptive``), and per-example agreement: how
many points each breaks that the other does not. ``--diagnose`` also runs every attack of both suites alone on the points where the two
disagree, to say which attack makes the difference. Results go to ``OUT.json`` and
``OUT.md`` (with the exact command and the machine) and are printed. Each side, once finished,
is saved as ``OUT.ro-side.pt`` / ``OUT.aa-side.pt`` (keyed by model digest, points, threat,
suite, seed, batch size, threads and device); running the same command again reuses a finished
side, so a comparison that outlasts one sitting is not lost, and the report says when each side ran.

The suites (``--version``):

* ``standard``: robustopt APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square 5000; AutoAttack's
  version='standard': APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square 5000.
* ``fast``: robustopt APGD-CE, APGD-T (3 targets); AutoAttack has no such version, so it
  runs version='custom' with ['apgd-ce', 'apgd-t'], 1 restart, 3 target classes.
* under ``--norm l1`` (``standard``): robustopt's L1 suite, APGD-CE (5 restarts) and APGD-T
  (5 targets), both L1-APGD with the 3-2-1 eps schedule, then FAB-T (9 targets); AutoAttack's
  version='standard' with norm='L1': the same APGD settings (use_largereps), FAB-T and its L1 Square.
* ``adaptive``: robustopt ``AdaptiveAutoAttack`` (the same families scheduled by evidence per
  example, ``robustopt.attacks.adaptive``) against AutoAttack's version='standard', the reference
  it must match in robust accuracy (issue 15: at most +0.1 points, in at most 0.2x the time).

``--aa-attacks apgd-ce,apgd-t,square`` runs AutoAttack as a custom list instead (with the
standard version's settings), e.g. without FAB-T for a like-for-like comparison.

Examples:
    # the real comparison (full-MNIST model A of bench/full_mnist.sh)
    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/compare_autoattack.py \\
        --run bench/results/full-mnist/A --n 1000 --norm linf --eps 0.3 --version standard \\
        --batch-size 500 --seed 0 --threads 2 --diagnose --out bench/results/autoattack/full-mnist-A-standard
    # the adaptive suite against AutoAttack's standard version, on the same points
    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/compare_autoattack.py \\
        --run bench/results/full-mnist/A --n 1000 --norm linf --eps 0.3 --version adaptive \\
        --batch-size 500 --seed 0 --threads 2 --out bench/results/autoattack/full-mnist-A-adaptive
    # a smoke test on a tiny model trained in seconds on the shipped mnist-mini
    .venv/bin/python bench/compare_autoattack.py --model-from small-cnn-mini --n 100 \\
        --version fast --out bench/results/autoattack/smoke-small-cnn-mini-fast
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as `python bench/compare_autoattack.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import (MODEL_RECIPES, ModelUnderTest, default_out, header, load_model, loadavg, log,  # noqa: E402
                           malloc_note, now_utc, parser, perturbation_stats, predictions, publish, rel, set_threads, state_digest)
from robustopt import Evaluation, evaluate, suites  # noqa: E402
from robustopt._io import atomic_write_bytes  # noqa: E402
from robustopt.attacks.passes import predict  # noqa: E402
from robustopt.evaluation.records import budget_table  # noqa: E402

AA_NAMES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square",
            "apgd-dlr": "APGD-DLR", "fab": "FAB"}


class PassCounter(torch.nn.Module):
    """The model, counting per example its forward passes and the backward passes through its output.

    Both suites are counted by this one rule, whatever their own bookkeeping: every row of a
    forward call is a forward pass; every backward pass through the output (a gradient, or one
    row of a Jacobian) is a gradient evaluation of that row. ``forward_only`` = forwards whose
    output joined no graph (queries, clean passes, checks).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forwards = self.graph_forwards = self.backwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.forwards += n
        if out.requires_grad:
            self.graph_forwards += n
            out.register_hook(lambda grad: self._backward(n))
        return out

    def _backward(self, n: int) -> None:
        self.backwards += n

    def counts(self) -> dict[str, int]:
        return {"grad_evals": self.backwards, "forward_only": self.forwards - self.graph_forwards,
                "forwards": self.forwards}


# --------------------------------------------------------------------------------------------
# AutoAttack: import and a thin layer over the two API variants
# (pyautoattack 0.2: keyword-only ``attacks=`` and ``batch_size=``, returns (x_adv, y_adv);
#  fra31/auto-attack on GitHub: ``attacks_to_run=``, ``bs=``, returns x_adv).
# --------------------------------------------------------------------------------------------
def import_autoattack():
    errors = []
    for name in ("pyautoattack", "autoattack"):
        try:
            module = importlib.import_module(name)
            return module, module.AutoAttack
        except Exception as err:  # noqa: BLE001 - report every reason below
            errors.append(f"import {name}: {type(err).__name__}: {err}")
    raise SystemExit(
        "AutoAttack is not importable (" + "; ".join(errors) + "). Install it without letting pip touch torch:\n"
        "  .venv/bin/pip install --no-deps pyautoattack   (it imports only torch and numpy)"
    )


def aa_version_of(module) -> str:
    try:
        from importlib.metadata import version

        return version(module.__name__)
    except Exception:  # noqa: BLE001
        return getattr(module, "__version__", "unknown")


def make_autoattack(AutoAttack, model, *, norm: str, eps: float, seed: int, version: str,
                    attacks: list[str] | None, device: str = "cpu") -> Any:
    """AutoAttack for ``version`` ("standard" | "fast"), or the custom list ``attacks`` with standard settings."""
    params = inspect.signature(AutoAttack.__init__).parameters
    kw: dict[str, Any] = dict(norm=norm, eps=eps, seed=seed, device=device)
    if "verbose" in params:
        kw["verbose"] = True  # the per-attack lines are parsed from the log
    custom = attacks if attacks is not None else (["apgd-ce", "apgd-t"] if version == "fast" else None)
    if custom is None:
        aa = AutoAttack(model, version="standard", **kw)
    else:
        key = "attacks" if "attacks" in params else "attacks_to_run"
        aa = AutoAttack(model, version="custom", **{key: list(custom)}, **kw)
        # version='custom' keeps the constructor's defaults (APGD-CE with 5 restarts, ...):
        # set what version='standard' sets, then the fast suite's 3 target classes.
        aa.apgd.n_restarts = 1
        aa.apgd_targeted.n_restarts = 1
        aa.apgd_targeted.n_target_classes = 3 if attacks is None and version == "fast" else 9
        aa.fab.n_restarts = 1
        aa.fab.n_target_classes = 9
        aa.square.n_queries = 5000
    return aa


def aa_config(aa) -> dict[str, Any]:
    return {
        "attacks_to_run": list(aa.attacks_to_run),
        "apgd": {"n_iter": aa.apgd.n_iter, "n_restarts": aa.apgd.n_restarts, "rho": aa.apgd.thr_decr},
        "apgd_t": {"n_iter": aa.apgd_targeted.n_iter, "n_restarts": aa.apgd_targeted.n_restarts,
                   "n_target_classes": aa.apgd_targeted.n_target_classes},
        "fab_t": {"n_iter": aa.fab.n_iter, "n_restarts": aa.fab.n_restarts, "n_target_classes": aa.fab.n_target_classes},
        "square": {"n_queries": aa.square.n_queries, "p_init": aa.square.p_init,
                   "rescale_schedule": getattr(aa.square, "rescale_schedule", None)},
    }


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_autoattack(aa, x: torch.Tensor, y: torch.Tensor, batch_size: int, echo_log: bool) -> tuple[torch.Tensor, list[str], float]:
    """Run ``run_standard_evaluation``; returns (x_adv, log lines, seconds of the call alone)."""
    params = inspect.signature(aa.run_standard_evaluation).parameters
    kw = {"batch_size": batch_size} if "batch_size" in params else {"bs": batch_size}
    logger = logging.getLogger("auto-attack")
    handler, old_level = _ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            t0 = time.perf_counter()
            out = aa.run_standard_evaluation(x, y, **kw)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            seconds = time.perf_counter() - t0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = handler.lines + [ln for ln in stdout.getvalue().splitlines() if ln.strip()]
    if echo_log:
        for ln in lines:
            log(f"  [autoattack] {ln}")
    x_adv = out[0] if isinstance(out, (tuple, list)) else out
    return x_adv.detach(), lines, seconds


def parse_aa_cascade(lines: list[str], n: int) -> list[dict[str, Any]]:
    """AutoAttack's 'robust accuracy after X: P% (total time T s)' lines, as rows."""
    rows = []
    for ln in lines:
        m = re.search(r"robust accuracy after ([\w-]+):\s*([\d.]+)%\s*\(total time ([\d.]+) s\)", ln)
        if m:
            rows.append({"attack": AA_NAMES.get(m.group(1).lower(), m.group(1)), "robust_accuracy": float(m.group(2)) / 100,
                         "robust": round(float(m.group(2)) / 100 * n), "cumulative_seconds": float(m.group(3))})
    return rows


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def get_model(args) -> tuple[ModelUnderTest, contextlib.AbstractContextManager]:
    """(the model under test, cleanup) from --run, or --model-from (in --model-dir or a temporary folder)."""
    if args.run:
        return load_model(args.run), contextlib.nullcontext()
    if args.model_dir:
        folder, cleanup = Path(args.model_dir), contextlib.nullcontext()
    else:
        tmp = tempfile.mkdtemp(prefix="compare-aa-model-")
        folder, cleanup = Path(tmp) / args.model_from, _rmtree_after(tmp)
    return load_model(recipe=args.model_from, folder=folder), cleanup


@contextlib.contextmanager
def _rmtree_after(path: str):
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def diagnose(model, threat, ro_attacks, AutoAttack, aa_kwargs, x, y, idx, batch_size, seed) -> list[dict[str, Any]]:
    """Run every attack of both suites alone on the points ``idx``; which one breaks which point."""
    xs, ys = x[idx], y[idx]
    per_point = [{"index": int(i), "label": int(ys[k])} for k, i in enumerate(idx.tolist())]
    for attack in ro_attacks:
        t0 = time.perf_counter()
        res = attack.run(model, xs, ys, generator=torch.Generator(device=xs.device).manual_seed(seed))
        broken = predictions(model, res.x_adv, batch_size) != ys
        log(f"  [diagnose] robustopt {attack.name} alone: breaks {int(broken.sum())}/{len(idx)} "
              f"({time.perf_counter() - t0:.1f} s)")
        for k, p in enumerate(per_point):
            p.setdefault("robustopt_alone", {})[attack.name] = bool(broken[k])
    for name in aa_kwargs["attacks_to_run"]:
        aa = make_autoattack(AutoAttack, model, norm=aa_kwargs["norm"], eps=aa_kwargs["eps"], seed=seed,
                             version=aa_kwargs["version"], attacks=[name], device=str(x.device))
        # keep the suite's settings (e.g. 3 targets in the fast version)
        aa.apgd_targeted.n_target_classes = aa_kwargs["apgd_t_targets"]
        x_adv, _, seconds = run_autoattack(aa, xs, ys, batch_size, echo_log=False)
        broken = predictions(model, x_adv, batch_size) != ys
        label = AA_NAMES.get(name, name)
        log(f"  [diagnose] AutoAttack {label} alone: breaks {int(broken.sum())}/{len(idx)} ({seconds:.1f} s)")
        for k, p in enumerate(per_point):
            p.setdefault("autoattack_alone", {})[label] = bool(broken[k])
    return per_point


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = parser(__doc__, "root", "norm", "eps", "batch-size", "seed", "threads", "device", "out",
               root="data root (default: $ROBUSTOPT_DATA, else the user cache)",
               norm="threat norm (default: the run's; AutoAttack: Linf / L2 / L1)",
               device="device of model and data for both (default cpu; e.g. cuda)",
               out="output path without suffix; writes OUT.json and OUT.md "
                   "(default bench/results/autoattack/DATA-VERSION-nN)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="robustopt run folder (loaded with ro.load_run)")
    src.add_argument("--model-from", choices=sorted(MODEL_RECIPES),
                     help="train a tiny model on the fly instead (smoke test); see MODEL_RECIPES in bench/harness.py")
    p.add_argument("--model-dir", help="with --model-from: keep/reuse the tiny model's run folder here "
                                       "(default: a temporary folder, removed at the end)")
    p.add_argument("--data", help="dataset name for robustopt.data.load (default: the run's dataset)")
    p.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    p.add_argument("--version", choices=["standard", "fast", "adaptive"], default="standard",
                   help="robustopt's suite; AutoAttack runs its standard version (a custom list for fast)")
    p.add_argument("--aa-attacks", help="run AutoAttack as this custom list instead of --version's, "
                                        "e.g. apgd-ce,apgd-t,square (standard settings)")
    p.add_argument("--order", choices=["robustopt-first", "autoattack-first"], default="robustopt-first",
                   help="which one runs first (both are timed on a warmed-up model)")
    p.add_argument("--diagnose", action="store_true",
                   help="run each attack of both suites alone on the points where they disagree")
    p.add_argument("--label", help="free text shown at the top of the Markdown (e.g. 'smoke test')")
    p.add_argument("--verbose", action="store_true", help="echo AutoAttack's log and robustopt's progress bar")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.n < 1:
        raise SystemExit("--n must be >= 1")
    if args.model_dir and not args.model_from:
        raise SystemExit("--model-dir only goes with --model-from")
    set_threads(args.threads)
    t0 = time.perf_counter()
    report = header("smoke test on a tiny model (NOT the real comparison)" if args.model_from else "comparison")
    aa_module, AutoAttack = import_autoattack()

    subject, cleanup = get_model(args)
    with cleanup:
        return _compare(args, subject, report, t0, aa_module, AutoAttack)


def load_side(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """A finished side saved by :func:`save_side` for the same ``key``, else None (with a note on stderr).

    The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so
    a planted file that would run code when unpickled is refused, not executed.
    """
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for a file that needs more than tensors
        log(f"{path} is not a plain tensor file ({type(err).__name__}); ignoring it, it will be replaced")
        return None
    if not isinstance(blob, dict) or blob.get("key") != key:
        log(f"{path} was made with other settings; ignoring it")
        return None
    return blob


def save_side(path: Path, key: dict[str, Any], value: Any) -> dict[str, Any]:
    """Save a finished side (tensors, numbers, strings, lists and dicts only) atomically; return it."""
    blob = {"key": key, "value": value, "finished_utc": now_utc(),
            "loadavg": loadavg()}
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(path, buf.getvalue())
    return blob


def _compare(args, subject: ModelUnderTest, report: dict[str, Any], t0: float, aa_module, AutoAttack) -> dict[str, Any]:
    model, info = subject.model, subject.info
    data_name = args.data or subject.data
    norm = (args.norm or info.get("norm", "linf")).lower()
    if norm not in ("linf", "l2", "l1"):
        raise SystemExit(f"norm {norm!r}: this comparison supports linf, l2 and l1 (robustopt's standard suite).")
    threat = subject.threat(norm, args.eps)
    eps = threat.eps
    aa_norm = {"linf": "Linf", "l2": "L2", "l1": "L1"}[norm]

    x, y = subject.test_set(args.n, root=args.root, data=data_name)
    x, y = x.to(args.device), y.long().to(args.device)
    model.to(args.device).eval()
    digest = state_digest(model)

    ro_attacks = suites.standard(threat, version=args.version, seed=args.seed)
    aa_list = [a.strip() for a in args.aa_attacks.split(",")] if args.aa_attacks else None
    aa_counter = PassCounter(model)  # AutoAttack attacks the model through it: its passes are counted
    aa = make_autoattack(AutoAttack, aa_counter, norm=aa_norm, eps=eps, seed=args.seed, version=args.version,
                         attacks=aa_list, device=args.device)
    aa_cfg = aa_config(aa)

    # warm-up (oneDNN kernels, allocator) so that neither side pays it inside its timing
    with torch.no_grad():
        predict(model, x[: args.batch_size])

    out_prefix = Path(args.out) if args.out else default_out("compare_autoattack", f"{data_name}-{args.version}-n{args.n}")
    log(f"model: {subject.source}; data: first {args.n} test images of {data_name}; threat {threat}; "
          f"version {args.version}; batch {args.batch_size}; seed {args.seed}; torch threads {torch.get_num_threads()}")

    results: dict[str, Any] = {}
    # Each side, once finished, is saved next to OUT (atomically), keyed by everything that defines it; a
    # rerun of the same command reuses a finished side instead of redoing it, so a comparison longer
    # than one sitting is not lost. The report says which side came from a saved run and when it ran.
    key = {"model": digest, "data": data_name, "n": args.n, "threat": str(threat), "version": args.version,
           "aa_attacks": aa_list, "seed": args.seed, "batch_size": args.batch_size,
           "threads": torch.get_num_threads(), "device": str(args.device), "counted": 1}
    side_path = {name: out_prefix.with_name(f"{out_prefix.name}.{name}-side.pt") for name in ("ro", "aa")}
    # robustopt's side is also keyed by its attacks' configurations: a changed suite is run again
    side_key = {"ro": {**key, "ro_attacks": repr([a.describe() for a in ro_attacks])}, "aa": key}

    def saved(name):
        blob = load_side(side_path[name], side_key[name])
        if blob is not None:
            log(f"{name} side: reusing {side_path[name]} (run {blob['finished_utc']}, load average at its end "
                  f"{blob['loadavg']})")
        return blob

    def save(name, value):
        return save_side(side_path[name], side_key[name], value)

    def run_ro():
        log(f"robustopt suites.standard(version={args.version!r}): {[a.name for a in ro_attacks]} ...")
        counter = PassCounter(model)
        t0, c0 = time.perf_counter(), time.process_time()
        ev = evaluate(counter, (x, y), ro_attacks, batch_size=args.batch_size, seed=args.seed, mode="cascade",
                      progress=args.verbose)
        value = (ev.to_dict(), time.perf_counter() - t0, time.process_time() - c0, counter.counts())
        log(f"  done in {value[1]:.1f} s: robust accuracy {100 * ev.robust_accuracy:.2f}%")
        return value

    def run_aa():
        log(f"AutoAttack {aa_cfg['attacks_to_run']} ...")
        c0 = time.process_time()
        x_adv, lines, seconds = run_autoattack(aa, x.clone(), y.clone(), args.batch_size, echo_log=args.verbose)
        log(f"  done in {seconds:.1f} s")
        return (x_adv.cpu(), lines, seconds, time.process_time() - c0, aa_counter.counts())

    sides = {"ro": run_ro, "aa": run_aa}
    provenance = {}
    for name in (["ro", "aa"] if args.order == "robustopt-first" else ["aa", "ro"]):
        blob = saved(name) or save(name, sides[name]())
        results[name], provenance[name] = blob["value"], {"finished_utc": blob["finished_utc"], "loadavg": blob["loadavg"]}
    ev_dict, ro_seconds, ro_cpu, ro_counted = results["ro"]
    ev = Evaluation.from_dict(ev_dict)
    x_adv, aa_lines, aa_seconds, aa_cpu, aa_counted = results["aa"]
    x_adv = x_adv.to(args.device)

    # --- AutoAttack's accuracy, recomputed here on the same model -----------------------------
    clean_pred = predictions(model, x, args.batch_size)
    correct = (clean_pred == y).cpu()
    if not torch.equal(correct, ev.correct):
        log("WARNING: clean predictions differ between this check and robustopt's evaluate()")
    stats = perturbation_stats(threat, x, x_adv)
    inside = threat.contains(x_adv, x).cpu()
    adv_pred = predictions(model, x_adv, args.batch_size)
    aa_robust_raw = correct & (adv_pred == y).cpu()
    # a point outside the threat model cannot count as broken
    aa_robust = aa_robust_raw | (correct & ~inside)
    ro_robust = ev.robust.bool()

    ro_broken, aa_broken = correct & ~ro_robust, correct & ~aa_robust
    only_ro = (ro_broken & ~aa_broken).nonzero().squeeze(1)
    only_aa = (aa_broken & ~ro_broken).nonzero().squeeze(1)
    n = len(x)

    # for the points only AutoAttack breaks: its adversarial class and that class's rank among
    # the clean logits of the other classes (1 = the most likely wrong class), perturbation size
    only_aa_details = []
    if len(only_aa):
        with torch.no_grad():
            logits = predict(model, x[only_aa])
        for k, i in enumerate(only_aa.tolist()):
            others = logits[k].clone()
            others[int(y[i])] = float("-inf")
            order = others.argsort(descending=True).tolist()
            cls = int(adv_pred[i])
            d = (x_adv[i] - x[i]).flatten()
            only_aa_details.append({
                "index": i, "label": int(y[i]), "adv_class": cls, "adv_class_rank": order.index(cls) + 1,
                "linf": float(d.abs().max()), "l2": float(d.norm()),
                "frac_pixels_at_eps": float((d.abs() >= eps - 1e-6).float().mean()) if norm == "linf" else None,
            })

    diag = None
    if args.diagnose and (len(only_ro) + len(only_aa)):
        idx = torch.cat([only_ro, only_aa]).sort().values
        log(f"diagnose: {len(idx)} disagreement points, every attack alone ...")
        diag = diagnose(model, threat, ro_attacks, AutoAttack,
                        {"attacks_to_run": aa_cfg["attacks_to_run"], "norm": aa_norm, "eps": eps, "version": args.version,
                         "apgd_t_targets": aa_cfg["apgd_t"]["n_target_classes"]},
                        x, y, idx, args.batch_size, args.seed)

    report.update({
        "label": args.label,
        "autoattack": {"module": aa_module.__name__, "package_version": aa_version_of(aa_module),
                       "file": rel(getattr(aa_module, "__file__", ""))},
        "model": {"source": subject.source, "run_info": info, "state_sha256_16": digest,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "data": {"name": data_name, "split": "test", "n": n, "first_index": 0},
        "threat": {"norm": norm, "eps": eps, "repr": str(threat)},
        "version": args.version,
        "device": args.device,
        "device_name": (torch.cuda.get_device_name(torch.device(args.device)) if str(args.device).startswith("cuda")
                        else report["machine"]["cpu_model"]),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "order": args.order,
        "sides_finished": provenance,
        "clean_accuracy": float(correct.float().mean()),
        "robustopt": {
            "suite": f"suites.standard(version={args.version!r})",
            "attacks": [a.describe() for a in ro_attacks],
            "robust_accuracy": ev.robust_accuracy,
            "robust": int(ro_robust.sum()),
            "seconds": ro_seconds,
            "cpu_seconds": ro_cpu,
            "rows": [{"attack": r.name, "robust_accuracy_after": r.worst_case, "attacked": r.attacked,
                      "seconds": r.seconds, "grad_evals": r.grad_evals, "forwards": r.forwards} for r in ev.rows],
            "grad_evals": sum(r.grad_evals for r in ev.rows),
            "forwards": sum(r.forwards for r in ev.rows),
            "counted": ro_counted,
            "budget_per_stage": budget_table(ev, "markdown"),
        },
        "autoattack_run": {
            "config": aa_cfg,
            "robust_accuracy": float(aa_robust.float().mean()),
            "robust": int(aa_robust.sum()),
            "seconds": aa_seconds,
            "cpu_seconds": aa_cpu,
            "perturbation": stats,
            "n_outside_counted_robust": int((correct & ~inside).sum()),
            "cascade_from_log": parse_aa_cascade(aa_lines, n),
            "log": aa_lines,
            "counted": aa_counted,
        },
        "agreement": {
            "clean_correct": int(correct.sum()),
            "both_broken": int((ro_broken & aa_broken).sum()),
            "only_robustopt_breaks": int(len(only_ro)),
            "only_autoattack_breaks": int(len(only_aa)),
            "neither_breaks": int((ro_robust & aa_robust).sum()),
            "only_robustopt_indices": only_ro.tolist(),
            "only_autoattack_indices": only_aa.tolist(),
            "only_autoattack_details": only_aa_details,
        },
        "diagnose": diag,
    })
    publish(out_prefix, report, markdown, t0)
    return report


def _budget(a: dict[str, Any]) -> str:
    if a["type"] == "Square":
        return f"{a['queries']} queries"
    extra = f", {a['n_target_classes']} targets" if a.get("targeted") else ""
    return f"{a['steps']} steps{extra}"


def markdown(r: dict[str, Any]) -> str:
    ro, aa, ag, m = r["robustopt"], r["autoattack_run"], r["agreement"], r["machine"]
    n = r["data"]["n"]
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    title = "robustopt `suites.standard` vs AutoAttack" + ("" if r["version"] == "standard" else f" (robustopt version `{r['version']}`)")
    per = lambda c, k: f"{c[k] / n:,.1f}" if c else ""  # noqa: E731
    lines = [f"# {title}" + (" — SMOKE TEST (tiny model, not the real comparison)" if r["kind"].startswith("smoke") else ""), ""]
    if r["label"]:
        lines += [f"**{r['label']}**", ""]
    lines += [
        f"- model: {r['model']['source']} (state sha256[:16] `{r['model']['state_sha256_16']}`, "
        f"{r['model']['parameters']:,} parameters)",
        f"- data: first {n} `{r['data']['name']}` test images; threat {r['threat']['repr']}; version `{r['version']}`; "
        f"batch {r['batch_size']}; seed {r['seed']}; order {r['order']}; device {r['device']} ({r['device_name']})",
        f"- AutoAttack: `{r['autoattack']['module']}` {r['autoattack']['package_version']}, attacks "
        f"{aa['config']['attacks_to_run']} (APGD-T targets {aa['config']['apgd_t']['n_target_classes']}, "
        f"Square rescale_schedule={aa['config']['square']['rescale_schedule']})",
        f"- robustopt {m['robustopt']} (git {str(r['git']['commit'])[:10]}{' dirty' if r['git']['dirty'] else ''}): "
        + ", ".join(f"{a['name']} ({_budget(a)})" for a in ro["attacks"]),
        "",
        "| | robust accuracy | robust / n | wall time | CPU time (process) | grad evals / point "
        "| forward-only passes / point |",
        "|---|---|---|---|---|---|---|",
        f"| clean | {pct(r['clean_accuracy'])} | {ag['clean_correct']} / {n} | | | | |",
        f"| robustopt `{r['version']}` | {pct(ro['robust_accuracy'])} | {ro['robust']} / {n} | {ro['seconds']:.1f} s "
        f"| {ro['cpu_seconds']:.1f} s | {per(ro.get('counted'), 'grad_evals')} | {per(ro.get('counted'), 'forward_only')} |",
        f"| AutoAttack | {pct(aa['robust_accuracy'])} | {aa['robust']} / {n} | {aa['seconds']:.1f} s "
        f"| {aa['cpu_seconds']:.1f} s | {per(aa.get('counted'), 'grad_evals')} | {per(aa.get('counted'), 'forward_only')} |",
        f"| robustopt / AutoAttack | | | {ro['seconds'] / max(aa['seconds'], 1e-9):.2f}x | | "
        + (f"{ro['counted']['grad_evals'] / max(aa['counted']['grad_evals'], 1):.2f}x | "
           f"{ro['counted']['forward_only'] / max(aa['counted']['forward_only'], 1):.2f}x |"
           if ro.get("counted") and aa.get("counted") else " | |"),
        "",
        "Passes are counted for both by the same wrapper around the model (`PassCounter`): a backward "
        "pass through the output is a gradient evaluation of each of its rows, a forward pass whose output "
        "joins no graph a forward-only pass. robustopt's own counters: "
        f"{ro.get('grad_evals', 0) / n:,.1f} gradient evaluations and {ro.get('forwards', 0) / n:,.1f} forward "
        "passes per point.",
        "",
        "Each side finished at (UTC; load average at its end): "
        + "; ".join(f"{label} {r['sides_finished'][k]['finished_utc']} ({r['sides_finished'][k]['loadavg']})"
                    for k, label in (("ro", "robustopt"), ("aa", "AutoAttack")) if k in r.get("sides_finished", {}))
        + ". A side finished by an earlier run of the same command is reused (OUT.{ro,aa}-side.pt).",
        "",
        "Per-example agreement (on the clean-correct points): "
        f"both break {ag['both_broken']}, **only robustopt breaks {ag['only_robustopt_breaks']}**, "
        f"**only AutoAttack breaks {ag['only_autoattack_breaks']}**, neither {ag['neither_breaks']}.",
        "",
        f"AutoAttack's points: max {aa['perturbation']['norm']} distance {aa['perturbation']['max_distance']:.6g} "
        f"(eps {aa['perturbation']['eps']:g}; {aa['perturbation']['n_beyond_eps_strict']} points beyond eps by at most "
        f"{aa['perturbation']['max_excess_over_eps']:.2g}, float rounding; "
        f"{aa['perturbation']['n_outside_threat_model']} outside robustopt's `contains` check), values in "
        f"[{aa['perturbation']['min_value']:.4g}, {aa['perturbation']['max_value']:.4g}]. Its robust accuracy above is "
        "recomputed here on the model from the returned points.",
        "",
        "Cascades (robust accuracy after each attack, cumulative):",
        "",
        "| robustopt | after | s | | AutoAttack | after | cum. s |",
        "|---|---|---|---|---|---|---|",
    ]
    ro_rows = [row for row in ro["rows"] if row["attack"] != "Natural"]
    aa_rows = aa["cascade_from_log"]
    for i in range(max(len(ro_rows), len(aa_rows))):
        a = ro_rows[i] if i < len(ro_rows) else None
        b = aa_rows[i] if i < len(aa_rows) else None
        lines.append(
            ("| " + f"{a['attack']} | {pct(a['robust_accuracy_after'])} | {a['seconds']:.1f}" if a else "| | |")
            + " | | "
            + (f"{b['attack']} | {pct(b['robust_accuracy'])} | {b['cumulative_seconds']:.1f} |" if b else " | | |")
        )
    if ro.get("budget_per_stage"):
        lines += ["", ro["budget_per_stage"]]
    if ag["only_autoattack_details"]:
        lines += ["", "Points only AutoAttack breaks (adv class rank = rank of the class it reached among the "
                      "other classes' clean logits; robustopt's APGD-T aims at the top-k):", "",
                  "| index | label | adv class | rank | Linf | L2 |", "|---|---|---|---|---|---|"]
        for d in ag["only_autoattack_details"]:
            lines.append(f"| {d['index']} | {d['label']} | {d['adv_class']} | {d['adv_class_rank']} | {d['linf']:.4f} | {d['l2']:.3f} |")
    if ag["only_robustopt_indices"]:
        lines += ["", f"Points only robustopt breaks: {ag['only_robustopt_indices']}"]
    if r["diagnose"]:
        ro_names = list(r["diagnose"][0].get("robustopt_alone", {}))
        aa_names = list(r["diagnose"][0].get("autoattack_alone", {}))
        lines += ["", "Diagnosis: each attack alone on the disagreement points (x = breaks it; fresh seeds, so a "
                      "random attack may differ from its run inside the cascade):", "",
                  "| index | " + " | ".join(f"ro {a}" for a in ro_names) + " | " + " | ".join(f"AA {a}" for a in aa_names) + " |",
                  "|---|" + "---|" * (len(ro_names) + len(aa_names))]
        for p in r["diagnose"]:
            cells = ["x" if p["robustopt_alone"][a] else "" for a in ro_names] + ["x" if p["autoattack_alone"][a] else "" for a in aa_names]
            lines.append(f"| {p['index']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Machine: {m['platform']}; {m['cpu_model']}; {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
        f"torch {m['torch']} with {m['torch_threads']} threads, Python {m['python']}, numpy {m['numpy']}; "
        f"nice {m['nice']}; " + malloc_note(m)
        + f"load average {m['loadavg_at_start']} at start, {m['loadavg_at_end']} at end "
        "(timings are only comparable within one run of this script, and only on an otherwise idle machine: "
        "under contention, OpenMP threads spin while starved, so even the CPU times inflate).",
        "",
        f"Started {r['started_utc']}. Command (from `{r['cwd']}`):",
        "",
        "```",
        r["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
