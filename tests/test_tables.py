"""Tests of the one table renderer and of the views that use it: every table robustopt writes has
the same shape, and the committed Markdown tables are reproduced byte for byte from their JSON.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from robustopt.evaluation import Evaluation
from robustopt.evaluation.audit import Finding, findings_table
from robustopt.evaluation.records import budget_table
from robustopt.evaluation.tables import markdown_cell, render

ROOT = Path(__file__).resolve().parents[1]


def test_text_pads_columns_two_spaces_apart_under_a_rule():
    text = render(["a", "Long header"], [["wide cell", "1"], ["x", "22"]])
    assert text.splitlines() == ["a          Long header", "-" * 22, "wide cell  1", "x          22"]
    right = render(["a", "Long header"], [["wide cell", "1"], ["x", "22"]], align="right")
    assert right.splitlines()[2:] == ["wide cell            1", "        x           22"]


def test_footer_rows_are_set_off_by_a_second_rule_and_the_caption_follows():
    text = render(["Method", "Acc"], [["PGD", "90%"], ["Worst", "89%"]], footer=1, caption="2 rows")
    assert text.splitlines() == ["Method  Acc", "-" * 11, "PGD     90%", "-" * 11, "Worst   89%", "2 rows"]
    assert not any(line != line.rstrip() for line in text.splitlines())  # no trailing spaces


def test_markdown_is_a_pipe_table_with_escaped_cells():
    md = render(["a", "b"], [["x|y", "two\nlines"], [1, None]], "markdown", caption="cap")
    assert md == "| a | b |\n|---|---|\n| x\\|y | two lines |\n| 1 | None |\n\ncap"
    assert markdown_cell("a|b\nc") == "a\\|b c"


def test_bad_requests_say_what_to_pass():
    with pytest.raises(ValueError, match="fmt must be"):
        render(["a"], [["1"]], "html")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="align must be"):
        render(["a"], [["1"]], align="center")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one cell per column"):
        render(["a", "b"], [["1"]])
    with pytest.raises(ValueError, match="footer"):
        render(["a"], [["1"]], footer=2)


@pytest.mark.parametrize("folder", ["zoo/mnist-pgd-linf", "zoo/cifar10-natural"])
def test_committed_markdown_tables_are_reproduced_from_their_json(folder):
    ev = Evaluation.from_json(ROOT / folder / "eval-adaptive.json")
    committed = (ROOT / folder / "eval-adaptive.md").read_text()
    assert committed.startswith(ev.table("markdown"))
    assert budget_table(ev, "markdown").strip() in committed


def test_findings_table_markdown_uses_the_renderer():
    fs = [Finding("error", "zero-gradient", "a|b"), Finding("info", "x", "c")]
    md = findings_table(fs, fmt="markdown")
    assert md.startswith("| Level | Code | Finding |\n|---|---|---|\n| error | `zero-gradient` | a/b |\n| info | `x` | c |\n\n")
    assert md.endswith("Audit: 1 error, 0 warning, 1 info.\n")
