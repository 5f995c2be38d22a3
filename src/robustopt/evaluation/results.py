"""The result of an evaluation as typed data: its rows, the per-example flags, the threat model.

Tables are views of it (:meth:`Evaluation.table`), JSON files its ``to_dict`` form. A row
carries integer counts (examples accurate and robust under it, out of the total); the
accuracies are their ratios. ``from_dict`` reads the files of every robustopt version: files
written before the counts and the threat model were stored hold fractions and keep the
threat model in ``meta`` or in the rows' attack configurations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from robustopt._io import atomic_write_json, atomic_write_text
from robustopt.attacks.base import WHITE_BOX_SOURCE, attack_key
from robustopt.evaluation.tables import render
from robustopt.threat import ThreatModel

__all__ = ["Row", "Evaluation", "DrawAccuracy", "row_key", "NATURAL"]

NATURAL = "Natural"  # the name of the clean row, the first of every evaluation


@dataclass
class Row:
    """One line of the results table.

    Attributes:
        name: attack name ("Natural", "FGSM", "PGD", "CW+", ...): a label for tables, never an identity
            (that is :attr:`key`).
        steps / restarts: attack budget (None for the natural row).
        source: model the attack differentiates: "A" (white box) or a transfer source name (a transfer
            source named "A" too is shown as "A (transfer)" in tables).
        accurate: examples classified correctly under this attack alone ("independent"), or under
            this attack and all earlier ones ("cascade").
        robust: examples that this and every earlier attack failed to break.
        total: examples in the evaluation.
        attacked: number of examples this attack was run on.
        grad_evals: forward+backward passes through the differentiated model.
        seconds: wall time of the row.
        attack: the attack's configuration (``Attack.describe()``; {} for the natural row).
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
    accurate: int
    robust: int
    total: int
    attacked: int = 0
    grad_evals: int = 0
    seconds: float = 0.0
    attack: dict[str, Any] = field(default_factory=dict)
    forwards: int = 0
    records: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """``accurate / total``, in [0, 1]."""
        return self.accurate / self.total if self.total else 0.0

    @property
    def worst_case(self) -> float:
        """``robust / total``: the accuracy under this and all earlier attacks, in [0, 1]."""
        return self.robust / self.total if self.total else 0.0

    @property
    def key(self) -> str | None:
        """The registry key of the row's attack ("pgd", "transfer", ...); None for the natural row."""
        return attack_key(self.attack)

    @property
    def natural(self) -> bool:
        """Whether this is the clean row: the one without an attack."""
        return not self.attack

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the accuracies included for readers; :meth:`from_dict` recomputes them)."""
        return {**asdict(self), "accuracy": self.accuracy, "worst_case": self.worst_case}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], total: int) -> Row:
        """The inverse of :meth:`to_dict`; also reads rows written before the counts were stored.

        Args:
            d: the row's dict.
            total: examples in the evaluation (what an older row's fractions are fractions of).
        """
        d = dict(d)
        accuracy, worst_case = d.pop("accuracy", None), d.pop("worst_case", None)
        if "accurate" not in d:  # an older file: fractions of ``total``, each an exact count / total
            d.update(accurate=round(accuracy * total), robust=round(worst_case * total), total=total)
        if d.get("attack"):
            d["attack"] = _with_keys(d["attack"])
        return cls(**d)


def _with_keys(description: Mapping[str, Any]) -> dict[str, Any]:
    """An attack description with its registry key, also where it was written before the key was stored."""
    out = dict(description)
    if "key" not in out and (key := attack_key(out)) is not None:
        out = {"key": key, **out}
    if isinstance(out.get("attack"), Mapping):  # a transfer attack's inner attack
        out["attack"] = _with_keys(out["attack"])
    return out


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

    Attributes:
        rows: the natural row, then one per attack.
        correct: bool (N,): the clean prediction is right.
        robust: bool (N,): no attack broke the example.
        mode: "cascade" or "independent".
        seed: the evaluation's seed.
        meta: JSON-ready information about the run (data, timings, machine, ...).
        draws: the accuracy over repeated draws of a randomized model's randomness (None for a
            deterministic model).
        threat: the threat model of the attacks (None where it is unknown: an evaluation read from
            a file whose norm is not imported).
    """

    rows: list[Row]
    correct: torch.Tensor
    robust: torch.Tensor
    mode: str
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    draws: DrawAccuracy | None = None
    threat: ThreatModel | None = None

    @property
    def n(self) -> int:
        return int(self.correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return int(self.correct.sum()) / self.n if self.n else 0.0

    @property
    def robust_accuracy(self) -> float:
        return int(self.robust.sum()) / self.n if self.n else 0.0

    def cells(self, reference: dict[tuple, float] | None = None) -> tuple[list[str], list[list[str]], str]:
        """The paper-style table as strings: its header, one line per row then the worst case (the last line),
        its caption.

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
        caption = (
            f"{self.n} examples, mode={self.mode}"
            + (" (each row: accuracy under that attack and all rows above it)" if self.mode == "cascade" else " (each row: that attack alone)")
            + (f", threat {self.threat}" if self.threat is not None else "")
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
        return render(header, lines, fmt, footer=1, caption=caption) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the accuracies and ``n`` included for readers; :meth:`from_dict` recomputes them)."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "n": self.n,
            "mode": self.mode,
            "seed": self.seed,
            "threat": self.threat.to_dict() if self.threat is not None else None,
            "meta": self.meta,
            "rows": [r.to_dict() for r in self.rows],
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
    def from_dict(cls, d: Mapping[str, Any]) -> Evaluation:
        """The inverse of ``to_dict``; also reads the files of earlier robustopt versions."""
        correct = torch.tensor(d["correct"], dtype=torch.bool)
        meta = dict(d.get("meta") or {})
        threat = d["threat"] if "threat" in d else _legacy_threat(meta, d["rows"])
        return cls(
            rows=[Row.from_dict(r, total=len(correct)) for r in d["rows"]],
            correct=correct,
            robust=torch.tensor(d["robust"], dtype=torch.bool),
            mode=d["mode"],
            seed=d["seed"],
            meta=meta,
            draws=DrawAccuracy(**d["draws"]) if d.get("draws") else None,
            threat=_threat_or_none(threat),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> Evaluation:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a robustopt evaluation JSON file ({err}).") from err


def _threat_or_none(d: Any) -> ThreatModel | None:
    """The threat model of a ``to_dict()``; None for none, or for a norm whose class is not imported here."""
    if not isinstance(d, Mapping):
        return None
    try:
        return ThreatModel.from_dict(d)
    except ValueError:  # a norm of one's own, defined where the file was written
        return None


def _legacy_threat(meta: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> Any:
    """The threat-model dict of a file written before it was stored beside the rows.

    Such files hold it in ``meta["threat"]``, or (older still) only as a string there; then the
    first attack row's configuration holds the exact one (a transfer attack: its inner attack's).
    """
    if isinstance(meta.get("threat"), Mapping):
        return meta["threat"]
    for r in rows:
        spec = r.get("attack") or {}
        spec = spec.get("attack", spec) if "threat" not in spec else spec
        if isinstance(spec, Mapping) and isinstance(spec.get("threat"), Mapping):
            return spec["threat"]
    return None


def row_key(row: Row) -> tuple:
    """Key that identifies a row across runs: (name, steps, restarts, source as the table shows it)."""
    return (row.name, row.steps, row.restarts, _source_label(row))


def _source_label(row: Row) -> str:
    """The Source cell: the row's source, marked as a transfer source where its name is the white-box one ("A")."""
    return f"{row.source} (transfer)" if row.key == "transfer" and row.source == WHITE_BOX_SOURCE else row.source


def _blank(v: Any) -> str:
    return "" if v is None else str(v)
