"""bench/allocator.py: one throughput subprocess per allocator, missing allocators skipped, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_package import bench_script

allocator = bench_script("allocator")


def test_measures_each_allocator_in_its_own_process_and_skips_missing_ones(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(allocator.LIBRARIES, "missing", "no-such-allocator-lib")
    report = allocator.main(["--quick", "--allocators", "glibc,glibc-tuned,missing", "--threads", "1",
                             "--out", str(tmp_path / "a")])
    assert report["skipped"] == ["missing"] and [r["allocator"] for r in report["rows"]] == ["glibc", "glibc-tuned"]
    row, tuned = report["rows"]
    assert row["limit"]["evals_per_second"] > 0 and row["robustopt"]["evals_per_second"] > 0
    assert (tmp_path / "a" / "glibc-1.json").is_file()  # the subprocess's own throughput result
    # the tuned subprocess calls ro.tune_malloc() first (its effect on page faults: tests/test_malloc.py)
    tuned_run = json.loads((tmp_path / "a" / "glibc-tuned-1.json").read_text())
    assert tuned_run["command"].endswith("--malloc tuned") and "--malloc" not in json.loads(
        (tmp_path / "a" / "glibc-1.json").read_text())["command"]
    md = (tmp_path / "a.md").read_text()
    assert "| glibc |" in md and "skipped: missing" in md


def test_unknown_allocator_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--allocators: a subset of glibc"):
        allocator.main(["--quick", "--allocators", "mimalloc", "--out", str(tmp_path / "a")])


def test_a_count_below_one_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        allocator.main(["--rounds", "0", "--out", str(tmp_path / "a")])
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()
