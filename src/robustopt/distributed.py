"""Data-parallel runs under ``torchrun``: process group, sharding, reductions.

``torchrun --nproc_per_node=N -m robustopt train|eval|sweep ...`` (or any script
calling ``ro.training.fit``, ``ro.evaluate`` or ``ro.sweep`` under torchrun) runs N
processes. :func:`setup` starts the process group from torchrun's environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) as soon
as ``WORLD_SIZE > 1``: backend gloo for CPU tensors and, when CUDA is available,
nccl for CUDA tensors (``"cpu:gloo,cuda:nccl"``), each rank on ``cuda:LOCAL_RANK``.
With one process everything here is a no-op, so the single-process code path is
unchanged.

What is sharded, and why the numbers do not depend on it:

* **Training** (``fit``): every rank draws the same permutation of each epoch (the
  shuffle generator is seeded identically everywhere) and takes its slice
  (``torch.tensor_split``) of every *global* batch of ``batch_size`` examples. The
  training attack runs on that slice with the unwrapped model in eval mode; the
  weight update goes through ``DistributedDataParallel``, with each rank's loss
  scaled by ``local_n * world_size / global_n`` so that DDP's gradient average is
  exactly the gradient of the mean loss over the global batch. Hence ``batch_size``
  and ``lr`` mean the same as in a single-process run. Randomness that is drawn per
  rank (random starts, dropout) comes from per-rank generators (rank 0 uses the
  single-process seeds), so a W-process run equals the 1-process run with the same
  batch size up to float summation order exactly when training draws no randomness
  (e.g. "natural" without dropout, or PGD without random start).
* **Evaluation** (``evaluate``, ``sweep``): batches are formed exactly as in a
  single-process run (same examples, same batch indices) and batch ``j`` runs on
  rank ``j % world_size`` with the generator of batch ``j``. Every random draw of an
  attack comes from that per-batch generator, so every per-example result is
  identical to the single-process one; the flags are merged after every round of
  ``world_size`` batches.

Only rank 0 writes files and shows progress bars; the other ranks wait at a barrier.

Example:
    >>> ctx = setup()                  # Context(world_size=1, rank=0) outside torchrun
    >>> local = ctx.shard(torch.arange(10))
"""

from __future__ import annotations

import atexit
import logging
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Context", "setup", "rank_seed"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _reduce(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    """All-reduce ``t`` (returned on its own device), through a device the process group supports.

    The group started by :func:`setup` takes CPU and CUDA tensors; a caller's NCCL-only group
    takes CUDA tensors only, so CPU tensors then travel through the current CUDA device.
    """
    work = t.cuda() if t.device.type == "cpu" and str(dist.get_backend()) == "nccl" else t.clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM if op is None else op)
    return work.to(t.device)


@dataclass(frozen=True)
class Context:
    """This process's place in a data-parallel run (world_size 1: a plain single-process run).

    Attributes:
        world_size: number of processes.
        rank: this process, in ``[0, world_size)``; rank 0 writes files.
        local_rank: this process on its node (its CUDA device index).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when several processes share the work."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and shows progress."""
        return self.rank == 0

    # --- devices and models -----------------------------------------------------------------
    def device(self, device: torch.device) -> torch.device:
        """This rank's device: a CUDA device becomes ``cuda:LOCAL_RANK`` in a multi-process run."""
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``DistributedDataParallel(model)`` in a multi-process run, else ``model`` itself.

        Use the wrapper only for the forward pass of the weight update; attacks take the
        unwrapped model (they differentiate the input only, so no gradient sync is involved).
        """
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids else None)

    # --- sharding --------------------------------------------------------------------------
    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch of indices (sizes differ by at most 1)."""
        if not self.enabled:
            return idx
        return torch.tensor_split(idx, self.world_size)[self.rank]

    def loss_scale(self, local_n: int, global_n: int) -> float:
        """Factor that makes DDP's gradient average equal the gradient of the global mean loss.

        DDP averages the ranks' gradients; rank r's loss is a mean over its ``local_n``
        examples, so it is scaled by ``local_n * world_size / global_n``. 1.0 in a
        single-process run (the update is then bit-identical to an unscaled one).
        """
        if not self.enabled or global_n == 0:
            return 1.0
        return local_n * self.world_size / global_n

    def owns(self, batch_index: int) -> bool:
        """True if batch ``batch_index`` of an evaluation runs on this rank (round robin)."""
        return batch_index % self.world_size == self.rank

    # --- collectives (no-ops in a single-process run) -------------------------------------------
    def sum(self, *values: float) -> tuple:
        """Sums of ``values`` over the ranks (in float64; ints come back as ints)."""
        if not self.enabled:
            return values
        t = _reduce(torch.tensor([float(v) for v in values], dtype=torch.float64))
        return tuple(int(round(s)) if isinstance(v, numbers.Integral) else s for v, s in zip(values, t.tolist()))

    def all(self, flags: torch.Tensor) -> torch.Tensor:
        """Elementwise AND of a bool tensor over the ranks (same shape and device)."""
        if not self.enabled:
            return flags
        return _reduce(flags.to(torch.int32), dist.ReduceOp.MIN).bool()

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        """Elementwise OR of a bool tensor over the ranks (same shape and device)."""
        if not self.enabled:
            return flags
        return _reduce(flags.to(torch.int32), dist.ReduceOp.MAX).bool()

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` (any picklable value) on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, indexed by rank, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank.

        An exception raised by ``fn`` is raised on every rank, so no rank is left
        waiting in a collective.
        """
        if not self.enabled:
            return fn()
        result: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                result = (True, fn())
            except Exception as err:  # noqa: BLE001  (re-raised below, on every rank)
                result = (False, err)
        ok, value = self.broadcast(result)
        if not ok:
            raise value
        return value

    def check_same(self, value: Any, what: str) -> None:
        """Raise ValueError on every rank unless ``value`` is equal on all ranks."""
        if not self.enabled:
            return
        values = self.gather(value)
        if any(v != values[0] for v in values):
            raise ValueError(
                f"the ranks disagree on {what}: {values} (index = rank). Every rank must see the same "
                "data and the same files: on several nodes, put the run folder on storage shared by all "
                "nodes and pass the same arguments everywhere."
            )


def setup() -> Context:
    """The data-parallel context of this process, starting the process group if torchrun asks for one.

    Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the default process group is
    initialized once, from the environment, with backend ``"cpu:gloo,cuda:nccl"`` when CUDA is
    available and ``"gloo"`` otherwise, and destroyed at exit. A process group that the caller
    initialized already is used as it is. Outside torchrun: ``Context()`` (one process).

    Raises:
        ValueError: ``WORLD_SIZE > 1`` but torchrun's other variables are missing, or ``WORLD_SIZE`` /
            ``LOCAL_RANK`` is not a whole number.
    """
    if not dist.is_available():
        return Context()
    local_rank = _env_int("LOCAL_RANK")
    if dist.is_initialized():
        return Context(dist.get_world_size(), dist.get_rank(), local_rank)
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return Context()
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} is set but {', '.join(missing)} are not: start multi-process runs "
            "with torchrun, e.g. `torchrun --nproc_per_node=2 -m robustopt train ...`."
        )
    use_cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if use_cuda and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)  # so that "cuda" means this rank's GPU from here on
    backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend)
    atexit.register(_teardown)
    ctx = Context(dist.get_world_size(), dist.get_rank(), local_rank)
    logger.info("process group started: backend %s, rank %d of %d", backend, ctx.rank, ctx.world_size)
    return ctx


def _env_int(name: str, default: int = 0) -> int:
    """The whole number in environment variable ``name`` (``default`` when unset or empty)."""
    text = os.environ.get(name, "").strip()
    try:
        return int(text) if text else default
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number; unset it, or start multi-process runs with "
                         "torchrun, which sets it.") from None


def _teardown() -> None:
    if _initialized():
        dist.destroy_process_group()


def data_key(x: torch.Tensor, y: torch.Tensor) -> tuple:
    """Cheap, order-sensitive summary of ``(x, y)``, to check that all ranks hold the same data."""
    step = max(1, x.numel() // 4096)
    sample = x.detach().reshape(-1)[::step].double()
    pos = torch.arange(1, len(y) + 1, device=y.device, dtype=torch.float64)
    return (tuple(x.shape), round(float((sample * torch.arange(1, len(sample) + 1, device=x.device)).sum()), 6),
            int((y.double() * pos).sum().item()))


def resume_rng_states(state: dict[str, Any], ctx: Context, fresh: dict[str, Any]) -> dict[str, Any]:
    """The RNG states this rank restores from a training checkpoint's ``extra`` dict ``state``.

    A checkpoint holds rank 0's states under ``"rng"`` (the single-process format) and, from
    a multi-process run, every rank's under ``"rng_ranks"``. Rank 0 always takes ``"rng"``;
    another rank takes its own entry when the world size is the one the checkpoint was
    written with. Otherwise it keeps its ``fresh`` (newly seeded) attack and dropout
    generators and takes only the shared shuffle state; the run then continues correctly
    but not bit for bit like an uninterrupted one, which is logged as a warning.
    """
    saved_world = int(state.get("world_size", 1))
    if saved_world != ctx.world_size and ctx.is_main:
        logger.warning("resuming a run written by %d process(es) with %d: the per-rank random starts and "
                       "dropout masks are reseeded, so the result will not match an uninterrupted run bit for bit",
                       saved_world, ctx.world_size)
    if ctx.is_main:
        return state["rng"]
    per_rank = state.get("rng_ranks") or []
    if saved_world == ctx.world_size and len(per_rank) == ctx.world_size:
        return per_rank[ctx.rank]
    return {**fresh, "shuffle": state["rng"]["shuffle"]}


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s private random stream; rank 0 keeps ``seed`` (so one process is unchanged)."""
    if rank == 0:
        return seed
    state = np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1
