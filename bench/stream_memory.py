#!/usr/bin/env python
"""Memory of `robustopt eval` and of training on an image folder: peak RSS on 20,000 generated 64x64 images vs 2,000.

An ImageFolder is read batch by batch (``robustopt.data.formats.Streamed``), so the peak resident
set size (RSS) of ``robustopt eval --model ... --data folder:PATH`` should not grow with the number
of images: 20,000 RGB 64x64 images are 938 MiB as float32 tensors, 94 MiB at 2,000. Each size runs
``robustopt eval`` in a fresh process (one torch thread, the same batch size) and its peak RSS is read
from the kernel when it exits (``os.wait4``). For comparison a third process holds the larger set as
one tensor, as an evaluation of ``(x, y)`` tensors would. Training streams too: ``ro.training.fit`` on
the folder's dataset (one epoch of natural training of the same network, batch size the same, clean
validation on the held-out tenth) runs in a fresh process per size as well.

The images are smooth random RGB images in 10 classes. The model (``net.py`` written beside them)
is a small CNN biased towards class 0, and class 0 holds the same number of images in every set
(a batch, at most a tenth of the smaller set): the attacks (the fast suite, APGD-CE and APGD-T)
run on those in both runs, and every other image is read by the clean pass only. So the runs differ only in how many images are streamed.

Results: ``OUT.json`` and ``OUT.md`` (default ``bench/results/stream-memory/full``, with ``--quick``
``.../quick``: 200 and 2,000 images) with the command, git commit, machine and date.

Examples:
    nice -n 19 .venv/bin/python bench/stream_memory.py            # 2,000 and 20,000 images, batch 250
    .venv/bin/python bench/stream_memory.py --quick               # 200 and 2,000 images
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/stream_memory.py`: import bench/ as a package (bench/harness.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from bench.harness import header, log, out_prefix, parser, provenance_md, publish  # noqa: E402

CLASSES = 10
SIZE = 64
MODEL = '''
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                        nn.Linear(128, 10))
    with torch.no_grad():
        net[-1].bias[0] += 5.0  # predicts class 0: only its images are attacked
    return net
'''


def make_images(root: Path, n: int, per_zero: int, seed: int = 0) -> None:
    """``n`` PNG images in ``CLASSES`` class folders, ``per_zero`` of them in class 0; smooth random RGB."""
    from PIL import Image

    g = np.random.default_rng(seed)
    counts = [per_zero] + [(n - per_zero) // (CLASSES - 1) + (i < (n - per_zero) % (CLASSES - 1))
                           for i in range(CLASSES - 1)]
    for c, count in enumerate(counts):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            small = Image.fromarray(g.integers(0, 256, (8, 8, 3), dtype=np.uint8))
            small.resize((SIZE, SIZE), Image.BILINEAR).save(folder / f"{i:05d}.png")


def measured(cmd: list[str], log_path: Path) -> dict[str, Any]:
    """Run ``cmd`` with one torch thread; its exit status, wall time and peak RSS (MiB, from wait4)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); its output: {log_path}")
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "seconds": seconds}


def markdown(r: dict[str, Any]) -> str:
    rows = ["| images | what | peak RSS | wall time | images as float32 |", "|---:|---|---:|---:|---:|"]
    for m in r["runs"]:
        rows.append(f"| {m['images']:,} | {m['what']} | {m['peak_rss_mib']:.0f} MiB | {m['seconds']:.0f} s | "
                    f"{m['images'] * 3 * SIZE * SIZE * 4 / 2**20:.0f} MiB |")
    small, large = r["runs"][0], r["runs"][1]
    trained = [m for m in r["runs"] if m["what"].startswith("`ro.training.fit`")]
    train_line = (f"Training, {trained[1]['images'] // trained[0]['images']}x the images: peak RSS "
                  f"x{trained[1]['peak_rss_mib'] / trained[0]['peak_rss_mib']:.2f} "
                  f"({trained[1]['peak_rss_mib'] - trained[0]['peak_rss_mib']:+.0f} MiB).") if len(trained) == 2 else ""
    lines = [
        "# Peak memory of `robustopt eval` and of training on an image folder, streamed",
        "",
        f"{CLASSES} classes of generated {SIZE}x{SIZE} RGB PNG images; batch {r['batch_size']}; the fast suite "
        f"at L-inf {r['eps']}; the same {r['attacked']} images attacked in both runs, the others read by the "
        "clean pass (see bench/stream_memory.py). One torch thread per process.",
        "",
        *rows,
        "",
        f"Evaluation, {large['images'] // small['images']}x the images: peak RSS x{large['peak_rss_mib'] / small['peak_rss_mib']:.2f} "
        f"({large['peak_rss_mib'] - small['peak_rss_mib']:+.0f} MiB).",
        "",
        *([train_line, ""] if train_line else []),
        *provenance_md(r),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = parser(__doc__, "quick", "batch-size", "out", script="stream_memory", batch_size="examples per batch (default 250)")
    p.set_defaults(batch_size=250)
    p.add_argument("--keep", help="folder for the images and runs (default: a temporary folder, deleted after)")
    args = p.parse_args()
    sizes = (200, 2000) if args.quick else (2000, 20000)
    eps = "4/255"
    prefix = out_prefix(args.out, "stream_memory", args.quick)
    report = header("stream-memory", quick=args.quick)
    attacked = min(args.batch_size, sizes[0] // CLASSES)  # class 0's images: the same count in every set
    report.update(batch_size=args.batch_size, eps=eps, sizes=list(sizes), attacked=attacked, runs=[])
    t0 = time.perf_counter()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="stream-memory-"))
    try:
        (work / "net.py").write_text(MODEL)
        for n in sizes:
            folder = work / f"images-{n}"
            if not folder.exists():
                log(f"writing {n:,} images to {folder} ...")
                make_images(folder, n, per_zero=attacked)
            run = work / f"run-{n}"
            shutil.rmtree(run, ignore_errors=True)
            cmd = [sys.executable, "-m", "robustopt", "eval", "--model", f"{work / 'net.py'}:make", "--data",
                   f"folder:{folder}", "--eps", eps, "--suite", "fast", "--batch-size", str(args.batch_size),
                   "--out", str(run)]
            log(f"robustopt eval on {n:,} images ...")
            report["runs"].append({"images": n, "what": "`robustopt eval`, streamed",
                                   **measured(cmd, work / f"eval-{n}.log")})
            log(f"  peak RSS {report['runs'][-1]['peak_rss_mib']:.0f} MiB")
        for n in sizes:
            train = ("import runpy, robustopt as ro; make = runpy.run_path({net!r})['make']; "
                     "ro.training.fit(make(), ro.data.load('folder:{folder}'), method='natural', epochs=1, "
                     "batch_size={batch}, optimizer='sgd', lr=0.01, val_attack_steps=0, progress=False)"
                     ).format(net=str(work / "net.py"), folder=work / f"images-{n}", batch=args.batch_size)
            log(f"ro.training.fit on {n:,} images ...")
            report["runs"].append({"images": n, "what": "`ro.training.fit`, streamed, one epoch",
                                   **measured([sys.executable, "-c", train], work / f"train-{n}.log")})
            log(f"  peak RSS {report['runs'][-1]['peak_rss_mib']:.0f} MiB")
        n = sizes[-1]
        hold = (f"import robustopt as ro; x, y = ro.data.formats.first(ro.data.load('folder:{work / f'images-{n}'}')); "
                "print(x.shape)")
        log(f"the {n:,} images as one tensor ...")
        report["runs"].append({"images": n, "what": "held as one tensor (`ro.data.formats.first`), no attack",
                               **measured([sys.executable, "-c", hold], work / "hold.log")})
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    publish(prefix, report, markdown, t0)


if __name__ == "__main__":
    main()
