"""Data-parallel runs (robustopt.distributed) and fault tolerance, on CPU with gloo.

Two processes are started with torchrun (``python -m torch.distributed.run --standalone``,
which picks a free port). One torchrun run (tests/distributed_worker.py, shared by the
tests through a module fixture) trains with DDP, evaluates and sweeps; the tests compare
its files with single-process runs of the same calls. The kill-and-resume tests SIGKILL a
`robustopt train` run (one process, and two under torchrun) after its first epoch
checkpoint and resume it with --resume.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import robustopt as ro
from robustopt import checkpoint, distributed
from robustopt.experiments import train_run

import distributed_worker as worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                       reason="torch.distributed with gloo is not available"),
]

TESTS = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # the tests run with one thread too (conftest): same kernels, same bits
    return env


def _run(cmd: list[str], log: Path, timeout: float = 120) -> None:
    with open(log, "wb") as f:
        proc = subprocess.run(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{log.read_text()[-4000:]}"


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory) -> Path:
    """Output folder of one 2-process torchrun of tests/distributed_worker.py."""
    out = tmp_path_factory.mktemp("ddp")
    _run(TORCHRUN + [str(TESTS / "distributed_worker.py"), str(out)], out / "torchrun.log")
    return out


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(checkpoint.checkpoint_paths(ckpt).weights))


# --- (a) DDP training --------------------------------------------------------------------------


def test_ddp_training_matches_single_process_with_the_same_global_batch(ddp_out):
    """batch_size is the global batch: 2 x 15 examples per step give the 1-process run's 30-example steps."""
    single = worker.mlp()
    res = ro.training.fit(single, worker.separable(worker.FIT_SIZE), **worker.FIT)

    ckpt = ddp_out / "fit" / "model"
    meta = checkpoint.read_metadata(ckpt)
    extra = meta["extra"]
    assert extra["epoch"] == 2 and extra["step"] == 2 * 7  # 181 training examples / global batch 30
    assert extra["world_size"] == 2 and len(extra["rng_ranks"]) == 2
    assert extra["rng_ranks"][0]["shuffle"] == extra["rng_ranks"][1]["shuffle"]  # one global permutation
    assert extra["rng_ranks"][0]["attack"] != extra["rng_ranks"][1]["attack"]  # per-rank attack streams
    assert (ddp_out / "fit" / "config.json").is_file()
    log = [json.loads(line) for line in (ddp_out / "fit" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2

    ddp = _weights(ckpt)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6, msg=f"{k} differs")
    # Epoch metrics are reduced over the ranks: the same counts as one process.
    for mine, theirs in zip(log, res.history):
        assert mine["grad_evals"] == theirs["grad_evals"] == 181 * (3 + 1)
        assert mine["train_acc"] == theirs["train_acc"]
        assert math.isclose(mine["train_loss"], theirs["train_loss"], rel_tol=1e-5)
        assert mine["val_clean_acc"] == theirs["val_clean_acc"]
        assert mine["val_robust_acc"] == theirs["val_robust_acc"]


# --- (b) sharded evaluation and sweep ----------------------------------------------------------------


@pytest.fixture(scope="module")
def single_results() -> dict[str, object]:
    return worker.evaluations(None)


@pytest.mark.parametrize("name", ["cascade", "independent", "progress"])
def test_sharded_evaluation_equals_single_process_example_by_example(ddp_out, single_results, name):
    ddp = ro.Evaluation.from_json(ddp_out / f"{name}.json")
    single = single_results["cascade" if name == "progress" else name]
    assert torch.equal(ddp.correct, single.correct)
    assert torch.equal(ddp.robust, single.robust)
    assert 0 < int(single.robust.sum()) < int(single.correct.sum()) < len(single.correct)  # a real test
    assert ddp.meta["world_size"] == 2
    assert [r.name for r in ddp.rows] == [r.name for r in single.rows]
    for a, b in zip(ddp.rows, single.rows):
        assert (a.accuracy, a.worst_case, a.attacked, a.grad_evals) == (b.accuracy, b.worst_case, b.attacked,
                                                                         b.grad_evals), a.name
    assert not (ddp_out / "eval.progress.json").exists()  # rank 0 deleted it when done


def test_sharded_sweep_equals_single_process_example_by_example(ddp_out, single_results):
    ddp = ro.SweepCurve.from_json(ddp_out / "sweep.json")
    single = single_results["sweep"]
    assert torch.equal(ddp.breaking_eps, single.breaking_eps)
    assert ddp.accuracy == single.accuracy and ddp.grad_evals == single.grad_evals
    assert ddp.attacked == single.attacked
    assert len(set(single.breaking_eps.tolist())) >= 3  # examples break at different eps


# --- (c) fault tolerance: SIGKILL mid-epoch, then --resume ----------------------------------------------


def _children(pid: int) -> list[int]:
    """Pids of the living descendants of ``pid`` (from /proc; torchrun starts each worker in its own session)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_when(cmd: list[str], log: Path, ready: Callable[[], bool], delay: Callable[[], float] = lambda: 0.0) -> None:
    """Start ``cmd``; once ``ready()`` holds (and ``delay()`` seconds later), SIGKILL it and every process it started."""
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        workers: list[int] = []
        try:
            deadline = time.monotonic() + 120
            while not ready():
                assert proc.poll() is None, f"{cmd} ended before the moment to kill it:\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, "that moment never came in 120 s"
                time.sleep(0.01)
            time.sleep(delay())
        finally:
            # A machine that dies: torchrun's agent and its workers (in sessions of their own) at once.
            workers = _children(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            deadline = time.monotonic() + 30
            while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.01)
    assert proc.returncode == -signal.SIGKILL
    assert not any(_alive(pid) for pid in workers)


def _extra(ckpt: Path) -> dict:
    try:
        return checkpoint.read_metadata(ckpt)["extra"]
    except (OSError, ValueError):  # not there (yet, or any more)
        return {}


def _kill_after_first_checkpoint(cmd: list[str], out: Path, log: Path) -> int:
    """Start ``cmd``, SIGKILL it and every process it started in its second epoch; return the checkpoint's epoch."""
    ckpt = out / "model"
    _kill_when(cmd, log, lambda: _extra(ckpt).get("epoch", 0) >= 1,
               delay=lambda: 0.3 * json.loads((out / "log.jsonl").read_text().splitlines()[0])["seconds"])
    epoch = checkpoint.read_metadata(ckpt)["extra"]["epoch"]
    assert 1 <= epoch < worker.CLI_TRAIN["epochs"], "the run was not interrupted mid-way"
    return epoch


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a / "model"), _weights(b / "model")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                          for line in (path / "log.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b)
    assert (a / "run.json").is_file() and (b / "run.json").is_file()


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    out = tmp_path / "cut"
    cmd = [sys.executable, "-m", "robustopt"] + worker.cli_args(out)
    _kill_after_first_checkpoint(cmd, out, tmp_path / "killed.log")
    assert not (out / "run.json").exists()
    # Resumed (and the reference run) in this process: the same train_run that `robustopt train` calls.
    train_run(out, resume=True, progress=False, **worker.CLI_TRAIN)
    train_run(tmp_path / "full", progress=False, **worker.CLI_TRAIN)
    _assert_same_run(out, tmp_path / "full")


def test_distributed_sigkill_then_resume_equals_uninterrupted_distributed_run(ddp_out, tmp_path):
    out = tmp_path / "cut"
    cmd = TORCHRUN + ["-m", "robustopt"] + worker.cli_args(out)
    _kill_after_first_checkpoint(cmd, out, tmp_path / "killed.log")
    _run(cmd + ["--resume"], tmp_path / "resumed.log")
    assert checkpoint.read_metadata(out / "model")["extra"]["world_size"] == 2
    _assert_same_run(out, ddp_out / "cli")  # the worker's uninterrupted 2-process train_run


def test_distributed_sigkill_after_a_mid_epoch_checkpoint_then_resume_equals_uninterrupted_run(ddp_out, tmp_path):
    """--checkpoint-every 1 under torchrun: killed inside epoch 2, resumed from there with every rank's state."""
    out, partial = tmp_path / "cut", tmp_path / "cut" / "partial"
    cmd = TORCHRUN + ["-m", "robustopt"] + worker.cli_args(out) + ["--checkpoint-every", "1"]

    def inside_second_epoch() -> bool:
        extra = _extra(partial)
        return extra.get("epoch") == 1 and extra["position"]["batch"] >= 2

    _kill_when(cmd, tmp_path / "killed.log", inside_second_epoch)
    extra = _extra(partial)
    assert extra.get("world_size") == 2, "the run was not killed inside epoch 2"
    assert len(extra["rng_ranks"]) == 2 and len(extra["position"]["sums"]) == 2  # every rank's state
    _run(cmd + ["--resume"], tmp_path / "resumed.log")
    assert f"inside epoch 2 of {worker.CLI_TRAIN['epochs']}, after batch {extra['position']['batch']}" in \
        (tmp_path / "resumed.log").read_text()  # it resumed from the mid-epoch checkpoint
    assert not checkpoint.exists(partial)
    _assert_same_run(out, ddp_out / "cli")  # the worker's uninterrupted 2-process train_run (no --checkpoint-every)


# --- the helpers, in this process ------------------------------------------------------------------


def test_single_process_context_is_a_no_op():
    ctx = distributed.setup()
    assert ctx == distributed.Context() and not ctx.enabled and ctx.is_main
    idx = torch.arange(7)
    assert ctx.shard(idx) is idx and ctx.loss_scale(7, 7) == 1.0 and ctx.owns(5)
    assert ctx.sum(1.5, 2) == (1.5, 2) and ctx.run_on_main(lambda: 3) == 3
    flags = torch.tensor([True, False])
    assert ctx.all(flags) is flags and ctx.any(flags) is flags
    assert distributed.rank_seed(11, 0) == 11 and distributed.rank_seed(11, 1) != distributed.rank_seed(11, 2)


@pytest.mark.parametrize("world_size,n", [(2, 30), (3, 31), (4, 2)])
def test_shards_partition_the_batch_and_the_scaled_ddp_average_is_the_global_mean(world_size, n):
    """DDP averages the ranks' gradients; with loss_scale the average is d/dtheta of the global mean loss."""
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    losses = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ctxs = [distributed.Context(world_size, r) for r in range(world_size)]
    shards = [c.shard(idx) for c in ctxs]
    assert torch.equal(torch.cat(shards), idx)  # contiguous, disjoint, complete (some may be empty)
    ddp = sum(c.loss_scale(len(s), n) * (losses[s].mean() if len(s) else 0.0) for c, s in zip(ctxs, shards))
    assert math.isclose(ddp / world_size, losses.mean().item(), rel_tol=1e-12)
    owners = [[j for j in range(7) if c.owns(j)] for c in ctxs]
    assert sorted(sum(owners, [])) == list(range(7))  # every evaluation batch runs on exactly one rank


def test_resume_rng_states_per_rank():
    state = {"rng": {"shuffle": "s0", "attack": "a0"}, "world_size": 2,
             "rng_ranks": [{"shuffle": "s0", "attack": "a0"}, {"shuffle": "s0", "attack": "a1"}]}
    fresh = {"shuffle": "new", "attack": "fresh"}
    pick = lambda w, r: distributed.resume_rng_states(state, distributed.Context(w, r), fresh)  # noqa: E731
    assert pick(2, 0) == state["rng"] and pick(2, 1)["attack"] == "a1"
    assert pick(3, 2) == {"shuffle": "s0", "attack": "fresh"}  # another world size: shared shuffle, fresh streams
    assert pick(1, 0) == state["rng"]


def test_a_refusal_at_the_clean_pass_reaches_every_rank(tmp_path):
    """A bad label in a batch that rank 1 classifies is refused on both ranks: neither waits in a collective."""
    import textwrap

    script = tmp_path / "bad_label.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import robustopt as ro
        from robustopt import distributed
        from tiny_problem import mlp, separable
        ctx = distributed.setup()
        x, y = separable(90, seed=1)
        y[20] = 7  # in batch 1 of 13: rank 1's
        for run in (lambda: ro.evaluate(mlp(0).eval(), (x, y), [ro.attacks.FGSM(ro.Linf(0.1))], batch_size=13,
                                        progress=False),
                    lambda: ro.sweep(mlp(0).eval(), (x, y), ro.Linf, [0.0, 0.1], batch_size=13, progress=False)):
            try:
                run()
            except ValueError as err:
                print(f"rank {{ctx.rank}}: {{err}}")
    """))
    log = tmp_path / "torchrun.log"
    _run(TORCHRUN + [str(script)], log, timeout=90)
    assert log.read_text().count("labels must be in [0, 1] for a model with 2 outputs") == 4
