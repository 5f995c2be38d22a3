"""Evaluate your own model on your own data into a run folder: ``robustopt eval --model SPEC --data SPEC --out DIR``.

The folder gets a ``run.json`` that describes the model instead of holding weights (its SPEC,
the files it comes from with their sha256, mean/std; see :func:`robustopt.models.specs.build`)
and names the data (a registry name or a data SPEC with its options), so that ``eval``,
``sweep``, ``report`` and ``card`` work on it afterwards like on a trained run, and a changed
model file is noticed rather than silently evaluated. Beside each ``eval-SUITE.json`` an
``eval-SUITE-examples.csv`` lists every example's file, label and flags: the images that broke.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from robustopt import data as datasets
from robustopt._device import resolve_device
from robustopt._io import atomic_write_json, atomic_write_text, json_ready
from robustopt.data import formats as data_formats
from robustopt.evaluation import Evaluation
from robustopt.experiments import eval_run
from robustopt.models import specs
from robustopt.runs import MODEL_SPEC, RUN_FILE, result_stem
from robustopt.threat import Linf, ThreatModel, check_norm

__all__ = ["eval_model", "PROBE_SIZE"]

PROBE_SIZE = 32  # images of the first batch the model is tried on (shapes, labels, normalization)


def eval_model(
    out: str | os.PathLike[str],
    *,
    model: str,
    data: str,
    eps: float,
    weights: str | os.PathLike[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int | None = None,
    skip_bad: bool = False,
    norm: type[ThreatModel] = Linf,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    echo: Callable[[str], None] = print,
    overwrite: bool = False,
    **eval_args: Any,
) -> Evaluation:
    """Describe a user's model and data in the run folder ``out``, then evaluate it there (``eval_run``).

    Args:
        out: the run folder (created). One that describes another model or data is refused
            unless ``overwrite``.
        model: a model SPEC (see :mod:`robustopt.models.specs`). weights: its state dict file.
        data: a registry dataset (its test split) or a data SPEC (``folder:PATH``, ``npz:PATH``).
        eps / norm: the threat model: its radius and its class (``ro.Linf``, ``ro.L2``, ``ro.L1``).
        mean / std: wrap the model (``ro.models.wrap``).
        image_size / skip_bad: folder data options (see ``ro.data.load``).
        seed / root / echo / overwrite / **eval_args: as in ``robustopt.experiments.eval_run``
            (suite, limit, batch_size, device, ...).

    Returns:
        The evaluation, also written to ``out/eval-SUITE.json``.

    Raises:
        ValueError: a bad spec, data the model cannot take (the message names the shapes), labels
            beyond the model's outputs, or a factory that raises.
        TypeError: ``norm`` is not a threat-model class.
        FileExistsError: ``out`` describes another model or data and ``overwrite`` is False.
    """
    out = Path(out)
    threat = check_norm(norm)(eps)
    resolve_device(eval_args.get("device", "cpu"))  # before out/run.json is written
    net, description = specs.build(model, weights=weights, mean=mean, std=std)
    options = data_formats.spec_options(image_size, skip_bad)
    if data_formats.is_spec(data):  # recorded with an absolute path: the run works from any folder
        data = data_formats.absolute(data)
        ds = datasets.load(data, **options)
        x, y = data_formats.first(ds, PROBE_SIZE)
        size, skipped = len(ds), [str(p) for p in getattr(ds, "skipped", [])]
        classes, labels = ds.num_classes, ds.targets
    else:
        if options:
            raise ValueError("--image-size and --skip-bad apply to folder: data only.")
        x_all, y_all = datasets.load(data, split="test", root=root)
        x, y, size, skipped = x_all[:PROBE_SIZE], y_all[:PROBE_SIZE], len(x_all), []
        classes, labels = datasets.info(data).num_classes, y_all
        del x_all
    logits = _probe(net, model, data, x)
    if logits.shape[1] < classes:
        raise ValueError(f"the model {model} has {logits.shape[1]} outputs but {data} has {classes} classes; "
                         "pass a model with one output per class.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", specs.NormalizationWarning)
        for message in specs.check_normalization(net, x, y):
            echo(f"warning: {message}")
    if skipped:
        echo(f"skipped {len(skipped)} unreadable image{'s' * (len(skipped) != 1)} (--skip-bad), e.g. {skipped[0]}; "
             f"all are listed in {out / RUN_FILE}.")
    info = {"data": data, "data_options": options, "model": _display_name(model), MODEL_SPEC: description,
            "norm": threat.norm.lower(), "eps": threat.eps, "method": None, "seed": seed, "test_size": size,
            "skipped": skipped}
    _write_info(out, info, overwrite)
    ev = eval_run(out, norm=norm, eps=eps, seed=seed, root=root, echo=echo, overwrite=overwrite, **eval_args)
    csv_path = write_examples(ev, out / f"{result_stem('eval', eval_args.get('suite', 'madry'))}-examples.csv",
                              labels=labels[: ev.n].tolist())
    broken = int((ev.correct & ~ev.robust).sum())
    echo(f"per example: {csv_path} (file, label, correct, robust; {broken} correctly classified image"
         f"{'s' * (broken != 1)} broken by the attacks)")
    card = f"robustopt card {out}" + ("" if eval_args.get("suite") == "standard" else " after --suite standard")
    echo(f"next: robustopt report {out}   (robustopt sweep {out}; {card})")
    return ev


def write_examples(ev: Evaluation, path: str | os.PathLike[str], labels: Sequence[int]) -> Path:
    """Write one CSV line per example: index, file (when known), label, clean-correct and robust flags (0/1)."""
    paths = ev.meta.get("paths") or [""] * ev.n
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["index", "file", "label", "correct", "robust"])
    for i, (p, label, c, r) in enumerate(zip(paths, labels, ev.correct.tolist(), ev.robust.tolist())):
        writer.writerow([i, p, int(label), int(c), int(r)])
    return atomic_write_text(path, text.getvalue())


def _probe(net: torch.nn.Module, spec: str, data: str, x: torch.Tensor) -> torch.Tensor:
    """The model's logits on a first batch, or a one-line error naming the shapes."""
    try:
        with torch.no_grad():
            logits = net(x)
    except Exception as err:  # noqa: BLE001  (the user's model: say what it was given)
        raise ValueError(f"the model {spec} fails on images of {data} of shape {tuple(x.shape[1:])} "
                         f"({type(err).__name__}: {(str(err).splitlines() or [''])[0]}); resize them with "
                         "--image-size or pass a model for such images.") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(x):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model {spec} returns {got} for {len(x)} images; it must return logits (N, classes).")
    return logits


def _display_name(spec: str) -> str:
    kind, sep, rest = spec.partition(":")
    return Path(rest).name if sep and kind in ("torchscript", "export") else Path(kind).name + sep + rest if sep else spec


def _write_info(out: Path, info: dict[str, Any], overwrite: bool) -> None:
    """Write ``out/run.json``; keep the results of an earlier call when it describes the same model and data."""
    path = out / RUN_FILE
    if path.is_file() and not overwrite:
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = None
        same = isinstance(saved, dict) and all(saved.get(k) == json_ready(info[k])
                                               for k in ("data", "data_options", MODEL_SPEC))
        if not same:
            raise FileExistsError(f"{out} holds another run (another model or data, or a trained run); pass "
                                  "--overwrite to replace it, or another --out.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, info)
