"""Run-folder safety (robustopt._lock, robustopt.runs): one writer per folder, no silent replacement, clear errors.

A lock is held by a live process and dies with it; a second process gets one line naming the
folder and the holder's PID. eval / sweep / report refuse to replace a result made with other
parameters unless --overwrite. Unwritable outputs give a one-line error and leave nothing behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustopt._lock import LOCK_NAME, RunFolderBusyError, hold
from robustopt.cli import main

TINY = ["--data", "mnist-mini", "--model", "small-cnn", "--train-size", "200", "--epochs", "1", "--steps", "1",
        "--step-size", "0.3", "--batch-size", "50", "--lr", "1e-3", "--method", "pgd"]


def one_line_error(res, *fragments: str) -> str:
    """Assert that a CLI call failed with exit code 2 and a single `error: ...` line holding ``fragments``."""
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # _fail, not an uncaught exception
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    res = CliRunner().invoke(main, ["train", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


# --- the lock ---------------------------------------------------------------------------------


def _holder(folder: Path, code: str) -> subprocess.Popen:
    """Run ``code`` in a Python process of its own; return once it holds ``folder``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTOPT_PROGRESS": "off"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            if json.loads((folder / LOCK_NAME).read_text()).get("pid") == proc.pid:
                return proc
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the child never took the lock"
        time.sleep(0.01)


@pytest.mark.slow
def test_two_trainings_into_one_folder_one_wins_the_other_gets_one_line(tmp_path):
    out = tmp_path / "run"
    # The first training (seed 0) in a process of its own; the second (seed 1) starts while it holds the folder.
    first = _holder(out, "import sys; from robustopt.cli import main; "
                    f"sys.argv = ['robustopt', 'train', *{TINY!r}, '--epochs', '2', '--out', {str(out)!r}]; main()")
    second = CliRunner().invoke(main, ["train", *TINY, "--seed", "1", "--out", str(out)])
    one_line_error(second, str(out), f"PID {first.pid}", "in use by another process", "train")
    # eval and sweep into the run wait for it too
    for cmd in (["eval", str(out), "--n", "10"], ["sweep", str(out), "--eps", "0,0.1", "--n", "10"]):
        one_line_error(CliRunner().invoke(main, cmd), f"PID {first.pid}")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    # Nothing of the second run got in: every file speaks of seed 0.
    assert json.loads((out / "config.json").read_text())["seed"] == 0
    assert json.loads((out / "run.json").read_text())["seed"] == 0
    assert json.loads((out / "model.json").read_text())["config"]["seed"] == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    assert not (out / LOCK_NAME).exists()  # the last holder removed it


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    out = tmp_path / "run"
    child = _holder(out, f"import time; from robustopt._lock import hold\nwith hold({str(out)!r}, 'train'):\n"
                         "    time.sleep(600)")
    with pytest.raises(RunFolderBusyError, match=f"PID {child.pid}"):
        with hold(out, "train"):
            pass
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == child.pid  # the file stays, the lock died with it
    with hold(out, "train"):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


def test_results_of_one_run_are_written_side_by_side_but_each_by_one_writer(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # Another process writing eval-madry: the folder shared, that result alone (other open file descriptions).
    folder_fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    result_fd = os.open(out / ".eval-madry.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(folder_fd, fcntl.LOCK_SH)
        fcntl.flock(result_fd, fcntl.LOCK_EX)
        with hold(out, "sweep", result="sweep-linf"):  # another result of the run: side by side
            assert (out / ".sweep-linf.lock").exists()
        assert not (out / ".sweep-linf.lock").exists()
        with pytest.raises(RunFolderBusyError, match="eval-madry.* is being written by another process"):
            with hold(out, "eval", result="eval-madry"):
                pass
        with pytest.raises(RunFolderBusyError, match="in use by another process"):
            with hold(out, "train"):  # training waits for every writer of results
                pass
    finally:
        os.close(result_fd)
        os.close(folder_fd)
    with hold(out, "eval", result="eval-madry"):  # free again
        pass


def test_lock_is_exclusive_reentrant_shared_on_request_and_cleans_up(tmp_path):
    out = tmp_path / "a" / "b"
    with hold(out, "train"):
        with hold(out, "eval"):  # the same process may nest (train_run -> fit)
            pass
        assert (out / LOCK_NAME).exists()
        # another open file description is another holder, as in another process
        fd = os.open(out / LOCK_NAME, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert out.is_dir() and not (out / LOCK_NAME).exists()

    (out / LOCK_NAME).write_text("")  # a holder that has not written its PID yet
    fd = os.open(out / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        with pytest.raises(RunFolderBusyError, match="PID is not recorded"):
            with hold(out, "reproduce"):
                pass
        with hold(out, "reproduce --only A", shared=True):  # shared holders coexist
            pass
        assert (out / LOCK_NAME).exists()  # still held (shared) by the other holder
    finally:
        os.close(fd)

    # A failing block removes the folders it created (when empty), never anything else.
    new = tmp_path / "x" / "y"
    with pytest.raises(ZeroDivisionError):
        with hold(new, "train"):
            1 / 0
    assert not (tmp_path / "x").exists()
    with pytest.raises(ZeroDivisionError):
        with hold(out, "train"):
            1 / 0
    assert out.is_dir()
    with hold(tmp_path / "missing", "eval", create=False):  # nothing to lock: the caller reports it
        pass
    assert not (tmp_path / "missing").exists()


# --- no silent replacement of results ---------------------------------------------------------------


def test_eval_refuses_to_replace_another_evaluation_unless_overwrite(run):
    base = ["eval", str(run), "--n", "20", "--max-restarts", "1", "--batch-size", "20"]
    assert CliRunner().invoke(main, base).exit_code == 0
    first = (run / "eval-madry.json").read_text()
    # A smaller evaluation must not silently replace the first one.
    res = CliRunner().invoke(main, ["eval", str(run), "--n", "10", "--max-restarts", "1", "--batch-size", "20"])
    one_line_error(res, str(run / "eval-madry.json"), "--overwrite", "n 20 there, 10 now")
    assert (run / "eval-madry.json").read_text() == first and not (run / "eval-madry.progress.json").exists()
    res = CliRunner().invoke(main, base[:-4] + ["--max-restarts", "2", "--batch-size", "20"])
    one_line_error(res, "attacks")  # other restarts: other rows
    # the same evaluation again is fine (it is recomputed, to the same numbers)
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 0, res.output
    assert json.loads((run / "eval-madry.json").read_text())["robust"] == json.loads(first)["robust"]
    res = CliRunner().invoke(main, ["eval", str(run), "--n", "10", "--max-restarts", "1", "--batch-size", "20",
                                    "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "eval-madry.json").read_text())["n"] == 10
    # a file whose parameters are unknown (an older robustopt) is not replaced either
    legacy = json.loads((run / "eval-madry.json").read_text())
    del legacy["meta"]["request"]
    (run / "eval-madry.json").write_text(json.dumps(legacy))
    res = CliRunner().invoke(main, ["eval", str(run), "--n", "10", "--max-restarts", "1", "--batch-size", "20"])
    one_line_error(res, "not recorded")


def test_eval_adds_transfer_rows_without_redoing_the_white_box_rows(run, tmp_path):
    source = tmp_path / "source"
    assert CliRunner().invoke(main, ["train", *TINY, "--seed", "3", "--out", str(source)]).exit_code == 0
    twin = tmp_path / "twin"  # the same run, to evaluate everything in one go
    shutil.copytree(run, twin, ignore=shutil.ignore_patterns("eval-*", LOCK_NAME))
    base = ["--n", "20", "--max-restarts", "1", "--batch-size", "20"]
    assert CliRunner().invoke(main, ["eval", str(run), *base, "--overwrite"]).exit_code == 0
    white = json.loads((run / "eval-madry.json").read_text())
    res = CliRunner().invoke(main, ["eval", str(run), *base, "--source", f"S={source}"])
    assert res.exit_code == 0, res.output
    assert f"Keeping the {len(white['rows']) - 1} attack rows" in res.output
    added = json.loads((run / "eval-madry.json").read_text())
    assert added["rows"][: len(white["rows"])] == white["rows"]  # kept as they were, timings included
    assert len(added["rows"]) > len(white["rows"]) and added["meta"]["sources"] == {"S": str(source)}
    res = CliRunner().invoke(main, ["eval", str(twin), *base, "--source", f"S={source}"])
    assert res.exit_code == 0, res.output
    whole = json.loads((twin / "eval-madry.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(added["rows"]) == strip(whole["rows"]) and added["robust"] == whole["robust"]


def test_sweep_and_report_refuse_to_replace_unless_overwrite(run, tmp_path):
    sweep = ["sweep", str(run), "--steps", "1", "--n", "10", "--batch-size", "10"]
    assert CliRunner().invoke(main, sweep + ["--eps", "0,0.1"]).exit_code == 0
    one_line_error(CliRunner().invoke(main, sweep + ["--eps", "0,0.2"]), "sweep-linf.json", "eps", "--overwrite")
    assert json.loads((run / "sweep-linf.json").read_text())["eps"] == [0.0, 0.1]
    assert CliRunner().invoke(main, sweep + ["--eps", "0,0.1"]).exit_code == 0  # the same sweep: recomputed
    assert CliRunner().invoke(main, sweep + ["--eps", "0,0.2", "--overwrite"]).exit_code == 0
    assert json.loads((run / "sweep-linf.json").read_text())["eps"] == [0.0, 0.2]

    other = tmp_path / "other"
    assert CliRunner().invoke(main, ["train", *TINY, "--seed", "2", "--out", str(other)]).exit_code == 0
    out = tmp_path / "reports"
    assert CliRunner().invoke(main, ["report", str(run), "--out", str(out)]).exit_code == 0
    page = (out / "report.md").read_text()
    assert CliRunner().invoke(main, ["report", str(run), "--out", str(out)]).exit_code == 0  # same runs: refreshed
    one_line_error(CliRunner().invoke(main, ["report", str(other), "--out", str(out)]), "report.md", "--overwrite")
    assert (out / "report.md").read_text().splitlines()[0] == page.splitlines()[0]
    assert CliRunner().invoke(main, ["report", str(other), "--out", str(out), "--overwrite"]).exit_code == 0
    assert "other" in (out / "report.md").read_text().splitlines()[0]


# --- unwritable outputs ------------------------------------------------------------------------------


def _unwritable_dir(tmp_path: Path) -> Path:
    """A folder in which nothing can be created: read-only for a normal user; /sys for root."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    try:
        os.mkdir("/sys/robustopt-probe")
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
            return Path("/sys")
        raise
    os.rmdir("/sys/robustopt-probe")
    pytest.skip("running as root with a writable /sys: no unwritable folder to test with")


@pytest.mark.parametrize("command", [["train", *TINY], ["demo"], ["report", "RUN"]])
def test_an_out_that_is_a_file_gets_one_line(tmp_path, run, command):
    target = tmp_path / "file.txt"
    target.write_text("not a folder")
    cmd = [str(run) if c == "RUN" else c for c in command]
    one_line_error(CliRunner().invoke(main, [*cmd, "--out", str(target)]), str(target))
    one_line_error(CliRunner().invoke(main, [*cmd, "--out", str(target / "sub")]), str(target))
    assert files(tmp_path) == ["file.txt"] and target.read_text() == "not a folder"


@pytest.mark.parametrize("command", [["train", *TINY], ["demo"], ["report", "RUN"]])
def test_an_out_that_cannot_be_written_gets_one_line_and_leaves_nothing(tmp_path, run, command):
    parent = _unwritable_dir(tmp_path)
    before = files(tmp_path)
    out = parent / "robustopt-test" / "run"
    cmd = [str(run) if c == "RUN" else c for c in command]
    one_line_error(CliRunner().invoke(main, [*cmd, "--out", str(out)]), str(out), "cannot write")
    assert not (parent / "robustopt-test").exists() and files(tmp_path) == before


def test_a_failed_command_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new" / "run"
    res = CliRunner().invoke(main, ["train", *TINY, "--data", "no-such-data", "--out", str(out)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_eval_into_a_read_only_run_gets_one_line(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    copy.chmod(0o555)
    try:
        one_line_error(CliRunner().invoke(main, ["eval", str(copy), "--n", "5"]), str(copy), "cannot write")
    finally:
        copy.chmod(0o755)
