"""bench/harness.py: one model loader, one logger, one publisher, one results layout for every bench script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench_package import BENCH, bench_script

harness = bench_script("harness")
# make_mnist_mini and zoo_build build what the repository ships (mnist-mini, the zoo's entries), not results.
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py")
                 if p.stem not in ("__init__", "harness", "make_mnist_mini", "zoo_build"))


def test_every_script_has_a_question_folder_and_no_helpers_of_its_own() -> None:
    assert SCRIPTS == sorted(harness.QUESTIONS)  # a new script gets its results folder here
    for name in SCRIPTS:
        source = (BENCH / f"{name}.py").read_text()
        assert "from bench.harness import" in source, name
        for own in ("def log(", "load_run(", "trained_recipe(", "atomic_write_text(", "sys.path.insert"):
            assert own not in source, f"bench/{name}.py: {own} belongs to bench/harness.py"


def test_default_outputs_lie_in_the_question_folder() -> None:
    assert harness.out_prefix(None, "eval_cost", quick=True) == harness.RESULTS / "eval-cost" / "quick"
    assert harness.out_prefix(None, "throughput") == harness.RESULTS / "throughput" / "full"
    assert harness.out_prefix("x/y", "throughput", quick=True) == Path("x/y")


def test_load_model_from_a_run_folder(tiny_run: Path) -> None:
    subject = harness.load_model(tiny_run)
    assert not subject.model.training and subject.run == str(tiny_run) and subject.data == "mnist-mini"
    assert str(tiny_run.name) in subject.source and "mnist-mini" in subject.source
    assert subject.threat() == harness.threat(subject.info["norm"], subject.info["eps"])
    assert subject.threat("l2", 1.5).eps == 1.5
    x, y = subject.test_set(7)
    assert x.shape == (7, 1, 28, 28) and x.is_contiguous() and len(y) == 7
    with pytest.raises(SystemExit, match="test images asked for"):
        subject.test_set(10**6)


def test_a_recipe_folder_trained_otherwise_is_refused(tiny_run: Path) -> None:
    with pytest.raises(SystemExit, match="trained with other settings"):
        harness.load_model(recipe="small-cnn-mini-at", folder=tiny_run)


def test_publish_writes_json_and_markdown_with_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = 0.0
    report = harness.header("check", quick=True)
    report["value"] = 3
    md = harness.publish(tmp_path / "q" / "quick", report, lambda r: f"# value {r['value']}\n", t0)
    saved = json.loads((tmp_path / "q" / "quick.json").read_text())
    assert (tmp_path / "q" / "quick.md").read_text() == md == "# value 3\n"
    assert saved["value"] == 3 and saved["quick"] is True and saved["machine"]["torch"] == torch.__version__
    for field in ("command", "git", "started_utc", "finished_utc", "peak_rss_mib", "wall_seconds"):
        assert field in saved, field
    out, err = capsys.readouterr()
    assert out.strip() == "# value 3" and "written:" in err  # the result on stdout, the log on stderr


@pytest.mark.slow
def test_a_script_runs_by_its_path_from_any_directory(tmp_path: Path) -> None:
    # `python bench/x.py` (the documented commands) and `python -m bench.x` both import the bench package
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    by_path = subprocess.run([sys.executable, str(BENCH / "pgd_restarts.py"), "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert by_path.returncode == 0 and "--restarts" in by_path.stdout, by_path.stderr


def test_fresh_clone_script_explains_its_usage(tmp_path):
    """bench/fresh_clone.sh without a command says how to call it and writes nothing."""
    done = subprocess.run(["bash", str(BENCH / "fresh_clone.sh"), str(tmp_path / "log")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert "usage: bash bench/fresh_clone.sh LOG COMMAND..." in done.stderr
    assert not (tmp_path / "log").exists()


def test_fresh_clone_resume_needs_the_kept_clone_and_its_log(tmp_path):
    """RESUME=1 without a kept clone refuses with what it needs, before writing anything."""
    env = {**os.environ, "RESUME": "1", "CLONE": str(tmp_path / "no-clone")}
    done = subprocess.run(["bash", str(BENCH / "fresh_clone.sh"), str(tmp_path / "log"), "true"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "RESUME=1 needs CLONE= the kept clone" in done.stderr
    assert not (tmp_path / "log").exists() and not (tmp_path / "log.alive").exists()


FRESH_CLONE_LOG = """\
# bench/fresh_clone.sh: robustopt reproduce madry-cifar10 --budget cpu --out runs/x
clone+install start 2026-12-05T10:00:00Z load 0.1 0.1 0.1
install took 30 s
command start 2026-12-05T10:00:30Z load 0.1 0.1 0.1
epoch 1/3: 10/10 steps in 4 min 50 s, loss=2.0, acc=0.2, val=0.3, val_rob=0.2
epoch 2/3: 5/10 steps (50%), 2 min 1 s, loss=1.9, acc=0.3, eps=0.03
# resumed segment: robustopt reproduce madry-cifar10 --budget cpu --out runs/x
command start 2026-12-05T11:00:00Z load 0.1 0.1 0.1
epoch 2/3: 5/10 steps (50%), 1 h 10 min, loss=1.9, acc=0.3, eps=0.03
paused (SIGSTOP) 2026-12-05T11:10:00Z: another benchmark runs alone
continued (SIGCONT) 2026-12-05T12:10:00Z
# resumed segment: robustopt reproduce madry-cifar10 --budget cpu --out runs/x
previous segment last alive 2026-12-05T12:30:00Z load 2.0 2.0 2.0
command start 2026-12-05T13:00:00Z load 0.1 0.1 0.1
command end: exit status 2, 600 s (0 h 10 min) 2026-12-05T13:10:00Z load 2.0 2.0 2.0
# resumed segment: robustopt report runs/x/A --out runs/x
previous segment last alive 2026-12-05T13:09:50Z load 2.0 2.0 2.0
command start 2026-12-05T14:00:00Z load 0.1 0.1 0.1
command end: exit status 0, 14 s (0 h 0 min) 2026-12-05T14:00:14Z load 2.0 2.0 2.0
"""


def test_fresh_clone_time_sums_segments_without_pauses() -> None:
    """Install + a killed segment (its progress lines) + a paused one (to its heartbeat) + the last (to its end)."""
    fct = bench_script("fresh_clone_time")
    t = fct.timing(FRESH_CLONE_LOG)
    assert t["install_seconds"] == 30
    assert [s["seconds"] for s in t["segments"]] == [290 + 121, 90 * 60 - 3600, 600, 14]
    assert [s["end_utc"] for s in t["segments"]] == [None, "2026-12-05T12:30:00Z", "2026-12-05T13:10:00Z",
                                                     "2026-12-05T14:00:14Z"]  # a finished segment keeps its end
    assert t["total_seconds"] == 30 + 411 + 1800 + 600 + 14 and t["finished"] and t["exit_status"] == 0  # the last
    assert fct.timing(FRESH_CLONE_LOG.rsplit("# resumed", 1)[0])["exit_status"] == 2
    assert not fct.timing(FRESH_CLONE_LOG.split("command end", 1)[0])["finished"]
    assert fct.seconds_of("2 h 10 min") == 7800 and fct.seconds_of("3 min 5 s") == 185
    with pytest.raises(ValueError, match="fresh_clone.sh"):
        fct.timing("no stamps here\n")
