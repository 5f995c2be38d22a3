"""Robustness evaluation: a list of attacks run as a cascade, reported as the per-example worst case.

Every attack starts from the clean input. In ``"cascade"`` mode (AutoAttack's
``run_standard_evaluation``) an attack only runs on the examples that every
earlier attack failed to break, which is the cheap way to get the worst case.
In ``"independent"`` mode every attack runs on all correctly classified
examples, so each row is that attack's own accuracy, as in the tables of
Madry et al. (2018); the worst case is still reported. An example counts as
broken when the model misclassifies the adversarial input, which is checked
here, on the evaluated model, for every attack (targeted and transfer included).

A long evaluation can be made resumable with ``progress_file``: after every
finished batch the state is written there atomically, a later call with the same
file continues where the interrupted one stopped, and the result is the one an
uninterrupted run gives (every random start comes from a generator seeded by
(seed, attack index, batch index), so redone and skipped work cannot shift it).
The file itself is :mod:`robustopt.evaluation.progress`; the result types are in
:mod:`robustopt.evaluation.results`.
"""

from __future__ import annotations

import functools
import numbers
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import torch
from torch import nn

from robustopt._checks import warn_eps
from robustopt._io import json_ready
from robustopt._progress import progress_bar
from robustopt.attacks.base import Attack
from robustopt.attacks.checks import check_batch
from robustopt.attacks.passes import RANDOM_DRAWS, is_randomized
from robustopt.data.formats import streamed
from robustopt.evaluation import progress as resume
from robustopt.evaluation._cascade import AttackPass, Cascade, seeded_generator
from robustopt.evaluation.records import RowRecords
from robustopt.evaluation.results import NATURAL, DrawAccuracy, Evaluation, Row, row_key

__all__ = ["evaluate", "saved_progress", "RANDOM_DRAWS", "check_seed",
           # defined in robustopt.evaluation.results, re-exported for the code that imports them from here
           "Row", "Evaluation", "DrawAccuracy", "row_key"]


Mode = Literal["cascade", "independent"]


def _as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` as one ``(x, y)`` pair: a pair of tensors, or the batches of an iterable concatenated.

    Each batch is checked on its own (a tensor pair of equal lengths), so that no label is paired
    with another batch's image.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1]
    if isinstance(data, tuple) and len(data) > 2 and all(isinstance(t, torch.Tensor) for t in data):
        raise TypeError(f"data is a tuple of {len(data)} tensors; pass (x, y): images and labels.")
    labels = data[1] if isinstance(data, (tuple, list)) and len(data) == 2 else None
    if isinstance(labels, (tuple, list)) and labels and all(isinstance(t, torch.Tensor) and t.dim() == 0 for t in labels):
        raise TypeError("data is a pair of lists of tensors; pass tensors, e.g. (torch.stack(xs), torch.stack(ys)), "
                        "or an iterable of (x, y) batches.")
    if isinstance(data, (torch.Tensor, str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise TypeError(f"data must be an (x, y) pair of tensors or an iterable of (x, y) batches, "
                        f"got {type(data).__name__}.")
    xs, ys = [], []
    for k, batch in enumerate(data):
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2
                and isinstance(batch[0], torch.Tensor) and isinstance(batch[1], torch.Tensor)):
            raise TypeError(f"batch {k} of data is not an (x, y) pair of tensors (got {type(batch).__name__}); "
                            "each batch must hold images x (N, ...) and labels y (N,).")
        bx, by = batch[0], batch[1]
        if bx.dim() < 2 or by.dim() != 1 or len(bx) != len(by):
            raise ValueError(f"batch {k} of data has x of shape {tuple(bx.shape)} and y of shape {tuple(by.shape)}; "
                             "each batch needs one label per image: x (N, ...) and y (N,).")
        xs.append(bx)
        ys.append(by)
    if not xs:
        raise ValueError("data is empty: pass at least one example.")
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as err:
        raise ValueError(f"the batches of data do not fit together ({err}); every batch needs images of one "
                         "shape, dtype and device.") from None


def check_seed(seed: Any) -> None:
    """Raise ValueError unless ``seed`` is a whole number >= 0 (it seeds numpy's SeedSequence)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}.")


def _check_one_threat(attacks: Sequence[Attack]) -> None:
    """Raise ValueError unless every attack has the same ball (norm, eps, bounds): the worst case is over one set."""
    balls = {(a.threat.norm, a.threat.eps, tuple(a.threat.bounds)) for a in attacks}
    if len(balls) > 1:
        shown = ", ".join(dict.fromkeys(f"{a.name}: {a.threat}" for a in attacks))
        raise ValueError(f"the attacks use {len(balls)} threat models ({shown}); a worst case over them would "
                         "mix radii. Evaluate each threat model on its own, or use ro.sweep for several eps.")


def _as_attacks(attacks: Any) -> list[Attack]:
    """``attacks`` as a list: a sequence or any iterable of attacks, or a single attack (one row)."""
    if isinstance(attacks, Attack):
        return [attacks]
    if isinstance(attacks, (str, bytes, Mapping)) or not isinstance(attacks, Iterable):
        raise TypeError(f"attacks must be a robustopt Attack or a list of them (e.g. [ro.attacks.PGD(...)]), "
                        f"got {type(attacks).__name__}.")
    attacks = list(attacks)
    for a in attacks:
        if not isinstance(a, Attack):
            raise TypeError(f"every attack must be a robustopt Attack (e.g. ro.attacks.PGD(...)), got {a!r}.")
    return attacks


def _batch_generator(device: torch.device, seed: int, attack_index: int, batch_index: int) -> torch.Generator:
    # One independent, reproducible stream per (seed, attack, batch).
    return seeded_generator(device, seed, attack_index, batch_index)


def evaluate(
    model: nn.Module,
    data: Any,
    attacks: Sequence[Attack],
    *,
    batch_size: int = 500,
    seed: int = 0,
    mode: Mode = "cascade",
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    progress_file: str | Path | None = None,
    start_from: Evaluation | None = None,
    draws: int | None = None,
) -> Evaluation:
    """Evaluate ``model`` against ``attacks``; the reported robust accuracy is the per-example worst case.

    Args:
        model: maps inputs in [0, 1] to logits; evaluated in eval mode, its mode restored after.
        data: ``(x, y)`` tensors, an iterable of ``(x, y)`` batches (x in the attacks' bounds), or
            data read batch by batch as it is attacked, so that memory is bounded by the batch: a
            map-style ``Dataset`` of ``(image, label)`` items (e.g. ``ro.data.load("folder:PATH")``),
            a ``DataLoader`` that reads one in order, or a :class:`robustopt.data.formats.Streamed`
            (which also picks the device). Datasets that know their files (``dataset.path(i)``)
            leave each example's file in ``meta["paths"]``.
        attacks: the rows, e.g. ``ro.suites.madry(ro.Linf(0.3))`` (a list, any iterable, or one attack),
            all with one threat model; each starts from the clean input.
        batch_size: examples per attack call, and the most any attack runs on at once (the adaptive
            schedule takes ``pool`` examples per call and runs them in batches of this: ``Attack.call_size``).
        seed: a whole number >= 0; makes every random start reproducible (one generator per attack and batch).
        mode: "cascade" (attack only what is still robust) or "independent" (rows are each attack alone).
        progress: show a progress bar.
        meta: extra JSON-ready information stored with the result.
        progress_file: makes the evaluation resumable (e.g. ``run / "eval-madry.progress.json"``).
            After every finished batch the state (per-example flags, the attack and batch reached,
            the finished rows, counters) is written there atomically. If the file exists, the
            evaluation continues from it instead of starting over, and gives the same rows and
            per-example flags as an uninterrupted run; ``grad_evals`` count each batch once,
            ``seconds`` add up the sessions (the work of an interrupted batch is redone and its
            time is not counted). The file is deleted when the evaluation completes. It records a
            fingerprint of the job: the attacks' configurations and the weights of every model
            involved (sums and strided samples of the state_dict tensors, so no full hash), the
            data (shapes and a strided sample of x, all of y), mode, seed, batch_size; a file
            written for another job is refused (``ProgressFileError``), never silently mixed in.
        start_from: a finished evaluation of this model and data (same mode, seed and batch size)
            whose attacks are the first ones of ``attacks``: its rows and flags are kept and only
            the later attacks run, e.g. transfer rows added to the white-box rows. The result is
            the one a single run of all ``attacks`` gives: an attack's random stream depends on
            its position. A saved state in ``progress_file`` takes precedence.
        draws: forward passes that judge each clean and adversarial point, for a randomized model:
            an example is misclassified when most of them are wrong, and ``Evaluation.draws``
            holds the robust accuracy per draw (its mean and spread). None: ``RANDOM_DRAWS`` when
            two forward passes on the same inputs differ (the probe of ``ro.audit``'s
            ``randomized-output``), else 1 (one pass, and ``Evaluation.draws`` is None).

    Under ``torchrun`` (several processes, see :mod:`robustopt.distributed`) every process
    must pass the same model, data and arguments; batch ``j`` of each attack runs on rank
    ``j % world_size`` with batch ``j``'s generator, the flags are merged after every round
    of batches, and the result on every rank is, example by example, the single-process one.
    Only rank 0 writes ``progress_file``.

    Returns:
        Evaluation with rows, per-example ``correct`` and ``robust`` flags and ``table()``.

    Raises:
        ValueError: bad arguments, no examples or no attacks, attacks of different threat models,
            labels that are not classes of the model, a batch whose x and y differ in length, a model
            output with NaN or Inf, an eps beyond the input box (a larger eps than the box's diameter
            is a unit mistake; EpsWarning above half of it, see :mod:`robustopt._checks`), an attack
            leaving its threat model.
        ProgressFileError: a ``progress_file`` that is unreadable or belongs to another evaluation
            (a ValueError; delete the file to start over).

    Example:
        >>> ev = evaluate(model, (x, y), [FGSM(Linf(0.3)), PGD(Linf(0.3), steps=40)])
        >>> print(ev.table())
    """
    if mode not in ("cascade", "independent"):
        raise ValueError(f"mode must be 'cascade' or 'independent', got {mode!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    check_seed(seed)
    attacks = _as_attacks(attacks)
    if not attacks:
        raise ValueError("attacks is empty: pass at least one attack (a generator of attacks is used up by the "
                         "first evaluation that reads it).")
    _check_one_threat(attacks)
    stream = streamed(data)
    if stream is not None and len(stream) == 0:
        raise ValueError("data holds no examples: pass at least one (x, y) pair to evaluate.")
    if stream is not None:  # x stands in for the images: each batch is read (and checked) when attacked
        x, y = stream, stream.labels()
        check_batch(stream.sample(), y[: min(len(y), 16)], attacks[0].threat if attacks else None)
    else:
        x, y = _as_tensors(data)
        check_batch(x, y, attacks[0].threat if attacks else None)
    y = y.long()
    n = len(x)
    if n == 0:
        raise ValueError("data holds no examples: pass at least one (x, y) pair to evaluate.")
    for threat in dict.fromkeys(a.threat for a in attacks):  # each distinct threat once, in order
        warn_eps(threat, x.shape[1:])
    if draws is None:  # a randomized model's points are judged over several draws
        probe = stream.sample() if stream is not None else x[: min(n, 32)]  # no wider than a batch
        draws = RANDOM_DRAWS if is_randomized(model, probe[:batch_size]) else 1
    elif isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer or None, got {draws!r}.")
    # Under torchrun, batch j runs on rank j % world_size with batch j's generator and the
    # flags are merged after every round: the result is the single-process one, example by example.
    core = Cascade(model, x, y, batch_size, "the evaluation data", draws=draws)
    ctx = core.ctx
    progress_path = Path(progress_file) if progress_file is not None else None
    job = resume.job_fingerprint(model, x, y, attacks, mode=mode, seed=seed, batch_size=batch_size) if progress_path else None
    state = ctx.run_on_main(lambda: resume.load(progress_path, job, n=n, n_attacks=len(attacks))) if progress_path else None

    start = time.perf_counter()
    if state is None:
        correct = core.clean()
        robust = correct.clone()
        clean = int(correct.sum())
        rows = [Row(NATURAL, None, None, "", clean, clean, n, attacked=n, seconds=time.perf_counter() - start)]
        first_attack, earlier_seconds, sessions = 0, 0.0, 1
        if start_from is not None:
            _check_prefix(start_from, attacks, correct, mode=mode, seed=seed, batch_size=batch_size)
            robust, rows = start_from.robust.to(x.device).clone(), list(start_from.rows)
            first_attack, earlier_seconds = len(rows) - 1, float(start_from.meta.get("seconds", 0.0))
    else:
        correct, robust = state["correct"].to(x.device), state["robust"].to(x.device)
        if core.fooled is not None and state["fooled"]:
            core.fooled = resume.unpack_flags(state["fooled"], n * draws).view(n, draws).to(core.fooled.device)
        rows = state["rows"]
        first_attack, earlier_seconds, sessions = state["attack"], state["seconds"], state["sessions"] + 1

    for i, attack in enumerate(attacks):
        if i < first_attack:
            continue
        t0 = time.perf_counter()
        if state is not None and i == first_attack:
            # Continue the attack in progress: same examples, same flags, same counters.
            todo = state["todo"].to(x.device).nonzero().squeeze(1)
            step = AttackPass(core.batches(todo, attack), state["survived"].to(x.device), done=state["batch"],
                              grad_evals=state["grad_evals"], forwards=state["forwards"])
            attack_seconds, records = state["attack_seconds"], RowRecords(n, state["records"])
        else:
            todo = (robust if mode == "cascade" else correct).nonzero().squeeze(1)
            step = AttackPass(core.batches(todo, attack), correct.clone())
            attack_seconds, records = 0.0, RowRecords(n)
        # One display per attack (row), counting the images it attacks.
        bar = progress_bar(len(todo), f"{attack.name} ({attack.source})", "image", enabled=progress and ctx.is_main,
                           leave=False)
        bar.update(sum(len(b) for b in step.batches[: step.done]))  # done before an interruption
        generator = functools.partial(_batch_generator, x.device, seed, i)  # batch j -> its stream
        def report(stage: str, bar: Any = bar) -> None:  # a call longer than a batch: what it is doing
            bar.set_postfix(stage=stage)
            bar.refresh()

        for finished, recorded in core.rounds(attack, step, generator, records=True, report=report):
            records.add(recorded)
            if progress_path is not None and ctx.is_main:
                now = time.perf_counter()
                resume.save(progress_path, {
                    "format": resume.FORMAT, "version": resume.VERSION, "job": job, "n": n,
                    "sessions": sessions, "seconds": earlier_seconds + now - start,
                    "correct": resume.pack_flags(correct), "robust": resume.pack_flags(robust),
                    "rows": [r.to_dict() for r in rows], "attack": i, "batch": step.done,
                    "todo": resume.pack_flags(resume.mask(todo, n)), "survived": resume.pack_flags(step.survived), "grad_evals": step.grad_evals,
                    "attack_seconds": attack_seconds + now - t0, "forwards": step.forwards,
                    "records": records.to_dict(),
                    "fooled": None if core.fooled is None else resume.pack_flags(core.fooled.flatten()),
                })
            bar.update(sum(len(step.batches[k]) for k in finished))
        survived = step.survived
        if mode == "cascade":
            survived &= robust
        robust &= survived
        bar.close()
        rows.append(Row(
            attack.name, attack.steps, attack.restarts, attack.source, int(survived.sum()), int(robust.sum()), n,
            attacked=len(todo), grad_evals=step.grad_evals, seconds=attack_seconds + time.perf_counter() - t0,
            attack=attack.describe(), forwards=step.forwards, records=records.to_dict(),
        ))

    info = {
        "seconds": earlier_seconds + time.perf_counter() - start,
        "batch_size": batch_size,
        "torch": torch.__version__,
        "device": str(x.device),
        "machine": platform.platform(),
    }
    if progress_path is not None:
        info["sessions"] = sessions
    if ctx.enabled:
        info["world_size"] = ctx.world_size
    if stream is not None and (paths := stream.paths()) is not None:
        info["paths"] = paths  # which file each per-example flag belongs to
    info.update(meta or {})
    ev = Evaluation(rows=rows, correct=correct.cpu(), robust=robust.cpu(), mode=mode, seed=seed, meta=info,
                    threat=attacks[0].threat)
    if core.fooled is not None:
        ev.draws = DrawAccuracy(draws, (~core.fooled).float().mean(dim=0).tolist())
    if progress_path is not None and ctx.is_main:
        progress_path.unlink(missing_ok=True)
    return ev


def _check_prefix(prior: Evaluation, attacks: Sequence[Attack], correct: torch.Tensor, *, mode: str, seed: int,
                  batch_size: int) -> None:
    """Raise ValueError unless ``prior`` is the evaluation of the first attacks of this one."""
    done = [r.attack for r in prior.rows[1:]]
    wanted = json_ready([a.describe() for a in attacks[: len(done)]])  # as read back from JSON
    differ = [what for what, same in (
        ("examples", prior.n == len(correct)), ("mode", prior.mode == mode), ("seed", prior.seed == seed),
        ("batch size", prior.meta.get("batch_size") == batch_size),
        ("attacks", len(done) <= len(attacks) and json_ready(done) == wanted),
        ("clean predictions", prior.n == len(correct) and torch.equal(prior.correct.cpu(), correct.cpu())),
    ) if not same]
    if differ:
        raise ValueError(f"start_from is not an earlier part of this evaluation (different {', '.join(differ)}); "
                         "evaluate without it.")


def saved_progress(progress_file: str | Path, model: nn.Module, data: Any, attacks: Any, *, mode: Mode = "cascade",
                   seed: int = 0, batch_size: int = 500) -> dict[str, int] | None:
    """Where :func:`evaluate` with these arguments would resume from ``progress_file``, without running it.

    Lets a caller announce a resumption only once the file is known to be usable.

    Returns:
        None when there is no such file; else ``{"attack": index of the attack in progress,
        "batch": its next batch, "sessions": the sessions so far}``.

    Raises:
        ProgressFileError: the file is unreadable or holds the progress of another evaluation, as
            :func:`evaluate` would raise.
    """
    path = Path(progress_file)
    if not path.exists():
        return None
    attacks = _as_attacks(attacks)
    stream = streamed(data)
    x, y = (stream, stream.labels()) if stream is not None else _as_tensors(data)
    y = y.long()
    job = resume.job_fingerprint(model, x, y, attacks, mode=mode, seed=seed, batch_size=batch_size)
    state = resume.load(path, job, n=len(x), n_attacks=len(attacks))
    return None if state is None else {k: state[k] for k in ("attack", "batch", "sessions")}


