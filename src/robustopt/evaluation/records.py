"""Per-example records of the attacks that explain their decisions, and the per-stage budget they add up to.

Most attacks only return points and costs. Some also say, per example, why their search
ended (``APGD(early_exit=True)``, ``Square(early_exit=True)``: ``AttackResult.notes``) and,
per call, what they decided (``AdaptiveAutoAttack``: ``AttackResult.summary``, its stages).
``evaluate`` keeps these in the attack's row, ``Row.records``:

* ``examples``: one list per note, one entry per evaluated example (None where the attack
  did not run on it), plus the example's ``grad_evals`` and ``forwards``;
* ``batches``: the summary of each batch's call, in order.

``stage_budget`` adds the stages of the batches up, ``budget_table`` shows them: what
``robustopt eval --suite adaptive`` prints and the report shows.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal

import torch

from robustopt.attacks.base import AttackResult
from robustopt.evaluation.tables import render

__all__ = ["batch_records", "RowRecords", "stage_budget", "budget_cells", "budget_table", "broken_by_stage"]


def _plain(values: torch.Tensor) -> list:
    """A tensor as a JSON-ready list: floats to 4 significant digits, NaN as None."""
    out = values.tolist()
    if values.is_floating_point():
        out = [None if math.isnan(v) else _significant(v, 4) for v in out]
    return out


def _significant(v: float, digits: int) -> float:
    """``v`` rounded to ``digits`` significant digits (0 and infinities as they are)."""
    if v == 0 or not math.isfinite(v):
        return v
    return round(v, digits - 1 - math.floor(math.log10(abs(v))))


def batch_records(idx: torch.Tensor, result: AttackResult) -> dict[str, Any] | None:
    """What a batch's result adds to its row's records (JSON-ready), or None if the attack records nothing."""
    if not result.notes and result.summary is None:
        return None
    examples = {key: _plain(v) for key, v in result.notes.items()}
    for key, v in (("grad_evals", result.grad_evals_per_example), ("forwards", result.forwards_per_example)):
        if v is not None:
            examples[key] = _plain(v)
    return {"idx": idx.tolist(), "examples": examples, "summary": result.summary}


class RowRecords:
    """The records of one row, filled batch by batch (see the module docstring).

    Args:
        n: examples in the evaluation.
        saved: the ``to_dict()`` of an interrupted evaluation's row, to continue.
    """

    def __init__(self, n: int, saved: dict[str, Any] | None = None) -> None:
        self.n = n
        self.examples: dict[str, list] = dict((saved or {}).get("examples", {}))
        self.batches: list[Any] = list((saved or {}).get("batches", []))

    def add(self, items: Iterable[dict[str, Any] | None]) -> None:
        """Add the ``batch_records`` of the batches of a round (None: a batch without records)."""
        for item in items:
            if item is None:
                continue
            for key, values in item["examples"].items():
                column = self.examples.setdefault(key, [None] * self.n)
                for i, v in zip(item["idx"], values):
                    column[i] = v
            if item["summary"] is not None:
                self.batches.append(item["summary"])

    def to_dict(self) -> dict[str, Any]:
        """``{"examples": ..., "batches": ...}``, or {} when no batch recorded anything."""
        return {"examples": self.examples, "batches": self.batches} if self.examples or self.batches else {}


def _rows_with_stages(rows: Iterable[Any]) -> list[Any]:
    return [r for r in rows if any(isinstance(b, dict) and "stages" in b for b in (r.records or {}).get("batches", []))]


def stage_budget(row: Any) -> list[dict[str, Any]]:
    """The stages of a scheduled attack's row, added up over its batches.

    Returns:
        One dict per stage: name, attacked, broken, grad_evals, forwards, seconds, the outcome
        counts per example (``outcomes``: e.g. {"broken": 3, "stalled": 40}) and ``decisions``
        (the sampling decision of each batch, where the stage samples).
    """
    out: dict[str, dict[str, Any]] = {}
    for batch in (row.records or {}).get("batches", []):
        for st in batch.get("stages", []):
            acc = out.setdefault(st["name"], {"name": st["name"], "attacked": 0, "broken": 0, "grad_evals": 0,
                                               "forwards": 0, "seconds": 0.0, "decisions": []})
            for key in ("attacked", "broken", "grad_evals", "forwards", "seconds"):
                acc[key] += st.get(key, 0)
            if "why" in st:
                acc["decisions"].append(st["why"])
    examples = (row.records or {}).get("examples", {})
    names = next((b["outcomes"] for b in row.records.get("batches", []) if "outcomes" in b), None) if row.records else None
    for name, acc in out.items():
        codes = examples.get(name, [])
        acc["outcomes"] = {}
        if names:
            for c in codes:
                if c is not None and c != 0:  # 0: not run
                    acc["outcomes"][names[c]] = acc["outcomes"].get(names[c], 0) + 1
    return list(out.values())


def broken_by_stage(row: Any) -> dict[str, int]:
    """How many examples each stage of a scheduled attack's row broke ("clean": misclassified as they are)."""
    records = row.records or {}
    names = next((b["broken_by"] for b in records.get("batches", []) if "broken_by" in b), None)
    counts: dict[str, int] = {}
    for c in records.get("examples", {}).get("broken_by", []):
        if c is not None and c >= 0 and names:
            counts[names[c]] = counts.get(names[c], 0) + 1
    return counts


def budget_cells(ev: Any) -> list[tuple[str, list[str], list[list[str]], list[str]]]:
    """The per-stage budget of every scheduled attack in an evaluation, as strings.

    Returns:
        Per scheduled row: its title, the table's header and lines (the stage, the examples it
        attacked and broke, its gradient evaluations and forward passes in total and per
        evaluated example, its seconds, how its examples ended), and the sampling decisions.
    """
    n = max(ev.n, 1)
    out = []
    for row in _rows_with_stages(ev.rows):
        stages = stage_budget(row)
        header = ["Stage", "Attacked", "Broken", "Grad evals", "Forwards", "Grad/pt", "Fwd/pt", "Seconds", "Ended"]
        lines = []
        for st in stages:
            ended = ", ".join(f"{k} {v}" for k, v in sorted(st["outcomes"].items()))
            lines.append([st["name"], str(st["attacked"]), str(st["broken"]), f"{st['grad_evals']:,}", f"{st['forwards']:,}",
                          f"{st['grad_evals'] / n:.1f}", f"{st['forwards'] / n:.1f}", f"{st['seconds']:.1f}", ended])
        # what the schedule spends outside its stages: its clean pass, its checks, its target scores
        extra = [row.grad_evals - sum(st["grad_evals"] for st in stages), row.forwards - sum(st["forwards"] for st in stages),
                 row.seconds - sum(st["seconds"] for st in stages)]
        if extra[0] or extra[1]:
            lines.append(["Schedule", "", "", f"{extra[0]:,}", f"{extra[1]:,}", f"{extra[0] / n:.1f}", f"{extra[1] / n:.1f}",
                          f"{max(extra[2], 0.0):.1f}", "clean pass, checks, target scores"])
        lines.append(["Total", "", "", f"{row.grad_evals:,}", f"{row.forwards:,}", f"{row.grad_evals / n:.1f}",
                      f"{row.forwards / n:.1f}", f"{row.seconds:.1f}", ""])
        decisions = [f"{st['name']}, batch {k + 1}: {why}" for st in stages for k, why in enumerate(st["decisions"])]
        out.append((f"Budget per stage of {row.name} ({ev.n} examples; per point = per evaluated example)",
                    header, lines, decisions))
    return out


def budget_table(ev: Any, fmt: Literal["text", "markdown"] = "text") -> str:
    """``budget_cells`` as text for the terminal or Markdown ("" when no attack has stages)."""
    out: list[str] = []
    for title, header, lines, decisions in budget_cells(ev):
        if fmt == "markdown":
            out += [f"**{title}**", "", render(header, lines, fmt), ""] + [f"- {d}" for d in decisions]
        else:
            out += [title, render(header, lines, fmt)] + [f"  {d}" for d in decisions]
        out.append("")
    return "\n".join(out)
