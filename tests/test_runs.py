"""Run folders (robustopt.runs): loading a run, the names and reading of result files, the request check."""

from __future__ import annotations

import json

import pytest
import torch

import robustopt as ro
from robustopt import checkpoint, runs
from robustopt.attacks import FGSM, PGD


@pytest.fixture
def run(tmp_path):
    """A finished run folder without training: a small-cnn checkpoint and its run.json."""
    folder = tmp_path / "a"
    folder.mkdir()
    torch.manual_seed(0)
    model = ro.models.create("small-cnn", num_classes=10)
    checkpoint.save(folder / "model", model)
    info = {"data": "mnist-mini", "model": "small-cnn", "norm": "linf", "eps": 0.3, "method": "pgd", "seed": 0}
    (folder / "run.json").write_text(json.dumps(info))
    return folder, model, info


def test_load_run_gives_the_weights_in_eval_mode_and_run_json(run):
    folder, model, info = run
    loaded, loaded_info = ro.load_run(folder)
    assert loaded_info == info and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert runs.read_info(folder) == info


def test_what_is_not_a_finished_run_is_named(run, tmp_path):
    folder, _, _ = run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ro.load_run(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a run folder"):
        ro.load_run(folder / "run.json")
    with pytest.raises(FileNotFoundError, match=r"not a finished robustopt run \(no run.json"):
        ro.load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="early-stopping-patience"):
        ro.load_run(folder, weights="best")
    with pytest.raises(ValueError, match="weights must be one of"):
        ro.load_run(folder, weights="last")
    checkpoint.remove(folder / "model")
    with pytest.raises(FileNotFoundError, match=r"no trained weights \(model\.\*\).*--resume"):
        ro.load_run(folder)
    assert runs.check_run(folder, weights=None) == folder  # run.json alone is enough for reading results
    (folder / "run.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        runs.read_info(folder)


def test_weights_without_their_json_are_named_incomplete(run):
    folder, _, _ = run
    (folder / "model.json").unlink()  # a copy that left the commit record out
    with pytest.raises(FileNotFoundError) as err:
        ro.load_run(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'model.json'} is missing though model.safetensors is there")
    assert "ended before it saved any" not in message and "--resume" in message


def test_train_resume_refusals(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="--resume: .* holds no training to continue"):
        runs.refuse_resume_of_nothing(out)
    out.mkdir()
    (out / "config.json").write_text("{}")  # a training that was killed before its first checkpoint
    runs.refuse_resume_of_nothing(out)
    runs.refuse_restart(out)
    checkpoint.save(out / "partial", ro.models.create("small-cnn"))  # a mid-epoch checkpoint
    with pytest.raises(FileExistsError, match="add --resume"):
        runs.refuse_restart(out)
    assert runs.training_started(out)


def test_result_names_and_reading(run):
    folder, model, _ = run
    assert runs.result_stem("eval", "madry") == "eval-madry"
    assert runs.result_stem("sweep", "linf-independent", "best") == "sweep-linf-independent-best"
    x, y = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    ev = ro.evaluate(model, (x, y), [FGSM(ro.Linf(0.1))], progress=False)
    curve = ro.sweep(model, (x, y), ro.Linf, [0.0, 0.1], attack=FGSM(ro.Linf(0.0)), progress=False)
    ev.to_json(folder / "eval-madry.json")
    ev.to_json(folder / "eval-fast-best.json")
    curve.to_json(folder / "sweep-linf.json")
    (folder / "eval-madry.progress.json").write_text("{not an evaluation")  # resume state: not a result
    assert [p.name for p in runs.result_files(folder, "eval")] == ["eval-fast-best.json", "eval-madry.json"]
    assert [(name, e.to_dict()) for name, e in runs.read_evaluations(folder)] == [
        ("eval-fast-best.json", ev.to_dict()), ("eval-madry.json", ev.to_dict())]
    assert [(name, c.to_dict()) for name, c in runs.read_sweeps(folder)] == [("sweep-linf.json", curve.to_dict())]
    assert runs.read_log(folder) is None and runs.read_config(folder) == {}
    (folder / "log.jsonl").write_text('{"epoch": 1}\n\n{"epoch": 2}\n')
    assert runs.read_log(folder) == [{"epoch": 1}, {"epoch": 2}]
    (folder / "log.jsonl").write_text('{"epoch": 1}\n{"epo\n')
    with pytest.raises(ValueError, match="line 2"):
        runs.read_log(folder)


def test_a_result_made_for_another_request_is_not_replaced(tmp_path):
    path = tmp_path / "eval-madry.json"
    request = {"n": 20, "attacks": [("PGD", 40, 1, "A")]}
    runs.refuse_replacement(path, request, None, overwrite=False, what="evaluation")  # nothing there yet
    path.write_text(json.dumps({"meta": {"request": request}}, default=list))
    saved = runs.saved_request(path)
    runs.refuse_replacement(path, request, saved, overwrite=False, what="evaluation")  # tuples read back as lists
    with pytest.raises(FileExistsError, match="n 20 there, 10 now.*--overwrite"):
        runs.refuse_replacement(path, {**request, "n": 10}, saved, overwrite=False, what="evaluation")
    runs.refuse_replacement(path, {**request, "n": 10}, saved, overwrite=True, what="evaluation")
    with pytest.raises(FileExistsError, match="not recorded"):
        runs.refuse_replacement(path, request, None, overwrite=False, what="evaluation")
    md = tmp_path / "report.md"
    md.write_text(runs.request_line({"runs": ["a", "b"]}) + "# robustopt report\n")
    assert runs.report_request(md) == {"runs": ["a", "b"]}
    md.write_text("# a report written by hand\n")
    assert runs.report_request(md) is None and runs.report_request(tmp_path / "none.md") is None


def test_json_ready_is_what_a_json_file_reads_back():
    import enum
    from pathlib import Path

    from robustopt._io import json_default, json_ready

    class Norm(str, enum.Enum):
        LINF = "linf"

    value = {"attacks": [("PGD", 40, 1, "A")], 3: Path("runs/a"), "norm": Norm.LINF, "eps": torch.tensor(0.5),
             "flags": {True, False}, "none": None, 2.5: [1.0, float("inf")]}
    ready = json_ready(value)
    assert ready == json.loads(json.dumps(value, default=json_default))
    assert type(ready["norm"]) is str and ready["3"] == "runs/a" and ready["attacks"] == [["PGD", 40, 1, "A"]]
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_ready({"model": torch.nn.Linear(1, 1)})
    with pytest.raises(TypeError, match="key"):
        json_ready({(1, 2): 0})


def test_write_card_reads_the_standard_evaluation_of_the_run(run):
    folder, model, _ = run
    with pytest.raises(FileNotFoundError, match="--suite standard"):
        runs.write_card(folder)
    x, y = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.arange(8)
    ro.evaluate(model, (x, y), [PGD(ro.Linf(0.3), steps=2)], progress=False).to_json(folder / "eval-standard-best.json")
    path, written = runs.write_card(folder, weights="best")
    card = json.loads(path.read_text())
    assert written == card  # the card returned is the one on disk
    assert path == folder / "robustbench-best.json" and card["dataset"] == "mnist-mini" and card["name"] == "a"
    assert card["architecture"] == "small-cnn" and card["threat_model"] == "Linf" and card["eps"] == "0.3"


@pytest.mark.parametrize("content", ["[1, 2]", '"a run"', "3"])
def test_a_run_json_that_is_no_object_is_refused_in_words(run, content):
    folder, _, _ = run
    (folder / "run.json").write_text(content)
    with pytest.raises(ValueError, match="run.json holds a JSON .*, not a run's description"):
        ro.load_run(folder)
