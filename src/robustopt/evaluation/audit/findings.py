"""What the audit finds: one :class:`Finding` per sign of trouble, its level, and how findings read.

Levels: "error" means the reported robustness is very likely wrong; "warning" means it is
suspicious; "info" is context that explains a pattern which looks odd but is expected.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from robustopt.evaluation.tables import render

__all__ = ["Finding", "Level", "LEVELS", "findings_table", "findings_summary"]

Level = Literal["error", "warning", "info"]
LEVELS: tuple[str, ...] = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One result of the audit.

    Attributes:
        level: "error" (the robustness number is very likely wrong), "warning" (suspicious)
            or "info" (context).
        code: stable identifier, e.g. "zero-gradient".
        message: plain-language explanation: what was seen, what it means, what to try.
        details: the numbers behind it (JSON-ready).
    """

    level: Level
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: level, code, message, details."""
        return {"level": self.level, "code": self.code, "message": self.message, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        """The inverse of :meth:`to_dict`."""
        return cls(d["level"], d["code"], d["message"], dict(d.get("details") or {}))


def findings_table(findings: Iterable[Finding], fmt: Literal["text", "markdown"] = "text", width: int = 100) -> str:
    """The findings as a readable list: level, code, then the wrapped message.

    Args:
        findings: what ``audit`` returned.
        fmt: "text" for the terminal, "markdown" for reports.
        width: line width of the text format.
    """
    findings = list(findings)
    if not findings:
        return findings_summary(findings) + "\n"
    if fmt == "markdown":
        rows = [[f.level, f"`{f.code}`", f.message.replace("|", "/")] for f in findings]
        return render(["Level", "Code", "Finding"], rows, fmt, caption=findings_summary(findings)) + "\n"
    if fmt != "text":
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}.")
    out = []
    for f in findings:
        out.append(f"{f.level.upper():<8}{f.code}")
        out.append(textwrap.fill(f.message, width=width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(out) + f"\n{findings_summary(findings)}\n"


def findings_summary(findings: Iterable[Finding]) -> str:
    """One line: "Audit: no problems found." or the count per level, e.g. "Audit: 1 error, 0 warning, 0 info."."""
    findings = list(findings)
    if not findings:
        return "Audit: no problems found."
    return "Audit: " + ", ".join(f"{sum(f.level == lv for f in findings)} {lv}" for lv in LEVELS) + "."
