"""Run folders: their layout, loading a trained run, and the result files in them.

A run folder (``robustopt train --out RUN``)::

    RUN/run.json          what the run is (dataset, model, norm, eps, method, seed), written when
                          its training has finished; for a model given by `robustopt eval --model
                          SPEC --out RUN`, the model's description instead of weights (its spec,
                          files with their sha256, mean/std) and the data SPEC
    RUN/config.json, log.jsonl, model.*, best.*, partial.*
                          the training's own files (see robustopt.training.fit)
    RUN/eval-SUITE.json   an evaluation (``Evaluation.to_json``), its table in eval-SUITE.md and,
                          while it runs, its progress in eval-SUITE.progress.json
    RUN/sweep-NORM.json   an eps sweep (``SweepCurve.to_json``), with sweep-NORM.md and .png;
                          sweep-NORM-independent.* for ``--independent``
    RUN/robustbench.json  the RobustBench card (``robustopt card``)
    RUN/.lock             held by the process that writes into the folder (robustopt._lock)

Results of the best epoch's weights (``weights="best"``) end in ``-best``. A report
(``robustopt report``) is ``report.md`` with PNG figures beside it and ``report.html``.

The name of ``eval-SUITE.json``, ``sweep-NORM.json`` or ``report.md`` does not say everything
that defines it, so each records its *request* (the JSON results in ``meta.request``, report.md
on its first line), and :func:`refuse_replacement` refuses to replace a file made for another
request unless the caller passes ``overwrite``.

Example:
    >>> model, info = ro.load_run("runs/a")          # the final weights, in eval mode, and run.json
    >>> evaluations = read_evaluations("runs/a")     # [("eval-madry.json", Evaluation), ...]
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from robustopt import checkpoint, data as datasets
from robustopt._io import atomic_write_json, json_ready
from robustopt._lock import RunFolderBusyError
from robustopt.evaluation.card import robustbench_card
from robustopt.evaluation.results import Evaluation
from robustopt.evaluation.sweep import SweepCurve
from robustopt.models import defenses
from robustopt.models import specs
from robustopt.training import BEST_NAME, CHECKPOINT_NAME, CONFIG_NAME, LOG_NAME, PARTIAL_NAME

__all__ = [
    "RUN_FILE", "MODEL_SPEC", "WEIGHTS", "REPORT_MD", "REPORT_HTML", "CARD_NAME", "RunFolderBusyError", "check_run", "load_run", "read_info",
    "read_config", "read_log", "result_stem", "result_files", "read_evaluations", "read_sweeps", "saved_request",
    "refuse_replacement", "refuse_restart", "refuse_resume_of_nothing", "report_request", "request_line", "relative",
    "resume_point", "training_started", "write_card",
]

RUN_FILE = "run.json"
MODEL_SPEC = "model_spec"  # run.json's key for a model given by --model (robustopt.models.specs.build)
WEIGHTS = {"final": CHECKPOINT_NAME, "best": BEST_NAME}  # load_run(weights=...) -> checkpoint name in the run
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
CARD_NAME = "robustbench.json"  # RobustBench's file of one model (robustbench-best.json for the best weights)
_REQUEST_LINE = "<!-- robustopt-report {} -->"  # report.md's first line: its request (invisible when rendered)

PathLike = str | os.PathLike[str]


# --- the run and its model ----------------------------------------------------------------------


def check_run(run: PathLike, weights: str | None = "final") -> Path:
    """``run`` as a Path, once it is known to be a finished run folder with the weights asked for.

    Args:
        run: the folder ``robustopt train --out`` made.
        weights: "final", "best" (see :func:`load_run`) or None to check only ``run.json``.

    Raises:
        FileNotFoundError: no such folder, no ``run.json`` (training unfinished), or no such weights;
            the message says what to run.
        ValueError: ``run`` is a file, or ``weights`` is not "final" or "best".
    """
    run = Path(run)
    if weights is not None and weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {sorted(WEIGHTS)}, got {weights!r}.")
    if not run.exists():
        raise FileNotFoundError(f"run folder {run} does not exist; pass a folder made by `robustopt train --out {run}`.")
    if not run.is_dir():
        raise ValueError(f"{run} is a file, not a run folder; pass the folder that holds {RUN_FILE} "
                         "(made by `robustopt train --out RUN`).")
    if not (run / RUN_FILE).is_file():
        raise FileNotFoundError(
            f"{run} is not a finished robustopt run (no {RUN_FILE}, which is written when its training has "
            f"finished): train it with `robustopt train --out {run}`, or continue an interrupted training with "
            f"`robustopt train ... --resume --out {run}`.")
    if weights is None or checkpoint.exists(run / WEIGHTS[weights]):
        return run
    if MODEL_SPEC in read_info(run):  # made by `robustopt eval --model SPEC --out RUN`: no weights of its own
        if weights == "best":
            raise ValueError(f"{run} evaluates a model given by --model (no training, no best epoch); "
                             "use the final weights.")
        return run
    paths = checkpoint.checkpoint_paths(run / WEIGHTS[weights])
    if paths.weights.is_file():  # the weights without the record that commits them
        raise FileNotFoundError(f"{paths.metadata} is missing though {paths.weights.name} is there: the checkpoint "
                                "is incomplete (a copy without its .json, which holds the weights' sha256, or a save "
                                "cut short). Copy the run folder again with that file, or continue the training with "
                                f"`robustopt train ... --resume --out {run}`.")
    if weights == "final":
        raise FileNotFoundError(f"{run} has no trained weights ({WEIGHTS[weights]}.*): its training ended before "
                                f"it saved any. Continue it with `robustopt train ... --resume --out {run}` (the "
                                "options it was started with).")
    raise FileNotFoundError(f"{run} has no {WEIGHTS[weights]}.* weights: they are kept only when training runs with "
                            "early stopping (`robustopt train --early-stopping-patience K`); use the final weights.")


def load_run(run: PathLike, weights: str = "final") -> tuple[nn.Module, dict[str, Any]]:
    """Load the trained model of a run folder and its ``run.json``.

    Args:
        run: run folder made by ``robustopt train`` (``robustopt.experiments.train_run``).
        weights: "final" (``model.*``, the weights training ended with) or "best" (``best.*``, the
            epoch with the best validation robust accuracy, kept when early stopping is on).

    Returns:
        ``(model, info)``: the model in eval mode, on the CPU, and the dict of ``run.json``; wrapped in the
        constructed defense that ``run.json`` names under ``"defense"``, if any (``robustopt.models.defenses``).

    Raises:
        FileNotFoundError / ValueError: see :func:`check_run`.

    Example:
        >>> model, info = ro.load_run("bench/results/cifar10-cpu/A")
    """
    run = check_run(run, weights)
    info = read_info(run)
    if MODEL_SPEC in info:  # the model of `robustopt eval --model SPEC`, rebuilt from its description
        return specs.rebuild(info[MODEL_SPEC]).eval(), info
    model, _ = checkpoint.load(run / WEIGHTS[weights])
    if info.get("defense"):  # a constructed defense over these weights (robustopt.models.defenses)
        model = defenses.wrap(model, info["defense"])
    return model.eval(), info


def read_info(run: PathLike) -> dict[str, Any]:
    """The ``run.json`` of a run folder.

    Raises:
        FileNotFoundError / ValueError: see :func:`check_run`; ValueError also for a damaged file.
    """
    path = check_run(run, weights=None) / RUN_FILE
    try:
        info = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); train the run again.") from err
    if not isinstance(info, dict):
        raise ValueError(f"{path} holds a JSON {type(info).__name__}, not a run's description (an object with its "
                         "data, model, norm and eps); train the run again.")
    return info


def read_config(run: PathLike) -> dict[str, Any]:
    """The training configuration (``config.json``, ``TrainConfig.to_dict``) of a run; {} when it has none."""
    path = Path(run) / CONFIG_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def read_log(run: PathLike) -> list[dict[str, Any]] | None:
    """The training log (``log.jsonl``, one record per finished epoch) of a run; None when it has none.

    Raises:
        ValueError: a line is not JSON.
    """
    path = Path(run) / LOG_NAME
    if not path.is_file():
        return None
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as err:
                raise ValueError(f"{path}, line {i}, is not JSON ({err}); the training log is damaged.") from err
    return records


# --- result files -------------------------------------------------------------------------------


def result_stem(kind: str, name: str, weights: str = "final") -> str:
    """The file name, without suffix, of a result: ``eval-madry``, ``sweep-linf-independent``, ``eval-madry-best``.

    Args:
        kind: "eval" or "sweep".
        name: the suite ("madry", "standard", ...) or the norm, with "-independent" for an independent sweep.
        weights: "final" or "best".
    """
    return f"{kind}-{name}" if weights == "final" else f"{kind}-{name}-{weights}"


def result_files(run: PathLike, kind: str) -> list[Path]:
    """The ``KIND-*.json`` results of a run, sorted (eval-madry.json, not eval-madry.progress.json)."""
    return sorted(p for p in Path(run).glob(f"{kind}-*.json") if p.is_file() and "." not in p.name[: -len(".json")])


def read_evaluations(run: PathLike) -> list[tuple[str, Evaluation]]:
    """Every evaluation of a run, as (file name, Evaluation), sorted by file name."""
    return [(p.name, Evaluation.from_json(p)) for p in result_files(run, "eval")]


def read_sweeps(run: PathLike) -> list[tuple[str, SweepCurve]]:
    """Every sweep of a run, as (file name, SweepCurve), sorted by file name."""
    return [(p.name, SweepCurve.from_json(p)) for p in result_files(run, "sweep")]


def saved_request(path: Path) -> Mapping[str, Any] | None:
    """The ``meta.request`` of the result JSON ``path`` (None when it has none or is unreadable)."""
    try:
        request = json.loads(path.read_text(encoding="utf-8"))["meta"]["request"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return request if isinstance(request, dict) else None


def refuse_replacement(path: Path, request: Mapping[str, Any], saved: Mapping[str, Any] | None, *,
                       overwrite: bool, what: str) -> None:
    """Raise FileExistsError if ``path`` holds a result made for another request than ``request``.

    Args:
        path: the result file about to be written.
        request: the JSON-ready parameters that define the new result.
        saved: the parameters recorded in the existing file (None: none recorded, or unreadable).
        overwrite: replace whatever is there.
        what: what the file holds ("evaluation", "sweep", "report"), for the message.
    """
    request = json_ready(request)  # as it reads back from the file (tuples become lists)
    if overwrite or not path.exists() or saved == request:
        return
    if saved is None:
        why = "its parameters are not recorded (an older robustopt, or a damaged file)"
    else:
        differ = [k for k in sorted(set(request) | set(saved)) if saved.get(k) != request.get(k)]
        why = "; ".join(f"{k} {_short(saved.get(k))} there, {_short(request.get(k))} now" for k in differ)
    raise FileExistsError(
        f"{path} holds another {what} ({why}); pass --overwrite (overwrite=True) to replace it, "
        "or move that file away first."
    )


def adds_rows(request: Mapping[str, Any], saved: Mapping[str, Any] | None) -> bool:
    """Whether ``request`` is ``saved`` with more attack rows (and transfer sources) after its own.

    Such a result can be extended rather than recomputed: the saved rows stay as they are.
    """
    if saved is None:
        return False
    request = json_ready(request)
    old, new = saved.get("attacks"), request.get("attacks")
    old_sources, new_sources = saved.get("sources") or {}, request.get("sources") or {}
    same_rest = all(saved.get(k) == request.get(k) for k in set(request) | set(saved) if k not in ("attacks", "sources"))
    return (same_rest and isinstance(old, list) and isinstance(new, list) and len(old) < len(new)
            and new[: len(old)] == old and all(new_sources.get(k) == v for k, v in old_sources.items()))


def request_line(request: Mapping[str, Any]) -> str:
    """The first line of a report.md: its request, as an HTML comment (invisible when rendered)."""
    return _REQUEST_LINE.format(json.dumps(request)) + "\n"


def report_request(md_path: Path) -> dict[str, Any] | None:
    """The request recorded on the first line of an existing report.md (None if there is none)."""
    try:
        with open(md_path, encoding="utf-8") as f:
            first = f.readline()
    except OSError:
        return None
    match = re.fullmatch(_REQUEST_LINE.format(r"(\{.*\})") + r"\n?", first)
    try:
        request = json.loads(match.group(1)) if match else None
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def relative(path: PathLike, base: PathLike) -> str:
    """``path`` relative to the folder ``base``: a request that is the same wherever the command runs from."""
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- training state and the RobustBench card ------------------------------------------------------


def resume_point(run: PathLike, epochs: int) -> tuple[str, int]:
    """Where ``train --resume`` continues ``run`` from (or that there is nothing to resume).

    Returns:
        A one-line message, and the number of epochs already trained (``epochs`` when nothing is left).

    Raises:
        FileNotFoundError / ValueError: the checkpoint to continue from is incomplete or damaged
            (see :func:`robustopt.checkpoint.verify`).
    """
    run = Path(run)
    ckpt, partial = run / CHECKPOINT_NAME, run / PARTIAL_NAME
    # Checked whole before anything is said or trained: a damaged checkpoint is refused here, not after the plan.
    state = checkpoint.verify(ckpt).get("extra") or {} if checkpoint.exists(ckpt) else {}
    inside = checkpoint.read_metadata(partial).get("extra") or {} if checkpoint.exists(partial) else {}
    epoch, step = state.get("epoch", 0), state.get("step", 0)
    if inside.get("epoch") == epoch:  # a mid-epoch checkpoint of the epoch after the last finished one
        checkpoint.verify(partial)
        batch = (inside.get("position") or {}).get("batch")
        return (f"resuming {run} inside epoch {epoch + 1} of {epochs}, after batch {batch} "
                f"(optimizer step {inside.get('step')})."), epoch
    if not state:
        return f"nothing to resume in {run}: it holds no training checkpoint, so a new run starts there.", 0
    where = f"resuming {run} after epoch {epoch} of {epochs} (optimizer step {step})"
    if state.get("stopped"):
        return f"{where}: it stopped early ({state['stopped']}), nothing left to train.", epochs
    return (f"{where}: nothing left to train.", epochs) if epoch >= epochs else (f"{where}.", epoch)


def training_started(run: PathLike) -> bool:
    """True when ``run`` holds a training that ``train --resume`` can continue: its ``config.json`` or a checkpoint."""
    run = Path(run)
    return (run / CONFIG_NAME).is_file() or any(checkpoint.exists(run / n) for n in (CHECKPOINT_NAME, PARTIAL_NAME))


def refuse_restart(run: PathLike) -> None:
    """Refuse to start a new training in ``run`` over the checkpoint of another (``train`` without ``--resume``).

    Raises:
        FileExistsError: ``run`` holds a training checkpoint; the message names ``--resume``.
    """
    run = Path(run)
    for name in (CHECKPOINT_NAME, PARTIAL_NAME):
        if checkpoint.exists(run / name):
            raise FileExistsError(f"{run} already holds a training checkpoint ({run / name}.json): add --resume "
                                  "(resume=True) to continue that run, or choose another --out. Nothing was "
                                  "overwritten.")


def refuse_resume_of_nothing(run: PathLike) -> None:
    """Refuse ``train --resume`` into a folder that holds no training (a mistyped ``--out``, say).

    Raises:
        FileNotFoundError: ``run`` holds neither ``config.json`` nor a checkpoint (or is missing).
    """
    if not training_started(run):
        raise FileNotFoundError(f"--resume: {run} holds no training to continue (no {CONFIG_NAME}, no "
                                f"{CHECKPOINT_NAME}.json); check --out, or leave out --resume to start a new run "
                                "there. Nothing was written.")


def write_card(run: PathLike, *, weights: str = "final", evaluation: PathLike | None = None,
               out: PathLike | None = None, **fields: Any) -> tuple[Path, dict[str, Any]]:
    """Write the RobustBench card of a run folder (``robustopt card RUN``); return where, and the card.

    Args:
        run: the run folder (its ``run.json`` gives the dataset and the architecture).
        weights: "final" or "best": which weights' evaluation to read.
        evaluation: the evaluation JSON; default ``RUN/eval-standard.json``
            (``eval-standard-best.json`` for the best weights).
        out: the card's path; default ``RUN/robustbench.json`` (``robustbench-best.json``).
        **fields: :func:`robustopt.evaluation.card.robustbench_card` arguments (name defaults to
            the run folder's name, architecture to the registry model's name).

    Returns:
        The path written and the card, the dict written there.

    Raises:
        FileNotFoundError: the run or its evaluation is missing (the message says what to run).
        ValueError: see ``robustbench_card``, or an unreadable evaluation file.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {sorted(WEIGHTS)}, got {weights!r}.")
    run = check_run(run, weights=None)
    info = read_info(run)
    path = Path(evaluation) if evaluation is not None else run / f"{result_stem('eval', 'standard', weights)}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no evaluation {path}: run `robustopt eval {run} --suite standard"
            f"{'' if weights == 'final' else ' --weights ' + weights}` first (RobustBench's autoattack_acc is the "
            "AutoAttack-grade worst case, on all test images for a leaderboard entry).")
    fields.setdefault("name", run.resolve().name)
    fields.setdefault("architecture", info["model"])
    fields.setdefault("dataset", info["data"])
    fields.setdefault("test_size", info.get("test_size") or datasets.info(info["data"]).test_size)
    card = robustbench_card(Evaluation.from_json(path), **fields)
    default = run / (CARD_NAME if weights == "final" else CARD_NAME.replace(".json", f"-{weights}.json"))
    return atomic_write_json(Path(out) if out is not None else default, card), card
