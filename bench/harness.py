"""The bench harness: what every bench script shares, in one place.

* **where results go**: ``bench/results/<question>/``, one folder per question (:data:`QUESTIONS`);
  a script's default ``--out`` is ``bench/results/<question>/full`` (``quick`` with ``--quick``);
* **one logger**: :func:`log` (progress on stderr; stdout carries the result's Markdown);
* **one model loader**: :func:`load_model` gives the model under test, either a trained run folder
  (``--run``) or a tiny model trained once from a recipe (:data:`MODEL_RECIPES`) and cached;
* **one publisher**: :func:`header` opens a result, :func:`publish` closes it and writes
  ``OUT.json`` and ``OUT.md`` (:func:`write_report` alone for a partial result). Every result
  records the exact command, the git commit, the machine (CPU model and count, torch version and
  threads, nice, load average), the date and the peak RSS of the process, so that a number can be
  traced back to how it was made;
* **one command line**: :func:`parser` gives each script the options they share (:data:`COMMON_OPTIONS`);
* **subprocesses**: :func:`script_command` runs another bench script.

``bench`` is a package: the scripts run as ``python bench/x.py`` or ``python -m bench.x`` from
the repository root, and tests import them as ``bench.x`` (``tests/bench_package.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

import robustopt
from robustopt._io import atomic_write_text
from robustopt.attacks.passes import InBatches, predict

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
CACHE = BENCH / ".cache"  # gitignored: tiny models trained by the bench scripts

# Each script's question: its results go to RESULTS / QUESTIONS[script] (bench/results/README.md).
QUESTIONS = {
    "throughput": "throughput",
    "allocator": "allocator",
    "eval_cost": "eval-cost",
    "memory": "memory",
    "compare_autoattack": "autoattack",
    "pgd_restarts": "pgd-restarts",
    "training_curves": "train-efficiency",
    "recipe_frontier": "cifar10-recipes",
    "ema_last_iterate": "cifar10-recipes",
    "step_speed": "step-speed",
    "fresh_clone_time": "cifar10-cpu",
    "stream_memory": "stream-memory",
    "zoo_vs_autoattack": "zoo-vs-autoattack",
    "zoo_audit": "zoo-audit",
    "eot_vs_autoattack_rand": "autoattack",
    "square_schedule": "autoattack",
    "square_small_batch": "autoattack",
    "square_stall": "autoattack",
    "run": "run",
}

# Tiny models for smoke tests and strength checks, trained on the fly on the shipped mnist-mini
# (5000 training images, 500 of them held out) and reusable from a folder.
# small-cnn-mini: PGD-3 (step 0.1), eps ramped 0.15 -> 0.3 over 2 epochs of batch 50 (180 steps;
#   1-4 minutes on 2 busy CPU cores). Without the ramp, PGD training at eps 0.3 from scratch
#   sometimes stays at chance (and one epoch of batch 100 always did here).
# small-cnn-mini-at: the same for 4 epochs (360 steps, ~30 s on one busy core): ~98% clean and
#   ~44% robust under PGD-40 at Linf 0.3 on 200 test images, i.e. robust enough that the robust
#   accuracies of different attacks mean something. The default model under test.
MODEL_RECIPES: dict[str, dict[str, Any]] = {
    "small-cnn-mini": dict(data="mnist-mini", model="small-cnn", method="pgd", epochs=2, eps_warmup_epochs=2,
                           attack_steps=3, attack_step_size=0.1, batch_size=50, lr=1e-3, eps=0.3, norm="linf",
                           seed=0),
    "small-cnn-mini-at": dict(data="mnist-mini", model="small-cnn", method="pgd", epochs=4, eps_warmup_epochs=2,
                              attack_steps=3, attack_step_size=0.1, batch_size=50, lr=1e-3, eps=0.3, norm="linf",
                              seed=0),
}
DEFAULT_RECIPE = "small-cnn-mini-at"


# --------------------------------------------------------------------------------------------
# logging, paths, subprocesses
# --------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    """Progress for the person watching: stderr, flushed (stdout is the result's Markdown)."""
    print(msg, file=sys.stderr, flush=True)


def default_out(script: str, stem: str = "full") -> Path:
    """``bench/results/<question>/STEM``: a result of ``script`` in its question's folder."""
    return RESULTS / QUESTIONS[script] / stem


def out_prefix(out: str | Path | None, script: str, quick: bool | None = False) -> Path:
    """``--out`` as given, else ``bench/results/<question>/quick`` (``--quick``) or ``.../full``."""
    return Path(out) if out else default_out(script, "quick" if quick else "full")


def script_command(script: str, *args: str) -> list[str]:
    """The command that runs ``bench/SCRIPT.py`` with this Python, paths relative to our cwd (as typed)."""
    paths = [sys.executable, str(BENCH / f"{script}.py")]
    with contextlib.suppress(ValueError):  # another drive (Windows): keep them absolute
        paths = [os.path.relpath(p) for p in paths]
    return [*paths, *args]


def rel(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (for readable tables)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# The command-line options that several scripts share, spelled once: name -> add_argument keywords.
COMMON_OPTIONS: dict[str, dict[str, Any]] = {
    "quick": dict(action="store_true", help="a check of the script (small sizes), not the benchmark"),
    "threads": dict(type=int, help="torch.set_num_threads (default: torch's default)"),
    "run": dict(help="trained robustopt run folder (default: small-cnn PGD-AT on mnist-mini, cached)"),
    "cache": dict(default=str(CACHE), help="folder for the cached model (default bench/.cache)"),
    "root": dict(help="data root (default $ROBUSTOPT_DATA)"),
    "norm": dict(choices=["linf", "l2", "l1"], help="threat norm (default: the run's)"),
    "eps": dict(type=float, help="radius in pixel space (default: the run's)"),
    "batch-size": dict(type=int, default=500),
    "seed": dict(type=int, default=0),
    "device": dict(default="cpu", help="device of the model and the data (default cpu; e.g. cuda)"),
    "out": dict(help="output path without suffix; writes OUT.json and OUT.md"),
}


def parser(description: str, *options: str, script: str | None = None, **helps: str) -> argparse.ArgumentParser:
    """A bench script's argument parser, with the :data:`COMMON_OPTIONS` it names.

    Args:
        description: the script's module docstring; its first paragraph heads ``--help``.
        *options: names of :data:`COMMON_OPTIONS` to add, in this order (e.g. "quick", "threads").
        script: the script's name in :data:`QUESTIONS`; ``--out``'s help then names its default folder.
        **helps: help texts that replace the usual ones, by option name ("-" written "_").

    Returns:
        The parser (epilog "See bench/README.md."); the script adds its own options.

    Raises:
        ValueError: an unknown option name, or a help text for an option not added.

    Example:
        >>> p = parser(__doc__, "threads", "seed", script="memory", seed="seed of the random starts")
    """
    unknown = [o for o in options if o not in COMMON_OPTIONS]
    unused = sorted(set(helps) - {o.replace("-", "_") for o in options})
    if unknown or unused:
        raise ValueError(f"unknown common options {unknown} or help texts for options not added {unused}; "
                         f"the common options are {', '.join(COMMON_OPTIONS)}.")
    if script is not None:
        helps.setdefault("out", f"output path without suffix (default {rel(default_out(script))}, "
                                "with --quick .../quick)")
    p = argparse.ArgumentParser(description=description.split("\n\n")[0], epilog="See bench/README.md.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in options:
        kwargs = dict(COMMON_OPTIONS[name])
        if name.replace("-", "_") in helps:
            kwargs["help"] = helps[name.replace("-", "_")]
        p.add_argument(f"--{name}", **kwargs)
    return p


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (before :func:`header`, which records it)."""
    if threads:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# what every result records
# --------------------------------------------------------------------------------------------
def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_info() -> dict[str, Any]:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()

    # A copy of the tree without .git (the GPU machine of bench/gpu.sh) is given its commit in ROBUSTOPT_GIT_COMMIT.
    fallback = {"commit": os.environ.get("ROBUSTOPT_GIT_COMMIT"), "dirty": None}
    try:
        commit = git("rev-parse", "HEAD")
        return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))} if commit else fallback
    except Exception:  # noqa: BLE001 - no git at all
        return fallback


def loadavg() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def other_runnable(seconds: float = 2.0, samples: int = 20) -> float | None:
    """Mean number of runnable tasks other than this one, sampled now (Linux ``/proc/loadavg``).

    Unlike the load average, which still counts a job that ended minutes ago, this sees only what
    runs now: about 0 on an idle machine, about 1 per busy core used by another job.
    """
    counts = []
    for _ in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return None
        counts.append(running - 1)
        time.sleep(seconds / samples)
    return round(sum(counts) / len(counts), 2)


def cpu_counters() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from Linux ``/proc/stat``.

    busy = user + nice + system + irq + softirq over all CPUs (guest time is inside user); steal =
    time the hypervisor gave this VM's CPUs to someone else. Subtract two readings, and this
    process's own CPU time, to see what else ran during a timed call. None where there is no /proc.
    """
    try:
        v = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz


def malloc_env() -> dict[str, str]:
    """The ``MALLOC_*`` environment variables (glibc's malloc tuning), sorted by name."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")}


def malloc_note(machine: dict[str, Any]) -> str:
    """``"glibc malloc tuned by K=V ...; "`` for a :func:`machine_info` that recorded tuning, else ``""``."""
    tuning = machine.get("malloc_env")
    return f"glibc malloc tuned by {' '.join(f'{k}={v}' for k, v in tuning.items())}; " if tuning else ""


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor()
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu_model = ln.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": __import__("numpy").__version__,
        "robustopt": robustopt.__version__,
        "nice": os.nice(0) if hasattr(os, "nice") else None,
        "ld_preload": os.environ.get("LD_PRELOAD") or None,  # e.g. another malloc (bench/allocator.py)
        "malloc_env": malloc_env() or None,  # glibc tuning
        "loadavg_at_start": loadavg(),
    }


def command_line() -> str:
    """This process's command as typed (``python bench/x.py ...`` or ``python -m bench.x ...``)."""
    exe = sys.executable
    with contextlib.suppress(ValueError):
        exe = os.path.relpath(exe)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    script = ["-m", spec.name] if spec is not None and spec.name.startswith("bench.") else sys.argv[:1]
    names = ["ROBUSTOPT_DATA", *malloc_env()]
    env = "".join(f"{k}={shlex.quote(os.environ[k])} " for k in names if os.environ.get(k))
    prefix = f"nice -n {os.nice(0)} " if hasattr(os, "nice") and os.nice(0) > 0 else ""
    return prefix + env + " ".join(shlex.quote(a) for a in [exe, *script, *sys.argv[1:]])


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident set size of this process (or of its finished, waited-for children), MiB."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return ru.ru_maxrss * scale / 2**20


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def header(kind: str, *, quick: bool | None = None) -> dict[str, Any]:
    """Open a result: the fields every bench result starts with (command, git, machine, date)."""
    out: dict[str, Any] = {"kind": kind, "started_utc": now_utc(), "command": command_line(), "cwd": rel(os.getcwd()),
                           "git": git_info(), "machine": machine_info()}
    if quick is not None:
        out["quick"] = quick
    return out


def finish(report: dict[str, Any], t0: float) -> dict[str, Any]:
    """Close a report: end time, wall time, load average at the end, peak RSS."""
    report["finished_utc"] = now_utc()
    report["wall_seconds"] = time.perf_counter() - t0
    report["machine"]["loadavg_at_end"] = loadavg()
    report["peak_rss_mib"] = peak_rss_mib()
    return report


def machine_line(r: dict[str, Any]) -> str:
    m = r["machine"]
    return (f"{m['cpu_model']}; {m['cpu_count']} CPUs ({m['cpus_usable']} usable); torch {m['torch']} with "
            f"{m['torch_threads']} threads; Python {m['python']}; nice {m['nice']}; "
            + (f"LD_PRELOAD {m['ld_preload']}; " if m.get("ld_preload") else "")
            + malloc_note(m)
            + "load average "
            f"{m['loadavg_at_start']} at start, {m.get('loadavg_at_end')} at end")


def provenance_md(r: dict[str, Any]) -> list[str]:
    """Markdown lines: machine, git, date, peak RSS and the exact command."""
    g = r["git"]
    return [
        f"Machine: {machine_line(r)}.",
        "",
        f"robustopt {r['machine']['robustopt']}, git {str(g['commit'])[:10]}{' (dirty tree)' if g['dirty'] else ''}; "
        f"started {r['started_utc']}, finished {r.get('finished_utc')} ({r.get('wall_seconds', 0):.0f} s); "
        f"peak RSS {r.get('peak_rss_mib', 0):.0f} MiB.",
        "",
        f"Command (from `{r['cwd']}`):",
        "",
        "```",
        r["command"],
        "```",
        "",
    ]


def write_report(prefix: Path, report: dict[str, Any], md: str) -> tuple[Path, Path]:
    """Write ``PREFIX.json`` and ``PREFIX.md``, each atomically (an interrupted write leaves the old file).

    :func:`publish` calls it at the end; a script that measures row by row calls it after each
    row too, so that an interruption keeps what was measured.
    """
    prefix = Path(prefix)
    out_json, out_md = prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_json, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_md, md)
    return out_json, out_md


def publish(prefix: Path, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str], t0: float) -> str:
    """Close ``report``, write ``PREFIX.{json,md}``, print the Markdown (stdout) and the paths (stderr)."""
    finish(report, t0)
    md = markdown(report)
    paths = write_report(prefix, report, md)
    print(md, flush=True)
    log(f"written: {paths[0]}, {paths[1]}")
    return md


# --------------------------------------------------------------------------------------------
# the model under test
# --------------------------------------------------------------------------------------------
def threat(norm: str, eps: float) -> robustopt.ThreatModel:
    """The threat model of a norm name ("linf", "l2", "l1") and a radius in pixel space."""
    from robustopt.threat import threat_from_name

    return threat_from_name(norm, eps)


@dataclass
class ModelUnderTest:
    """A model to measure, with what it was trained on (``info``: its ``run.json``)."""

    model: torch.nn.Module  # eval mode
    info: dict[str, Any]  # run.json; for a recipe model also recipe, folder, train_seconds (None: cached)
    source: str  # one line for the tables: where the weights come from
    run: str | None = None  # the run folder given with --run (None: a recipe model)

    @property
    def data(self) -> str:
        return self.info["data"]

    def threat(self, norm: str | None = None, eps: float | None = None) -> robustopt.ThreatModel:
        """The threat model it was trained against, or another ``norm`` / ``eps``."""
        return threat(norm or self.info.get("norm", "linf"), eps if eps is not None else float(self.info.get("eps", 0.3)))

    def test_set(self, n: int | None = None, *, root: str | None = None,
                 data: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` (default: all) test images of its dataset (or ``data``), contiguous."""
        name = data or self.data
        x, y = robustopt.data.load(name, "test", root=root)
        if n is not None and n > len(x):
            raise SystemExit(f"{n:,} test images asked for, but {name} has {len(x):,} "
                             "(set ROBUSTOPT_DATA or --root for a full dataset).")
        return (x, y) if n is None else (x[:n].contiguous(), y[:n].contiguous())


def load_model(run: str | Path | None = None, *, recipe: str = DEFAULT_RECIPE,
               folder: str | Path | None = None) -> ModelUnderTest:
    """The model under test: the trained run folder ``run`` (``--run``), else the tiny model
    ``MODEL_RECIPES[recipe]`` from ``folder`` (default ``bench/.cache/RECIPE``), trained there first
    if needed (a folder trained with other settings is refused)."""
    if run is not None:
        model, info = robustopt.load_run(run)
        source = (f"trained run {rel(run)} ({info.get('method')} on {info.get('data')}, {info.get('norm')} eps "
                  f"{info.get('eps')})")
        return ModelUnderTest(model.eval(), info, source, str(run))
    from robustopt.experiments import train_run

    settings = dict(MODEL_RECIPES[recipe])
    folder = Path(folder) if folder is not None else CACHE / recipe
    train_seconds = None
    if not (folder / "run.json").is_file():
        t0 = time.perf_counter()
        log(f"training tiny model {recipe} -> {folder}: {settings}")
        train_run(folder, progress=False, **settings)
        train_seconds = time.perf_counter() - t0
        log(f"  trained in {train_seconds:.1f} s")
    model, info = robustopt.load_run(folder)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    stale = {k: v for k, v in settings.items() if k in info and info[k] != v or k in config and config[k] != v}
    if stale:
        raise SystemExit(f"{folder} holds a model trained with other settings ({stale} differ from {settings}); "
                         "delete it or pick another folder.")
    source = (f"{settings['model']}, {_train_steps(folder)} steps of {settings['method']} training on "
              f"{settings['data']} (recipe {recipe} in bench/harness.py: {settings}), in {rel(folder)}")
    info = {**info, "recipe": settings, "train_seconds": train_seconds, "folder": rel(folder)}
    return ModelUnderTest(model.eval(), info, source)


def _train_steps(folder: Path) -> int | str:
    """Optimizer steps of a training run, from the last line of its log."""
    try:
        return int(json.loads((folder / "log.jsonl").read_text().strip().splitlines()[-1])["step"])
    except (OSError, IndexError, KeyError, ValueError):
        return "?"


# --------------------------------------------------------------------------------------------
# small checks on models and points
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predictions(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return predict(InBatches(model, batch_size), x).argmax(1)


def state_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def perturbation_stats(threat, x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, Any]:
    delta = (x_adv - x).flatten(1)
    dist = threat.distance(x, x_adv)
    return {
        "norm": threat.norm,
        "eps": threat.eps,
        "max_distance": float(dist.max()) if len(dist) else 0.0,
        "max_linf": float(delta.abs().max()) if delta.numel() else 0.0,
        "n_beyond_eps_strict": int((dist > threat.eps).sum()),  # float rounding of x + eps - x
        "max_excess_over_eps": float((dist - threat.eps).clamp_min(0).max()) if len(dist) else 0.0,
        "n_outside_threat_model": int((~threat.contains(x_adv, x)).sum()),  # robustopt's check, atol 1e-5
        "min_value": float(x_adv.min()),
        "max_value": float(x_adv.max()),
        "n_nonfinite": int((~torch.isfinite(x_adv)).flatten(1).any(1).sum()),
    }
