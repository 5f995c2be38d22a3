"""Robustness evaluation: a list of attacks run as a cascade, reported as the per-example worst case.

Every attack starts from the clean input. In ``"cascade"`` mode (AutoAttack's
``run_standard_evaluation``) an attack only runs on the examples that every
earlier attack failed to break, which is the cheap way to get the worst case.
In ``"independent"`` mode every attack runs on all correctly classified
examples, so each row is that attack's own accuracy, as in the tables of
Madry et al. (2018); the worst case is still reported. An example counts as
broken when the model misclassifies the adversarial input, which is checked
here, on the evaluated model, for every attack (targeted and transfer included).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustopt._io import atomic_write_json, atomic_write_text
from robustopt.attacks.base import Attack, check_batch, eval_mode, predict

__all__ = ["Row", "Evaluation", "evaluate"]

Mode = Literal["cascade", "independent"]


@dataclass
class Row:
    """One line of the results table.

    Attributes:
        name: attack name ("Natural", "FGSM", "PGD", "CW+", ...).
        steps / restarts: attack budget (None for the natural row).
        source: model the attack differentiates: "A" (white box) or a transfer source name.
        accuracy: accuracy under this attack alone ("independent"), or under this
            attack and all earlier ones ("cascade"), in [0, 1].
        worst_case: accuracy under this and all earlier attacks, in [0, 1].
        attacked: number of examples this attack was run on.
        grad_evals: forward+backward passes through the differentiated model.
        seconds: wall time of the row.
        attack: the attack's configuration (JSON-ready).
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


@dataclass
class Evaluation:
    """Result of ``evaluate``: typed data; tables are views of it."""

    rows: list[Row]
    correct: torch.Tensor  # bool (N,): clean prediction is right
    robust: torch.Tensor  # bool (N,): no attack broke the example
    mode: str
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.correct.float().mean()) if self.n else 0.0

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean()) if self.n else 0.0

    def table(self, fmt: Literal["text", "markdown"] = "text", reference: dict[tuple, float] | None = None) -> str:
        """The paper-style table: Method | Steps | Restarts | Source | Accuracy (| Paper).

        Args:
            fmt: "text" for the terminal, "markdown" for files.
            reference: optional numbers to show beside ours, keyed by ``row_key(row)``, in percent.
        """
        header = ["Method", "Steps", "Restarts", "Source", "Accuracy"]
        if reference is not None:
            header.append("Paper")
        lines = []
        for r in self.rows:
            cells = [r.name, _blank(r.steps), _blank(r.restarts), r.source, f"{100 * r.accuracy:.1f}%"]
            if reference is not None:
                ref = reference.get(row_key(r))
                cells.append("" if ref is None else f"{ref:.1f}%")
            lines.append(cells)
        lines.append(["Worst case (all rows)", "", "", "", f"{100 * self.robust_accuracy:.1f}%"] + ([""] if reference is not None else []))
        caption = (
            f"{self.n} examples, mode={self.mode}"
            + (" (each row: accuracy under that attack and all rows above it)" if self.mode == "cascade" else " (each row: that attack alone)")
            + (f", threat {self.meta['threat']}" if "threat" in self.meta else "")
        )
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
        }

    def to_json(self, path: str | Path) -> Path:
        """Write the evaluation (numbers as numbers, per-example flags included) atomically."""
        return atomic_write_json(path, self.to_dict())

    def to_markdown(self, path: str | Path, reference: dict[tuple, float] | None = None) -> Path:
        return atomic_write_text(path, self.table("markdown", reference=reference))

    @classmethod
    def from_json(cls, path: str | Path) -> "Evaluation":
        try:
            d = json.loads(Path(path).read_text())
            return cls(
                rows=[Row(**r) for r in d["rows"]],
                correct=torch.tensor(d["correct"], dtype=torch.bool),
                robust=torch.tensor(d["robust"], dtype=torch.bool),
                mode=d["mode"],
                seed=d["seed"],
                meta=d.get("meta", {}),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a robustopt evaluation JSON file ({err}).") from err


def row_key(row: Row) -> tuple:
    """Key that identifies a row across runs: (name, steps, restarts, source)."""
    return (row.name, row.steps, row.restarts, row.source)


def _blank(v: Any) -> str:
    return "" if v is None else str(v)


def _as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1]
    if isinstance(data, Iterable):
        xs, ys = [], []
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise TypeError("each batch of data must be an (x, y) pair of tensors.")
            xs.append(batch[0])
            ys.append(batch[1])
        if not xs:
            raise ValueError("data is empty: pass at least one example.")
        return torch.cat(xs), torch.cat(ys)
    raise TypeError(f"data must be an (x, y) pair of tensors or an iterable of (x, y) batches, got {type(data).__name__}.")


def _batch_generator(device: torch.device, seed: int, attack_index: int, batch_index: int) -> torch.Generator:
    # One independent, reproducible stream per (seed, attack, batch).
    state = np.random.SeedSequence([seed, attack_index, batch_index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) >> 1)


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
) -> Evaluation:
    """Evaluate ``model`` against ``attacks``; the reported robust accuracy is the per-example worst case.

    Args:
        model: maps inputs in [0, 1] to logits; evaluated in eval mode, its mode restored after.
        data: ``(x, y)`` tensors or an iterable of ``(x, y)`` batches (x in the attacks' bounds).
        attacks: the rows, e.g. ``ro.suites.madry(ro.Linf(0.3))``; each starts from the clean input.
        batch_size: examples per attack call.
        seed: makes every random start reproducible (one generator per attack and batch).
        mode: "cascade" (attack only what is still robust) or "independent" (rows are each attack alone).
        progress: show a progress bar.
        meta: extra JSON-ready information stored with the result.

    Returns:
        Evaluation with rows, per-example ``correct`` and ``robust`` flags and ``table()``.

    Example:
        >>> ev = evaluate(model, (x, y), [FGSM(Linf(0.3)), PGD(Linf(0.3), steps=40)])
        >>> print(ev.table())
    """
    if mode not in ("cascade", "independent"):
        raise ValueError(f"mode must be 'cascade' or 'independent', got {mode!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    for a in attacks:
        if not isinstance(a, Attack):
            raise TypeError(f"every attack must be a robustopt Attack (e.g. ro.attacks.PGD(...)), got {a!r}.")
    x, y = _as_tensors(data)
    check_batch(x, y, attacks[0].threat if attacks else None)
    y = y.long()
    n = len(x)
    batches = lambda idx: [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]  # noqa: E731

    def misclassified(x_adv: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with eval_mode(model), torch.no_grad():
            return predict(model, x_adv).argmax(1) != yb

    start = time.perf_counter()
    correct = torch.zeros(n, dtype=torch.bool, device=x.device)
    for b in batches(torch.arange(n, device=x.device)):
        correct[b] = ~misclassified(x[b], y[b])
    robust = correct.clone()
    rows = [Row("Natural", None, None, "", float(correct.float().mean()), float(correct.float().mean()),
                attacked=n, seconds=time.perf_counter() - start)]

    total = sum(len(batches(correct.nonzero().squeeze(1))) for _ in attacks)
    bar = tqdm(total=total, desc="evaluate", unit="batch", disable=not progress, leave=False)
    for i, attack in enumerate(attacks):
        t0 = time.perf_counter()
        todo = (robust if mode == "cascade" else correct).nonzero().squeeze(1)
        survived = correct.clone()
        grad_evals = 0
        bar.set_description(f"{attack.name} ({attack.source})")
        for j, idx in enumerate(batches(todo)):
            result = attack.run(model, x[idx], y[idx], generator=_batch_generator(x.device, seed, i, j))
            inside = attack.threat.contains(result.x_adv, x[idx])
            if not inside.all():
                raise ValueError(
                    f"attack {attack.name} returned {int((~inside).sum())} points outside its threat model "
                    f"{attack.threat}; its result cannot count. This is a bug in that attack."
                )
            survived[idx] = ~misclassified(result.x_adv, y[idx])
            grad_evals += result.grad_evals
            bar.update(1)
        if mode == "cascade":
            survived &= robust
        robust &= survived
        bar.update(len(batches(correct.nonzero().squeeze(1))) - len(batches(todo)))
        rows.append(Row(
            attack.name, attack.steps, attack.restarts, attack.source,
            accuracy=float(survived.float().mean()), worst_case=float(robust.float().mean()),
            attacked=len(todo), grad_evals=grad_evals, seconds=time.perf_counter() - t0,
            attack=attack.describe(),
        ))
    bar.close()

    info = {
        "threat": str(attacks[0].threat) if attacks else None,
        "seconds": time.perf_counter() - start,
        "batch_size": batch_size,
        "torch": torch.__version__,
        "device": str(x.device),
        "machine": platform.platform(),
    }
    info.update(meta or {})
    return Evaluation(rows=rows, correct=correct.cpu(), robust=robust.cpu(), mode=mode, seed=seed, meta=info)
