"""Resumable evaluation: an interrupted ``evaluate(..., progress_file=...)`` continues exactly."""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict

import pytest
import torch
from torch import nn

import robustopt as ro
from robustopt.attacks import FGSM, PGD, Transfer
from robustopt.evaluation import ProgressFileError, evaluate

N, BATCH = 60, 16  # 4 batches per attack (the last one short)


def _mlp(seed: int, d: int = 20, classes: int = 4) -> nn.Module:
    # Nonlinear on purpose: on a linear model PGD reaches the same corner from every random start.
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, classes)).double()


@pytest.fixture
def problem():
    model = _mlp(0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N, 1, 20, generator=g, dtype=torch.float64)
    y = model(x).argmax(1)
    y[:6] = (y[:6] + 1) % 4  # a few clean errors
    return model, x, y


def _attacks(source: nn.Module | None = None):
    # Few short steps from random starts: a batch run with another generator changes the rows.
    eps = 0.05
    t = ro.Linf(eps)
    return [
        PGD(t, steps=2, restarts=2, step_size=eps / 4),
        PGD(t, steps=2, loss="cw", step_size=eps / 4),
        Transfer(source if source is not None else _mlp(1), PGD(t, steps=2, step_size=eps / 4), source_name="B"),
        FGSM(t),
    ]


class _Interrupt:
    """Make the k-th attack call (counted over all attacks) raise KeyboardInterrupt after doing its work."""

    def __init__(self, attacks, k: int):
        self.calls, self.k = 0, k
        for atk in attacks:
            # An instance attribute shadows Attack.run without changing the attack's fields or describe().
            object.__setattr__(atk, "run", self._wrap(atk.run))

    def _wrap(self, run):
        def wrapped(*args, **kwargs):
            result = run(*args, **kwargs)
            self.calls += 1
            if self.calls == self.k:
                raise KeyboardInterrupt
            return result

        return wrapped


def _without_seconds(ev):
    return [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in ev.rows]


def _assert_same(resumed, whole):
    assert _without_seconds(resumed) == _without_seconds(whole)  # accuracies, attacked, grad_evals, configs
    assert torch.equal(resumed.correct, whole.correct)
    assert torch.equal(resumed.robust, whole.robust)
    assert resumed.robust_accuracy == whole.robust_accuracy
    assert all(r.seconds >= 0 for r in resumed.rows)


def _calls(ev) -> int:
    return sum(-(-r.attacked // BATCH) for r in ev.rows[1:])


@pytest.mark.parametrize("mode", ["cascade", "independent"])
def test_resume_after_interruption_equals_uninterrupted_run(problem, tmp_path, mode):
    model, x, y = problem
    source = _mlp(1)
    whole = evaluate(model, (x, y), _attacks(source), batch_size=BATCH, seed=5, mode=mode, progress=False)
    assert 0 < whole.robust_accuracy < whole.clean_accuracy  # not trivial
    other = evaluate(model, (x, y), _attacks(source), batch_size=BATCH, seed=6, mode=mode, progress=False)
    assert [r.accuracy for r in other.rows] != [r.accuracy for r in whole.rows]  # the generators matter
    calls = _calls(whole)
    first = -(-whole.rows[1].attacked // BATCH)
    # first batch, mid first attack, last batch of the first attack (between attacks),
    # first batch of the second attack, mid-way, the very last batch
    for k in sorted({1, 2, first, first + 1, calls // 2 + 1, calls}):
        path = tmp_path / f"k{k}" / "eval.progress.json"
        path.parent.mkdir()
        interrupted = _attacks(source)
        _Interrupt(interrupted, k)
        with pytest.raises(KeyboardInterrupt):
            evaluate(model, (x, y), interrupted, batch_size=BATCH, seed=5, mode=mode, progress=False,
                     progress_file=path)
        if k == 1:  # nothing finished, nothing saved
            assert list(path.parent.iterdir()) == []
        else:
            saved = json.loads(path.read_text())
            done = sum(-(-r.attacked // BATCH) for r in whole.rows[1 : 1 + saved["attack"]]) + saved["batch"]
            assert done == k - 1  # every finished batch is saved, the interrupted one is not
        resumed = evaluate(model, (x, y), _attacks(source), batch_size=BATCH, seed=5, mode=mode,
                           progress=False, progress_file=path)
        _assert_same(resumed, whole)
        assert resumed.meta["sessions"] == (1 if k == 1 else 2)
        assert list(path.parent.iterdir()) == []  # progress deleted, no temporary files left


def test_many_interruptions_in_a_row(problem, tmp_path):
    model, x, y = problem
    whole = evaluate(model, (x, y), _attacks(), batch_size=BATCH, seed=2, progress=False)
    path = tmp_path / "eval.progress.json"
    sessions = 0
    while True:
        attacks = _attacks()
        _Interrupt(attacks, 2)  # lose the second batch of every session
        sessions += 1
        try:
            ev = evaluate(model, (x, y), attacks, batch_size=BATCH, seed=2, progress=False, progress_file=path)
            break
        except KeyboardInterrupt:
            assert [p.name for p in tmp_path.iterdir()] == [path.name]
    _assert_same(ev, whole)
    assert ev.meta["sessions"] == sessions > 3
    assert not path.exists()


def test_no_progress_file_means_nothing_written(problem, tmp_path, monkeypatch):
    model, x, y = problem
    monkeypatch.chdir(tmp_path)
    attacks = _attacks()
    _Interrupt(attacks, 3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, (x, y), attacks, batch_size=BATCH, progress=False)
    assert list(tmp_path.iterdir()) == []


def _interrupted(problem, path, k=3, **kwargs):
    model, x, y = problem
    attacks = _attacks()
    _Interrupt(attacks, k)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, (x, y), attacks, batch_size=BATCH, progress=False, progress_file=path, **kwargs)
    return path.read_text()


@pytest.mark.parametrize("change, named", [
    ({"seed": 1}, "seed"),
    ({"mode": "independent"}, "mode"),
    ({"batch_size": 8}, "batch_size"),
    ({"model": 7}, "model"),
    ({"x": True}, "data"),
    ({"attacks": "steps"}, "attacks"),
    ({"attacks": "source"}, "attacks"),
])
def test_progress_of_another_job_is_refused(problem, tmp_path, change, named):
    model, x, y = problem
    path = tmp_path / "eval.progress.json"
    before = _interrupted(problem, path)
    attacks = _attacks()
    kwargs = {"batch_size": BATCH, "seed": 0, "mode": "cascade"}
    if "model" in change:
        model = _mlp(change["model"])
    elif "x" in change:
        x = x.clone()
        x[-1, 0, -1] = 1 - x[-1, 0, -1]  # one pixel of the last example
    elif change.get("attacks") == "steps":
        attacks[1] = PGD(ro.Linf(0.05), steps=3, loss="cw", step_size=0.05 / 4)
    elif change.get("attacks") == "source":
        attacks[2] = Transfer(_mlp(9), PGD(ro.Linf(0.05), steps=2, step_size=0.05 / 4), source_name="B")  # same describe()
    else:
        kwargs.update(change)
    with pytest.raises(ProgressFileError, match=f"another evaluation \\(different {named}\\).*Delete it") as err:
        evaluate(model, (x, y), attacks, progress=False, progress_file=path, **kwargs)
    assert err.value.path == path and "Delete it" not in err.value.problem
    assert path.read_text() == before  # left alone


@pytest.mark.parametrize("content", [
    "",
    "{not json",
    "[1, 2]",
    '{"format": "something else"}',
    b"\xff\xfe\x00garbage",
])
def test_unreadable_progress_file_is_a_clear_error(problem, tmp_path, content):
    model, x, y = problem
    path = tmp_path / "eval.progress.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ProgressFileError, match="not a usable robustopt evaluation progress file.*Delete it"):
        evaluate(model, (x, y), _attacks(), batch_size=BATCH, progress=False, progress_file=path)


@pytest.mark.parametrize("edit", [
    lambda s: s.pop("robust"),
    lambda s: s.update(robust="!!not base64!!"),
    lambda s: s.update(survived=s["survived"][:-4]),
    lambda s: s.update(attack=99),
    lambda s: s.update(batch=-1),
    lambda s: s.update(rows=[]),
    lambda s: s.update(rows=[{"bogus": 1}]),
    lambda s: s.update(version=0),
])
def test_damaged_progress_file_is_a_clear_error(problem, tmp_path, edit):
    model, x, y = problem
    path = tmp_path / "eval.progress.json"
    state = json.loads(_interrupted(problem, path, k=6))
    edit(state)
    path.write_text(json.dumps(state))
    with pytest.raises(ProgressFileError, match="not a usable robustopt evaluation progress file"):
        evaluate(model, (x, y), _attacks(), batch_size=BATCH, progress=False, progress_file=path)


def test_progress_is_written_once_per_batch(problem, tmp_path, monkeypatch):
    from robustopt.evaluation import progress as module

    model, x, y = problem
    writes = []
    real = module.save
    monkeypatch.setattr(module, "save", lambda path, state: writes.append(state["batch"]) or real(path, state))
    path = tmp_path / "eval.progress.json"
    ev = evaluate(model, (x, y), _attacks(), batch_size=BATCH, progress=False, progress_file=path)
    assert len(writes) == _calls(ev)
    assert not path.exists()


@pytest.fixture
def run_folder(tmp_path):
    """A run folder with an untrained small CNN on mnist-mini (no training: the plumbing is what is tested)."""
    from robustopt import checkpoint, data as datasets, models

    info = datasets.info("mnist-mini")
    torch.manual_seed(0)
    net = models.create("small-cnn", num_classes=info.num_classes, mean=info.mean, std=info.std)
    run = tmp_path / "run"
    checkpoint.save(run / "model", net)
    (run / "run.json").write_text(json.dumps({"data": "mnist-mini", "model": "small-cnn", "norm": "linf", "eps": 0.1,
                                              "method": "natural", "seed": 0, "train_size": None}))
    return run


def test_eval_run_and_cli_resume(run_folder, monkeypatch):
    from click.testing import CliRunner

    from robustopt.cli import main
    from robustopt.experiments import eval_run

    module = importlib.import_module("robustopt.evaluation.evaluate")
    kwargs = dict(suite="fast", limit=40, batch_size=2, progress=False, echo=lambda s: None)
    whole = eval_run(run_folder, **kwargs)
    assert whole.rows[1].attacked >= 3  # the interruption below falls inside the first attack
    assert not (run_folder / "eval-fast.progress.json").exists()

    real, calls = module._batch_generator, []

    def interrupting(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(module, "_batch_generator", interrupting)
    with pytest.raises(KeyboardInterrupt):
        eval_run(run_folder, **kwargs)
    monkeypatch.setattr(module, "_batch_generator", real)
    progress = run_folder / "eval-fast.progress.json"
    assert progress.is_file()

    cli = ["eval", str(run_folder), "--suite", "fast", "--n", "40", "--batch-size", "2"]
    res = CliRunner().invoke(main, [*cli, "--seed", "1"])  # another job: refused, files kept
    assert res.exit_code == 2 and "another evaluation" in res.output and "--overwrite" in res.output
    res = CliRunner().invoke(main, [*cli, "--seed", "1", "--overwrite"])  # the progress is still another job's
    assert res.exit_code == 2 and "another evaluation" in res.output and "--restart" in res.output
    assert progress.is_file()
    res = CliRunner().invoke(main, cli)
    assert res.exit_code == 0, res.output
    assert "Resuming" in res.output and not progress.exists()
    resumed = json.loads((run_folder / "eval-fast.json").read_text())
    assert resumed["robust"] == whole.robust.int().tolist()
    assert [r["grad_evals"] for r in resumed["rows"]] == [r.grad_evals for r in whole.rows]
    assert resumed["meta"]["sessions"] == 2

    progress.write_text("{broken")
    res = CliRunner().invoke(main, [*cli, "--restart"])
    assert res.exit_code == 0, res.output
    assert "Resuming" not in res.output and not progress.exists()
    assert sorted(p.name for p in run_folder.iterdir() if p.name.startswith(".")) == []  # no temporary files


# --- start_from: more rows added to a finished evaluation ---------------------------------------


@pytest.mark.parametrize("mode", ["independent", "cascade"])
def test_rows_added_to_a_finished_evaluation_equal_one_whole_run(problem, mode):
    model, x, y = problem
    whole = evaluate(model, (x, y), _attacks(), batch_size=BATCH, seed=3, mode=mode, progress=False)
    first = evaluate(model, (x, y), _attacks()[:2], batch_size=BATCH, seed=3, mode=mode, progress=False)
    rest = _Interrupt(attacks := _attacks(), k=10**6)  # counts the attack calls
    extended = evaluate(model, (x, y), attacks, batch_size=BATCH, seed=3, mode=mode, progress=False, start_from=first)
    _assert_same(extended, whole)
    assert rest.calls == 2 * 4  # the two new attacks only, 4 batches each


@pytest.mark.parametrize("change", ["seed", "batch_size", "attacks", "model"])
def test_start_from_another_evaluation_is_refused(problem, change):
    model, x, y = problem
    first = evaluate(model, (x, y), _attacks()[:2], batch_size=BATCH, seed=3, mode="independent", progress=False)
    kwargs = dict(batch_size=BATCH, seed=3, mode="independent", progress=False, start_from=first)
    attacks, other = _attacks(), model
    if change == "seed":
        kwargs["seed"] = 4
    elif change == "batch_size":
        kwargs["batch_size"] = BATCH + 1
    elif change == "attacks":
        attacks = attacks[1:]
    else:
        other = _mlp(5)  # other clean predictions
    with pytest.raises(ValueError, match="not an earlier part of this evaluation"):
        evaluate(other, (x, y), attacks, **kwargs)


def test_saved_progress_says_where_a_resumed_evaluation_continues(problem, tmp_path):
    from robustopt.evaluation.evaluate import saved_progress

    model, x, y = problem
    path = tmp_path / "eval.progress.json"
    assert saved_progress(path, model, (x, y), _attacks(), batch_size=BATCH) is None
    _interrupted(problem, path)
    where = saved_progress(path, model, (x, y), _attacks(), batch_size=BATCH)
    assert where is not None and where["sessions"] == 1 and 0 <= where["attack"] < len(_attacks())
    with pytest.raises(ProgressFileError, match="another evaluation \\(different seed\\)"):
        saved_progress(path, model, (x, y), _attacks(), batch_size=BATCH, seed=1)


def test_resuming_is_announced_only_for_a_usable_progress_file(run_folder):
    from robustopt.experiments import eval_run

    lines: list[str] = []
    (run_folder / "eval-fast.progress.json").write_text("{broken")
    with pytest.raises(ValueError, match="not a usable robustopt evaluation progress file"):
        eval_run(run_folder, suite="fast", limit=8, batch_size=4, progress=False, echo=lines.append)
    assert not any("Resuming" in line for line in lines)
