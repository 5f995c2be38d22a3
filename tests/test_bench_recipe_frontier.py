"""bench/recipe_frontier.py: one point per run, read on the first N test images; the frontier is the runs no
cheaper run beats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_package import bench_script

recipe_frontier = bench_script("recipe_frontier")


def fake_run(folder: Path, epochs: int, robust: list[bool], **config) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"method": "n-fgsm", "lr": 0.2, "attack_steps": 1, **config}))
    (folder / "log.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "grad_evals": 100, "seconds": 2.0}) + "\n"
                                              for e in range(epochs)))
    n = len(robust)
    (folder / "eval-adaptive.json").write_text(json.dumps({"n": n, "correct": [True] * n, "robust": robust,
                                                           "clean_accuracy": 1.0, "robust_accuracy": sum(robust) / n}))
    return folder


def test_points_on_the_first_n_images_and_the_frontier(tmp_path: Path) -> None:
    short = fake_run(tmp_path / "short", 2, [True, False, False, True])  # 1 of the first 2 robust
    long = fake_run(tmp_path / "long", 4, [True, True, False, False], ema_decay=0.998)  # 2 of 2
    worse = fake_run(tmp_path / "worse", 4, [False, False, True, True], method="pgd", attack_steps=2)
    report = tmp_path / "curves.json"
    report.write_text(json.dumps({"runs": [{"run": "old", "config": {"method": "fgsm-rs"},
                                            "curve": [{"epoch": 1, "grad_evals": 50, "seconds": 1.0}],
                                            "final": {"adaptive": {"n": 2, "clean": 1.0, "robust": 0.0}}}]}))
    out = recipe_frontier.main([str(short), str(long), str(worse), f"{report}#old", "--n", "2",
                                "--seconds-per-million", "3600", "--out", str(tmp_path / "f")])
    points = {Path(p["source"]).name.split("#")[-1]: p for p in out["measured"]["points"]}
    assert points["short"]["grad_evals"] == 200 and points["short"]["seconds"] == 4.0 and points["short"]["robust"] == 0.5
    assert points["long"]["robust"] == 1.0 and points["long"]["recipe"] == "n-fgsm, EMA 0.998"
    assert points["worse"]["recipe"] == "pgd-2" and points["worse"]["robust"] == 0.0
    assert {k: p["on_frontier"] for k, p in points.items()} == {"short": True, "long": True, "worse": False, "old": True}
    md = (tmp_path / "f.md").read_text()
    assert "| n-fgsm, EMA 0.998 | 4 | 0.00 M | 8 s | 100.0% | 100.0% | yes |" in md
    with pytest.raises(ValueError, match="not the adaptive suite on 3 images"):
        recipe_frontier.read_point(f"{report}#old", 3, "adaptive")
    with pytest.raises(ValueError, match="fewer than 5"):
        recipe_frontier.read_point(str(short), 5, "adaptive")
    with pytest.raises(ValueError, match="robustopt eval"):
        recipe_frontier.read_point(str(short), 2, "standard")
