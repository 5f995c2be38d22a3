"""bench/throughput.py: --resume keeps earlier rows (with their own repetitions) and refuses other settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
throughput = pytest.importorskip("throughput")

BASE = ["--quick", "--models", "madry-mnist", "--tools", "limit,robustopt", "--norms", "linf", "--threads", "1"]


def test_resume_keeps_earlier_rows_with_their_repetitions(tmp_path: Path) -> None:
    out = tmp_path / "tp"
    first = throughput.main([*BASE, "--batch-sizes", "8", "--reps", "1", "--out", str(out)])
    second = throughput.main([*BASE, "--batch-sizes", "8,16", "--reps", "2", "--resume", "--out", str(out)])

    rows = {m["batch"]: m for m in second["measurements"]}
    assert sorted(rows) == [8, 16]
    assert rows[8]["reps"] == 1 and rows[8]["tools"] == first["measurements"][0]["tools"]  # reused, not remeasured
    assert rows[16]["reps"] == 2 and len(rows[16]["tools"]["robustopt"]["seconds"]) == 2
    if Path("/proc/stat").exists():  # what else ran during the timed calls is recorded with the row
        assert rows[16]["others_cores"] >= 0 and rows[16]["steal_cores"] >= 0
    assert second["earlier_sessions"][0]["started_utc"] == first["started_utc"]
    md = (tmp_path / "tp.md").read_text()
    assert "| norm | eps | steps | batch | reps | limit | robustopt |" in md  # mixed repetitions get a column


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "tp"
    throughput.main([*BASE, "--batch-sizes", "8", "--reps", "1", "--out", str(out)])
    with pytest.raises(SystemExit, match="other settings"):
        throughput.main([*BASE, "--batch-sizes", "8", "--reps", "1", "--seed", "1", "--resume", "--out", str(out)])
