"""bench/step_speed.py: every variant times the same training step, and the safe levers change no number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_package import bench_script

step_speed = bench_script("step_speed")


def test_variants_run_side_by_side_and_the_safe_levers_give_today_s_loss(tmp_path: Path) -> None:
    report = step_speed.main(["--quick", "--threads", "1", "--variants", "single-step,uint8-augment,fold-bn",
                              "--out", str(tmp_path / "s")])
    rows = {r["variant"]: r for r in report["measured"]["rows"]}
    assert list(rows) == ["today", "single-step", "uint8-augment", "fold-bn", "final"]
    for row in rows.values():
        assert row["seconds_per_step"] > 0 and row["images_per_second"] == pytest.approx(2 * 16 / row["seconds_per_step"])
    # the first step of every variant: the same weights and batch, so the same loss (bit for bit where safe)
    today = rows["today"]["first_loss"]
    assert rows["single-step"]["first_loss"] == today and rows["uint8-augment"]["first_loss"] == today
    assert rows["fold-bn"]["first_loss"] == pytest.approx(today, rel=1e-4)
    assert rows["today"]["speedup"] == 1.0 and rows["final"]["kept"]
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["measured"]["rounds_load"][0]["loadavg"] is not None
    assert "| single-step |" in (tmp_path / "s.md").read_text()


def test_an_unknown_variant_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown --variants"):
        step_speed.main(["--quick", "--variants", "warp-drive", "--out", str(tmp_path / "s")])
