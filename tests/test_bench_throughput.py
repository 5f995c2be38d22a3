"""bench/throughput.py: --resume keeps earlier rows (with their own repetitions, through an
interruption) and refuses other settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_package import bench_script

throughput = bench_script("throughput")

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


def test_an_interrupted_resume_keeps_the_earlier_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "tp"
    throughput.main([*BASE, "--batch-sizes", "8", "--reps", "1", "--out", str(out)])
    measure, calls = throughput.measure, []

    def measure_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while measuring the second new row
        return measure(*args, **kwargs)

    monkeypatch.setattr(throughput, "measure", measure_then_die)
    with pytest.raises(KeyboardInterrupt):
        throughput.main([*BASE, "--batch-sizes", "16,32", "--reps", "1", "--resume", "--out", str(out)])
    saved = json.loads((tmp_path / "tp.json").read_text())
    assert sorted(m["batch"] for m in saved["measurements"]) == [8, 16]  # the earlier row and the new one
    assert [e["key"] for e in saved["subjects"]] == ["madry-mnist"]
    assert "| 8 |" in (tmp_path / "tp.md").read_text() and "| 16 |" in (tmp_path / "tp.md").read_text()


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "tp"
    throughput.main([*BASE, "--batch-sizes", "8", "--reps", "1", "--out", str(out)])
    with pytest.raises(SystemExit, match="other settings"):
        throughput.main([*BASE, "--batch-sizes", "8", "--reps", "1", "--seed", "1", "--resume", "--out", str(out)])
