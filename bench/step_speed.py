#!/usr/bin/env python
"""One N-FGSM training step of resnet9 on CPU: today's step against each speed lever, side by side.

The step is the ``fit`` loop's body for ``--method n-fgsm --augment crop-flip`` (the CPU CIFAR-10
recipe, ``robustopt reproduce madry-cifar10 --budget cpu``): a batch of ``--batch`` training
images drawn at random, crop-flip augmentation, the N-FGSM point (one input gradient in eval
mode), the cross-entropy update in train mode (SGD, momentum 0.9, weight decay 5e-4). Each
variant changes one thing against ``today`` (the step as it was before this script existed:
N-FGSM through the attack engine, which also scores its last point with one more forward pass);
``final`` combines the levers kept. Every variant has its own model and optimizer, from the same
seed, and sees the same batches.

Variants run in ``--rounds`` interleaved rounds (today, lever 1, lever 2, ..., each round starting
one variant later), each ``--steps`` timed steps after one untimed warm-up step (for the
``compile`` variants the warm-up holds the compilation, inductor's caches off, reported as
``compile_seconds``). A variant's gain is the median over the rounds of today's time divided by
its own in the same round (paired, so that a slow drift of the machine's load cancels), in wall
time and in the CPU time of the process (both threads; on a machine shared with other jobs it
shows the work itself, without the time spent waiting for a core). A lever counts as kept when it
gains at least 5% in both. Throughput is image-gradient evaluations per second, ``2 * batch /
seconds per step`` (N-FGSM: one for the attack, one for the update), and seconds per epoch are
extrapolated to the 383 steps of a 49,000-image epoch (validation not included), both from
today's median step and the variant's paired gain (a variant's own median drifts with the load of
its moments).

The machine's load (``os.getloadavg()`` and the runnable tasks of other processes) is recorded
before every round: on a shared machine every variant suffers alike, thanks to the interleaving,
but the absolute numbers are slower than on an idle one. Data: CIFAR-10's training split
(``ROBUSTOPT_DATA`` or ``--root``); without it, uniform random images of its shape (stated in
the result). Results: ``OUT.json`` and ``OUT.md`` (default ``bench/results/step-speed/full``,
with ``--quick`` ``.../quick``).

Examples:
    ROBUSTOPT_DATA=../shared/data .venv/bin/python bench/step_speed.py            # the benchmark, 2 threads
    .venv/bin/python bench/step_speed.py --quick                                  # a check of the script
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

if not __package__:  # run as `python bench/step_speed.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import robustopt as ro  # noqa: E402
from bench.harness import (finish, header, loadavg, log, other_runnable, out_prefix, parser,  # noqa: E402
                           provenance_md, publish, set_threads, write_report)
from robustopt.attacks import GradientAttack  # noqa: E402
from robustopt.models.folding import fold_batchnorm  # noqa: E402
from robustopt.training import MethodContext, TrainConfig  # noqa: E402
from robustopt.training.builtin_methods import n_fgsm  # noqa: E402
from robustopt.training.augment import crop_flip  # noqa: E402

EPS = 8 / 255
TRAIN_IMAGES = 49_000  # CIFAR-10's training split less the 1,000 held out for validation
KEEP = 0.05  # a lever is kept when it gains at least this fraction


@dataclass(frozen=True)
class Lever:
    """What a variant changes against today's step (the defaults are today's)."""

    single_step: bool = False  # N-FGSM without the engine's scoring pass (robustopt's method now)
    uint8: bool = False  # training images kept as uint8, augmented as uint8, converted per batch
    layout: str = "weights-channels-last"  # resnet9's default | "nchw" | "all-channels-last" (inputs too)
    fold_bn: bool = False  # attack passes through fold_batchnorm(model)
    compile: str | None = None  # torch.compile mode for every pass ("default", "max-autotune-no-cudagraphs", ...)
    compile_attack_only: bool = False  # the compiled model only for the attack's passes
    flush_denormal: bool = False
    mkldnn: bool = True
    optimizer: str = "for-loop"  # torch's CPU default | "foreach" | "fused"


# name -> (lever, what it changes); "final" is built from the kept levers (KEPT).
VARIANTS: dict[str, tuple[Lever, str]] = {
    "today": (Lever(), "the step before this work: N-FGSM through the attack engine"),
    "single-step": (Lever(single_step=True), "N-FGSM without the engine's scoring forward pass (now the default)"),
    "uint8-augment": (Lever(uint8=True), "images stored and augmented as uint8, converted to float per batch"),
    "nchw": (Lever(layout="nchw"), "contiguous (NCHW) weights instead of resnet9's channels-last ones"),
    "channels-last-input": (Lever(layout="all-channels-last"), "inputs converted to channels-last too"),
    "fold-bn": (Lever(fold_bn=True), "batch norm folded into the convolutions in the attack's eval-mode pass"),
    "flush-denormal": (Lever(flush_denormal=True), "torch.set_flush_denormal(True)"),
    "mkldnn-off": (Lever(mkldnn=False), "torch.backends.mkldnn disabled (ATen's own convolutions)"),
    "sgd-foreach": (Lever(optimizer="foreach"), "SGD(foreach=True)"),
    "sgd-fused": (Lever(optimizer="fused"), "SGD(fused=True)"),
    "compile": (Lever(compile="default"), "torch.compile(model), every pass"),
    "compile-max-autotune": (Lever(compile="max-autotune-no-cudagraphs"),
                             "torch.compile(model, mode='max-autotune-no-cudagraphs'), every pass"),
    "compile-attack": (Lever(compile="default", compile_attack_only=True),
                       "torch.compile(model) for the attack's passes only"),
}
# The levers of "final": the default single step and the flags that gained >= 5% (docs/performance.md).
KEPT = Lever(single_step=True, fold_bn=True)
COMPILED = ("compile", "compile-max-autotune", "compile-attack")


@dataclass
class Variant:
    """One variant's model, optimizer and step, with its timings."""

    name: str
    lever: Lever
    what: str
    step: Callable[[torch.Tensor], float] = field(repr=False)
    warmup_seconds: float | None = None
    first_loss: float | None = None  # the loss of the warm-up step: the same batch and weights for every variant
    seconds: list[float] = field(default_factory=list)  # mean seconds per step, one per round
    cpu_seconds: list[float] = field(default_factory=list)  # the same in CPU time of this process


@contextlib.contextmanager
def backend_flags(lever: Lever) -> Iterator[None]:
    """The process-wide settings of a lever, for the duration of its steps only."""
    denormal = torch.set_flush_denormal(True) if lever.flush_denormal else False
    try:
        with contextlib.nullcontext() if lever.mkldnn else torch.backends.mkldnn.flags(enabled=False):
            yield
    finally:
        if denormal:
            torch.set_flush_denormal(False)


def today_craft(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """N-FGSM as robustopt computed it before: the engine's one-step attack, with its scoring pass."""
    start = ro.Linf(2 * EPS).random_init(x, generator)
    attack = GradientAttack(ro.Linf(3 * EPS), steps=1, step_size=EPS, random_start=False, keep="last", label="N-FGSM")
    return attack.run(model, x, y, generator=generator, start=start).x_adv.detach()


def build(name: str, lever: Lever, what: str, data: tuple[torch.Tensor, torch.Tensor], seed: int,
          device: torch.device) -> Variant:
    """A variant: resnet9 from ``seed``, SGD, and its training step on a batch of indices (data on ``device``)."""
    x_all, y_all = data
    x_store = x_all.mul(255).round_().to(torch.uint8) if lever.uint8 else x_all
    torch.manual_seed(seed)
    model = ro.models.create("resnet9", channels_last=lever.layout != "nchw").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4,
                                **({"foreach": True} if lever.optimizer == "foreach" else {}),
                                **({"fused": True} if lever.optimizer == "fused" else {}))
    if lever.compile:  # every compile from scratch: no reuse of an earlier variant's (or run's) kernels
        torch._inductor.config.force_disable_caches = True
    compiled = torch.compile(model, mode=lever.compile) if lever.compile else model
    attacked = compiled if lever.compile else model
    if lever.fold_bn:
        attacked = fold_batchnorm(model)
    forward = model if lever.compile_attack_only else compiled
    config = TrainConfig(method="n-fgsm", eps=EPS)
    threat = ro.Linf(EPS)
    shuffle_gen = torch.Generator().manual_seed(seed)  # on CPU, as fit's
    attack_gen = torch.Generator(device=device).manual_seed(seed + 1)
    method_ctx = MethodContext(attacked, threat=threat, config=config, generator=attack_gen)

    def step(idx: torch.Tensor) -> float:
        with backend_flags(lever):
            idx = idx.to(device)
            xb = crop_flip(x_store[idx], shuffle_gen)
            if lever.uint8:
                xb = xb.float().div_(255)
            if lever.layout == "all-channels-last":
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y_all[idx]
            if lever.single_step:
                x_adv = n_fgsm(method_ctx, xb, yb).x
            else:
                x_adv = today_craft(attacked, xb, yb, attack_gen)
            forward.train()
            logits = forward(x_adv)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.eval()
            return loss.item()

    return Variant(name, lever, what, step)


def load_data(root: str | None, quick: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:  # on CPU
    """CIFAR-10's training images (the first 49,000), or random ones of its shape where it is missing."""
    if not quick:
        try:
            x, y = ro.data.load("cifar10", "train", root=root)
            return (x[:TRAIN_IMAGES], y[:TRAIN_IMAGES]), "CIFAR-10 training split (first 49,000 images)"
        except (OSError, ValueError, RuntimeError) as err:
            log(f"CIFAR-10 not found ({str(err).splitlines()[0]}); random images of its shape instead")
    g = torch.Generator().manual_seed(0)
    n = 2048
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g).float().div_(255)
    return (x, torch.randint(0, 10, (n,), generator=g)), f"{n:,} uniform random 32x32 RGB images (no CIFAR-10)"


def measure(args: Any, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Build the variants, warm each up, then time them in interleaved rounds (``save`` gets each round's summary)."""
    device = torch.device(args.device)
    (x, y), data_note = load_data(args.root, args.quick)
    data = (x.to(device), y.to(device))
    names = args.variants.split(",") if args.variants else [n for n in VARIANTS if not (args.quick and n in COMPILED)]
    unknown = sorted(set(names) - set(VARIANTS) - {"final"})
    if unknown:
        raise SystemExit(f"error: unknown --variants {unknown}; choose among {', '.join([*VARIANTS, 'final'])}")
    if "today" not in names:
        names.insert(0, "today")
    if "final" not in names:
        names.append("final")
    what = {**VARIANTS, "final": (KEPT, "the kept levers together: " + describe(KEPT))}
    variants = [build(n, what[n][0], what[n][1], data, args.seed, device) for n in names]
    n = len(data[0])
    batches = torch.Generator().manual_seed(args.seed + 2)
    rounds_load = []
    idx = torch.randint(0, n, (args.batch,), generator=batches)
    for variant in variants:  # the warm-up step (and the compilation) of each, on the same batch
        t = time.perf_counter()
        variant.first_loss = variant.step(idx)
        variant.warmup_seconds = time.perf_counter() - t
        log(f"warm-up {variant.name}: {variant.warmup_seconds:.2f} s")
    for r in range(args.rounds):
        rounds_load.append({"round": r, "loadavg": loadavg(), "other_runnable": other_runnable(1.0, 10)})
        steps = [torch.randint(0, n, (args.batch,), generator=batches) for _ in range(args.steps)]
        for variant in variants[r % len(variants):] + variants[: r % len(variants)]:  # each round starts elsewhere
            t, cpu = time.perf_counter(), time.process_time()
            for idx in steps:
                variant.step(idx)
            variant.seconds.append((time.perf_counter() - t) / args.steps)
            variant.cpu_seconds.append((time.process_time() - cpu) / args.steps)
        log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v.name} {v.seconds[-1]:.2f}" for v in variants)
            + f" s/step; load {rounds_load[-1]['loadavg']}")
        save(summary(variants, args, data_note, device, rounds_load))  # a partial result after every round
    return summary(variants, args, data_note, device, rounds_load)


def summary(variants: list[Variant], args: Any, data_note: str, device: torch.device,
            rounds_load: list[dict[str, Any]]) -> dict[str, Any]:
    """The measured rows (medians over the rounds so far) and the conditions."""
    base = variants[0].seconds
    today = statistics.median(base)
    steps_per_epoch = math.ceil(TRAIN_IMAGES / args.batch)
    rows = []
    for v in variants:
        median = statistics.median(v.seconds)
        speedup = statistics.median(b / s for b, s in zip(base, v.seconds))  # paired within each round
        cpu_speedup = statistics.median(b / s for b, s in zip(variants[0].cpu_seconds, v.cpu_seconds))
        compile_seconds = max(0.0, v.warmup_seconds - median) if v.lever.compile else None
        rows.append({
            "variant": v.name, "what": v.what, "lever": dataclasses.asdict(v.lever),
            "seconds_per_step": median, "seconds_per_round": v.seconds,
            "images_per_second": 2 * args.batch * speedup / today,  # today's rate times the paired gain
            "speedup": speedup, "cpu_seconds_per_step": statistics.median(v.cpu_seconds),
            "cpu_seconds_per_round": v.cpu_seconds, "cpu_speedup": cpu_speedup,
            "kept": v.name == "final" or (v.name != "today" and min(speedup, cpu_speedup) >= 1 + KEEP),
            "epoch_seconds": steps_per_epoch * today / speedup,
            "warmup_seconds": v.warmup_seconds, "compile_seconds": compile_seconds, "first_loss": v.first_loss,
        })
    return {"data": data_note, "device": str(device), "batch": args.batch, "steps": args.steps,
            "rounds": len(rounds_load), "steps_per_epoch": steps_per_epoch, "rounds_load": rounds_load, "rows": rows}


def describe(lever: Lever) -> str:
    default = Lever()
    return ", ".join(f"{f.name}={getattr(lever, f.name)!r}" for f in dataclasses.fields(Lever)
                     if getattr(lever, f.name) != getattr(default, f.name)) or "nothing"


def markdown(report: dict[str, Any]) -> str:
    m = report["measured"]
    lines = [
        f"# One N-FGSM training step of resnet9 on {m.get('device', 'cpu')} (batch {m['batch']})",
        "",
        *(["--quick: a check of the script (random images, one step per variant); the numbers mean nothing.", ""]
          if report.get("quick") else []),
        f"Data: {m['data']}. {m['rounds']} interleaved rounds of {m['steps']} timed steps per variant after one "
        "warm-up step; s/step: the variant's median over the rounds; vs today: the median of its per-round ratios to "
        "today's step (paired). Images/s (image-gradient evaluations per second, 2 per image and step) and the epoch "
        f"({m['steps_per_epoch']} steps of 49,000 images, without validation): today's median step divided by the "
        "paired gain.",
        "",
        "| variant | what it changes | s/step | images/s | vs today | N-FGSM epoch | CPU s/step | vs today (CPU) "
        "| kept (>= 5% in both) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in m["rows"]:
        compile_note = f" (+{r['compile_seconds']:.0f} s compile)" if r["compile_seconds"] is not None else ""
        lines.append(f"| {r['variant']} | {r['what']} | {r['seconds_per_step']:.3f} | {r['images_per_second']:.0f} | "
                     f"{r['speedup']:.2f}x | {r['epoch_seconds'] / 60:.1f} min{compile_note} | "
                     f"{_fmt(r.get('cpu_seconds_per_step'), '.2f')} | {_fmt(r.get('cpu_speedup'), '.2f', 'x')} | "
                     f"{'yes' if r['kept'] else 'no'} |")
    loads = ", ".join(f"{x['loadavg']} ({x['other_runnable']} other runnable)" for x in m["rounds_load"])
    lines += ["", f"Load before each round (1/5/15-min load average, tasks of other processes runnable): {loads}.",
              "", *provenance_md(report)]
    return "\n".join(lines)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def parse_args(argv: list[str] | None = None) -> Any:
    p = parser(__doc__, "quick", "threads", "root", "seed", "device", "out", script="step_speed",
               threads="torch threads (default 2, as the CPU recipe's machine)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant and round (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--variants", help=f"comma-separated subset of {', '.join(VARIANTS)} (today and final always "
                                      "run; default all, --quick all but the compiled ones)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.rounds = 16, 1, 1
    for name in ("batch", "steps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads or 2)
    ro.tune_malloc()  # as the robustopt command does at start-up
    t0 = time.perf_counter()
    report = header("step_speed", quick=args.quick)
    prefix = out_prefix(args.out, "step_speed", args.quick)

    def save(measured: dict[str, Any]) -> None:
        report["measured"] = measured
        write_report(prefix, finish(report, t0), markdown(report))

    report["measured"] = measure(args, save)
    publish(prefix, report, markdown, t0)
    return report


if __name__ == "__main__":
    main()
