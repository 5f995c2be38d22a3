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
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import numbers
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from robustopt._checks import warn_eps
from robustopt.data.formats import Streamed, streamed
from robustopt._io import atomic_write_json, atomic_write_text, json_default
from robustopt._progress import progress_bar
from robustopt.attacks.base import WHITE_BOX_SOURCE, Attack, check_batch, is_randomized
from robustopt.evaluation._cascade import AttackPass, Cascade, seeded_generator
from robustopt.evaluation.records import RowRecords
from robustopt.threat import ThreatModel

__all__ = ["Row", "Evaluation", "DrawAccuracy", "evaluate", "RANDOM_DRAWS"]

RANDOM_DRAWS = 10  # forward passes that judge each point of a randomized model

Mode = Literal["cascade", "independent"]


@dataclass
class Row:
    """One line of the results table.

    Attributes:
        name: attack name ("Natural", "FGSM", "PGD", "CW+", ...).
        steps / restarts: attack budget (None for the natural row).
        source: model the attack differentiates: "A" (white box) or a transfer source name (a transfer
            source named "A" too is shown as "A (transfer)" in tables).
        accuracy: accuracy under this attack alone ("independent"), or under this
            attack and all earlier ones ("cascade"), in [0, 1].
        worst_case: accuracy under this and all earlier attacks, in [0, 1].
        attacked: number of examples this attack was run on.
        grad_evals: forward+backward passes through the differentiated model.
        seconds: wall time of the row.
        attack: the attack's configuration (JSON-ready).
        forwards: forward-only passes (queries, clean passes) the attack reports, like ``grad_evals``
            through the model it differentiates (a transfer attack's source model).
        records: what the attack recorded per example and per batch, for attacks that explain
            their decisions (e.g. the adaptive suite's stages); {} otherwise. See
            :mod:`robustopt.evaluation.records`.
    """

    name: str
    steps: int | None
    restarts: int | None
    source: str
    accuracy: float
    worst_case: float
    attacked: int = 0
    grad_evals: int = 0
    seconds: float = 0.0
    attack: dict[str, Any] = field(default_factory=dict)
    forwards: int = 0
    records: dict[str, Any] = field(default_factory=dict)


@dataclass
class DrawAccuracy:
    """Robust accuracy of a randomized model over repeated draws of its randomness.

    Every point (clean or adversarial) is classified ``draws`` times; an example's worst point is
    the one wrong in the most draws. ``per_draw[d]`` is the share of the examples whose worst point
    is right in draw ``d``. ``Evaluation.robust`` counts an example as broken when its worst point
    is wrong in most draws.

    Attributes:
        draws: forward passes per point, each a new draw.
        per_draw: the robust accuracy under each draw, in [0, 1].
    """

    draws: int
    per_draw: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_draw)) if self.per_draw else 0.0

    @property
    def std(self) -> float:
        """The spread over the draws (sample standard deviation; 0 for one draw)."""
        return float(np.std(self.per_draw, ddof=1)) if len(self.per_draw) > 1 else 0.0

    def describe(self) -> str:
        return (f"randomized model: robust accuracy over {self.draws} draws {100 * self.mean:.1f}% "
                f"± {100 * self.std:.1f}% (an example is broken when its point fools the model in most draws)")


@dataclass
class Evaluation:
    """Result of ``evaluate``: typed data; tables are views of it.

    ``draws`` holds the accuracy over repeated draws of a randomized model's randomness (None
    for a deterministic model).
    """

    rows: list[Row]
    correct: torch.Tensor  # bool (N,): clean prediction is right
    robust: torch.Tensor  # bool (N,): no attack broke the example
    mode: str
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    draws: DrawAccuracy | None = None

    @property
    def n(self) -> int:
        return int(self.correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.correct.float().mean()) if self.n else 0.0

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean()) if self.n else 0.0

    @property
    def threat(self) -> ThreatModel | None:
        """The threat model of the attacks (the first one's), or None for an evaluation without attacks.

        ``meta["threat"]`` holds it as ``ThreatModel.to_dict()``. Files written before hold its
        string form ("Linf(eps=0.3)", eps to 4 digits): then the rows' exact configuration is read.
        """
        saved = self.meta.get("threat")
        candidates = [saved]
        for r in self.rows:
            spec = r.attack if isinstance(r.attack, Mapping) else {}
            if "threat" not in spec and isinstance(spec.get("attack"), Mapping):
                spec = spec["attack"]  # Transfer: the inner attack's threat
            candidates.append(spec.get("threat"))
        for d in candidates:
            if isinstance(d, Mapping):
                with contextlib.suppress(ValueError, TypeError):  # a norm whose class is not imported here
                    return ThreatModel.from_dict(d)
        with contextlib.suppress(ValueError):
            return ThreatModel.parse(saved) if isinstance(saved, str) else None
        return None

    def cells(self, reference: dict[tuple, float] | None = None) -> tuple[list[str], list[list[str]], str]:
        """The paper-style table as strings: its header, one line per row and the worst case, its caption.

        Args:
            reference: optional numbers to show beside ours, keyed by ``row_key(row)``, in percent.
        """
        header = ["Method", "Steps", "Restarts", "Source", "Accuracy"]
        if reference is not None:
            header.append("Paper")
        lines = []
        for r in self.rows:
            cells = [r.name, _blank(r.steps), _blank(r.restarts), _source_label(r), f"{100 * r.accuracy:.1f}%"]
            if reference is not None:
                ref = reference.get(row_key(r))
                cells.append("" if ref is None else f"{ref:.1f}%")
            lines.append(cells)
        lines.append(["Worst case (all rows)", "", "", "", f"{100 * self.robust_accuracy:.1f}%"] + ([""] if reference is not None else []))
        threat = self.threat
        caption = (
            f"{self.n} examples, mode={self.mode}"
            + (" (each row: accuracy under that attack and all rows above it)" if self.mode == "cascade" else " (each row: that attack alone)")
            + (f", threat {threat}" if threat is not None else "")
            + (f"; {self.draws.describe()}" if self.draws is not None else "")
        )
        return header, lines, caption

    def table(self, fmt: Literal["text", "markdown"] = "text", reference: dict[tuple, float] | None = None) -> str:
        """The paper-style table: Method | Steps | Restarts | Source | Accuracy (| Paper).

        Args:
            fmt: "text" for the terminal, "markdown" for files.
            reference: optional numbers to show beside ours, keyed by ``row_key(row)``, in percent.
        """
        header, lines, caption = self.cells(reference)
        if fmt == "markdown":
            out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            out += ["| " + " | ".join(str(c) for c in cells) + " |" for cells in lines]
            return "\n".join(out) + f"\n\n{caption}\n"
        widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
        fmt_line = "  ".join("{:<%d}" % w for w in widths)
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [fmt_line.format(*header), rule] + [fmt_line.format(*map(str, cells)) for cells in lines[:-1]]
        out += [rule, fmt_line.format(*map(str, lines[-1]))]
        return "\n".join(out) + f"\n{caption}\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the accuracies and ``n`` included for readers; :meth:`from_dict` recomputes them)."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "n": self.n,
            "mode": self.mode,
            "seed": self.seed,
            "meta": self.meta,
            "rows": [asdict(r) for r in self.rows],
            "correct": self.correct.int().tolist(),
            "robust": self.robust.int().tolist(),
            "draws": asdict(self.draws) if self.draws is not None else None,
        }

    def to_json(self, path: str | Path) -> Path:
        """Write the evaluation (numbers as numbers, per-example flags included) atomically."""
        return atomic_write_json(path, self.to_dict())

    def to_markdown(self, path: str | Path, reference: dict[tuple, float] | None = None) -> Path:
        return atomic_write_text(path, self.table("markdown", reference=reference))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Evaluation":
        """The inverse of ``to_dict``."""
        return cls(
            rows=[Row(**r) for r in d["rows"]],
            correct=torch.tensor(d["correct"], dtype=torch.bool),
            robust=torch.tensor(d["robust"], dtype=torch.bool),
            mode=d["mode"],
            seed=d["seed"],
            meta=d.get("meta", {}),
            draws=DrawAccuracy(**d["draws"]) if d.get("draws") else None,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "Evaluation":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a robustopt evaluation JSON file ({err}).") from err


def row_key(row: Row) -> tuple:
    """Key that identifies a row across runs: (name, steps, restarts, source as the table shows it)."""
    return (row.name, row.steps, row.restarts, _source_label(row))


def _source_label(row: Row) -> str:
    """The Source cell: the row's source, marked as a transfer source where its name is the white-box one ("A")."""
    transfer = isinstance(row.attack, Mapping) and row.attack.get("type") == "Transfer"
    return f"{row.source} (transfer)" if transfer and row.source == WHITE_BOX_SOURCE else row.source


def _blank(v: Any) -> str:
    return "" if v is None else str(v)


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
        batch_size: examples per attack call.
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
            written for another job is refused (ValueError), never silently mixed in.
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
            leaving its threat model, or a ``progress_file`` that is unreadable or belongs to another
            evaluation (delete it to start over).

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
        warn_eps(threat.norm, threat.eps, x.shape[1:], threat.bounds)
    if draws is None:  # a randomized model's points are judged over several draws
        draws = RANDOM_DRAWS if is_randomized(model, stream.sample() if stream is not None else x[: min(n, 32)]) else 1
    elif isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer or None, got {draws!r}.")
    # Under torchrun, batch j runs on rank j % world_size with batch j's generator and the
    # flags are merged after every round: the result is the single-process one, example by example.
    core = Cascade(model, x, y, batch_size, "the evaluation data", draws=draws)
    ctx = core.ctx
    progress_path = Path(progress_file) if progress_file is not None else None
    job = _job_fingerprint(model, x, y, attacks, mode=mode, seed=seed, batch_size=batch_size) if progress_path else None
    state = ctx.run_on_main(lambda: _load_progress(progress_path, job, n=n, n_attacks=len(attacks))) if progress_path else None

    start = time.perf_counter()
    if state is None:
        correct = core.clean()
        robust = correct.clone()
        rows = [Row("Natural", None, None, "", float(correct.float().mean()), float(correct.float().mean()),
                    attacked=n, seconds=time.perf_counter() - start)]
        first_attack, earlier_seconds, sessions = 0, 0.0, 1
        if start_from is not None:
            _check_prefix(start_from, attacks, correct, mode=mode, seed=seed, batch_size=batch_size)
            robust, rows = start_from.robust.to(x.device).clone(), list(start_from.rows)
            first_attack, earlier_seconds = len(rows) - 1, float(start_from.meta.get("seconds", 0.0))
    else:
        correct, robust = state["correct"].to(x.device), state["robust"].to(x.device)
        if core.fooled is not None and state["fooled"]:
            core.fooled = _unpack_flags(state["fooled"], n * draws).view(n, draws).to(core.fooled.device)
        rows = state["rows"]
        first_attack, earlier_seconds, sessions = state["attack"], state["seconds"], state["sessions"] + 1

    for i, attack in enumerate(attacks):
        if i < first_attack:
            continue
        t0 = time.perf_counter()
        if state is not None and i == first_attack:
            # Continue the attack in progress: same examples, same flags, same counters.
            todo = state["todo"].to(x.device).nonzero().squeeze(1)
            step = AttackPass(core.batches(todo), state["survived"].to(x.device), done=state["batch"],
                              grad_evals=state["grad_evals"], forwards=state["forwards"])
            attack_seconds, records = state["attack_seconds"], RowRecords(n, state["records"])
        else:
            todo = (robust if mode == "cascade" else correct).nonzero().squeeze(1)
            step = AttackPass(core.batches(todo), correct.clone())
            attack_seconds, records = 0.0, RowRecords(n)
        # One display per attack (row), counting the images it attacks.
        bar = progress_bar(len(todo), f"{attack.name} ({attack.source})", "image", enabled=progress and ctx.is_main,
                           leave=False)
        bar.update(sum(len(b) for b in step.batches[: step.done]))  # done before an interruption
        generator = functools.partial(_batch_generator, x.device, seed, i)  # batch j -> its stream
        for finished, recorded in core.rounds(attack, step, generator, records=True):
            records.add(recorded)
            if progress_path is not None and ctx.is_main:
                now = time.perf_counter()
                _save_progress(progress_path, {
                    "format": _PROGRESS_FORMAT, "version": _PROGRESS_VERSION, "job": job, "n": n,
                    "sessions": sessions, "seconds": earlier_seconds + now - start,
                    "correct": _pack_flags(correct), "robust": _pack_flags(robust), "rows": [asdict(r) for r in rows],
                    "attack": i, "batch": step.done, "todo": _pack_flags(_mask(todo, n)),
                    "survived": _pack_flags(step.survived), "grad_evals": step.grad_evals,
                    "attack_seconds": attack_seconds + now - t0, "forwards": step.forwards,
                    "records": records.to_dict(),
                    "fooled": None if core.fooled is None else _pack_flags(core.fooled.flatten()),
                })
            bar.update(sum(len(step.batches[k]) for k in finished))
        survived = step.survived
        if mode == "cascade":
            survived &= robust
        robust &= survived
        bar.close()
        rows.append(Row(
            attack.name, attack.steps, attack.restarts, attack.source,
            accuracy=float(survived.float().mean()), worst_case=float(robust.float().mean()),
            attacked=len(todo), grad_evals=step.grad_evals, seconds=attack_seconds + time.perf_counter() - t0,
            attack=attack.describe(), forwards=step.forwards, records=records.to_dict(),
        ))

    info = {
        "threat": attacks[0].threat.to_dict() if attacks else None,
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
    ev = Evaluation(rows=rows, correct=correct.cpu(), robust=robust.cpu(), mode=mode, seed=seed, meta=info)
    if core.fooled is not None:
        ev.draws = DrawAccuracy(draws, (~core.fooled).float().mean(dim=0).tolist())
    if progress_path is not None and ctx.is_main:
        progress_path.unlink(missing_ok=True)
    return ev


def _check_prefix(prior: Evaluation, attacks: Sequence[Attack], correct: torch.Tensor, *, mode: str, seed: int,
                  batch_size: int) -> None:
    """Raise ValueError unless ``prior`` is the evaluation of the first attacks of this one."""
    done = [r.attack for r in prior.rows[1:]]
    wanted = json.loads(json.dumps([a.describe() for a in attacks[: len(done)]]))  # as read back from JSON
    differ = [what for what, same in (
        ("examples", prior.n == len(correct)), ("mode", prior.mode == mode), ("seed", prior.seed == seed),
        ("batch size", prior.meta.get("batch_size") == batch_size),
        ("attacks", len(done) <= len(attacks) and json.loads(json.dumps(done)) == wanted),
        ("clean predictions", prior.n == len(correct) and torch.equal(prior.correct.cpu(), correct.cpu())),
    ) if not same]
    if differ:
        raise ValueError(f"start_from is not an earlier part of this evaluation (different {', '.join(differ)}); "
                         "evaluate without it.")


# --- resumable evaluation: the progress file -----------------------------------------

_PROGRESS_FORMAT = "robustopt-evaluation-progress"
_PROGRESS_VERSION = 1


def _tensor_digest(h: Any, t: torch.Tensor, samples: int, with_sum: bool) -> None:
    """Feed shape, dtype, a strided sample (exact bytes) and optionally the sum of ``t`` into ``h``."""
    t = t.detach()
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return
    step = -(-flat.numel() // samples)
    sample = flat[::step].cpu().contiguous()
    h.update(sample.view(torch.uint8).numpy().tobytes())
    if with_sum:
        # The sum sees every element; printed to 9 digits so that resuming on another
        # device, whose reduction order may differ in the last bits, still matches.
        h.update(f"|{float(flat.double().sum()):.9g}".encode())


def _module_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            _tensor_digest(h, t, samples=256, with_sum=True)
    return h.hexdigest()[:16]


def _attack_identity(attack: Attack) -> dict[str, Any]:
    """An attack's describe() plus a digest of every model it holds (e.g. a transfer source)."""
    out: dict[str, Any] = {"describe": attack.describe()}
    if dataclasses.is_dataclass(attack):
        for f in dataclasses.fields(attack):
            value = getattr(attack, f.name)
            if isinstance(value, nn.Module):
                out[f.name] = _module_digest(value)
            elif isinstance(value, Attack):
                out[f.name] = _attack_identity(value)
    return out


def _json_key(obj: Any) -> str:
    def fallback(o: Any) -> Any:
        try:
            return json_default(o)
        except TypeError:
            return repr(o)

    return json.dumps(obj, sort_keys=True, default=fallback)


def _job_fingerprint(model: nn.Module, x: torch.Tensor | Streamed, y: torch.Tensor, attacks: Sequence[Attack], *,
                     mode: str, seed: int, batch_size: int) -> dict[str, Any]:
    """What identifies an evaluation job, part by part, so that a mismatch can be named."""
    data = hashlib.sha256()
    _tensor_digest(data, x.sample() if isinstance(x, Streamed) else x, samples=1 << 16, with_sum=False)
    _tensor_digest(data, y, samples=1 << 62, with_sum=False)  # all labels
    attack_ids = hashlib.sha256(_json_key([_attack_identity(a) for a in attacks]).encode())
    return {
        "attacks": attack_ids.hexdigest()[:16],
        "model": _module_digest(model),
        "data": data.hexdigest()[:16],
        "mode": mode,
        "seed": seed,
        "batch_size": batch_size,
        "n": len(x),
    }


def _pack_flags(flags: torch.Tensor) -> str:
    return base64.b64encode(np.packbits(flags.cpu().numpy().astype(np.uint8)).tobytes()).decode("ascii")


def _unpack_flags(text: Any, n: int) -> torch.Tensor:
    if not isinstance(text, str):
        raise TypeError(f"flags must be a base64 string, got {type(text).__name__}")
    raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    if raw.size != (n + 7) // 8:
        raise ValueError(f"flags for {raw.size * 8} examples, expected {n}")
    return torch.from_numpy(np.unpackbits(raw)[:n].astype(bool))


def _mask(idx: torch.Tensor, n: int) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool, device=idx.device)
    m[idx] = True
    return m


def _save_progress(path: Path, state: dict[str, Any]) -> None:
    atomic_write_json(path, state, indent=None)


def saved_progress(progress_file: str | Path, model: nn.Module, data: Any, attacks: Any, *, mode: Mode = "cascade",
                   seed: int = 0, batch_size: int = 500) -> dict[str, int] | None:
    """Where :func:`evaluate` with these arguments would resume from ``progress_file``, without running it.

    Lets a caller announce a resumption only once the file is known to be usable.

    Returns:
        None when there is no such file; else ``{"attack": index of the attack in progress,
        "batch": its next batch, "sessions": the sessions so far}``.

    Raises:
        ValueError: the file is unreadable or holds the progress of another evaluation, as
            :func:`evaluate` would raise.
    """
    path = Path(progress_file)
    if not path.exists():
        return None
    attacks = _as_attacks(attacks)
    stream = streamed(data)
    x, y = (stream, stream.labels()) if stream is not None else _as_tensors(data)
    y = y.long()
    job = _job_fingerprint(model, x, y, attacks, mode=mode, seed=seed, batch_size=batch_size)
    state = _load_progress(path, job, n=len(x), n_attacks=len(attacks))
    return None if state is None else {k: state[k] for k in ("attack", "batch", "sessions")}


def _load_progress(path: Path, job: dict[str, Any], *, n: int, n_attacks: int) -> dict[str, Any] | None:
    """The saved state of ``job`` in ``path``, or None if there is none; ValueError if unusable."""
    if not path.exists():
        return None

    def unreadable(why: Any) -> ValueError:
        return ValueError(
            f"{path} is not a usable robustopt evaluation progress file ({why}). "
            "Delete it to start the evaluation over, or pass another progress_file."
        )

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise unreadable(err) from err
    if not isinstance(raw, dict) or raw.get("format") != _PROGRESS_FORMAT:
        raise unreadable("no progress-file header")
    if raw.get("version") != _PROGRESS_VERSION:
        raise unreadable(f"format version {raw.get('version')!r}, this robustopt writes {_PROGRESS_VERSION}")
    saved_job = raw.get("job")
    if not isinstance(saved_job, dict):
        raise unreadable("no job fingerprint")
    if saved_job != job:
        differ = [k for k in job if saved_job.get(k) != job[k]] or ["fingerprint"]
        raise ValueError(
            f"{path} holds the progress of another evaluation (different {', '.join(differ)}). "
            "Delete it to start this evaluation over, or pass another progress_file."
        )
    try:
        state = {
            "sessions": int(raw["sessions"]),
            "seconds": float(raw["seconds"]),
            "correct": _unpack_flags(raw["correct"], n),
            "robust": _unpack_flags(raw["robust"], n),
            "rows": [Row(**r) for r in raw["rows"]],
            "attack": int(raw["attack"]),
            "batch": int(raw["batch"]),
            "todo": _unpack_flags(raw["todo"], n),
            "survived": _unpack_flags(raw["survived"], n),
            "grad_evals": int(raw["grad_evals"]),
            "attack_seconds": float(raw["attack_seconds"]),
            "forwards": int(raw.get("forwards", 0)),  # absent from files written before these were kept
            "records": dict(raw.get("records") or {}),
            "fooled": raw.get("fooled"),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise unreadable(err) from err
    todo_batches = -(-int(state["todo"].sum()) // job["batch_size"])
    checks = [
        (0 <= state["attack"] < n_attacks, "attack index out of range"),
        (len(state["rows"]) == state["attack"] + 1, "row count does not match the attack index"),
        (0 <= state["batch"] <= todo_batches, "batch index out of range"),
        (not bool((state["robust"] & ~state["correct"]).any()), "robust flags outside the correct ones"),
        (not bool((state["todo"] & ~state["correct"]).any()), "attacked examples outside the correct ones"),
        (not bool((state["survived"] & ~state["correct"]).any()), "survived flags outside the correct ones"),
    ]
    for ok, why in checks:
        if not ok:
            raise unreadable(why)
    return state
