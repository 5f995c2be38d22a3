"""The model zoo: trained and constructed models, each a run folder with a RobustBench card.

The zoo is the ``zoo/`` folder of the source tree (found when robustopt is installed editable or
run from a checkout; it is not part of the wheel), or the folder named by ``$ROBUSTOPT_ZOO``.
Every entry is a run folder that :func:`robustopt.load_run` loads::

    ZOO/NAME/entry.json        the zoo's own record: description, training method, base entry,
                               provenance (the commands that made and evaluated it)
    ZOO/NAME/run.json          as ``robustopt train`` writes it; a constructed defense adds
                               ``"defense"`` (robustopt.models.defenses) over its base's weights
    ZOO/NAME/model.*           the weights (a relative link to the base entry's or to a committed
                               run's weights where they are shared)
    ZOO/NAME/robustbench.json  the RobustBench card (``robustopt.evaluation.card``) with the exact
                               numbers and the provenance in its ``robustopt`` block
    ZOO/NAME/eval-SUITE.*      the evaluation the card was made from

Example:
    >>> ro.zoo.names()                          # ['cifar10-n-fgsm-linf', ..., 'mnist-pgd-linf', ...]
    >>> model = ro.zoo.load("mnist-pgd-linf")  # in eval mode
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pooch
from torch import nn

from robustopt.runs import CARD_NAME, RUN_FILE, check_run, load_run, read_info

__all__ = ["ENV_VAR", "ENTRY_FILE", "PREFIX", "Entry", "root", "names", "entry", "entries", "load", "prepare_run",
           "cache_dir", "leaderboard"]

ENV_VAR = "ROBUSTOPT_ZOO"
ENTRY_FILE = "entry.json"
PREFIX = "zoo:"  # `robustopt eval zoo:NAME`
_SOURCE_ZOO = Path(__file__).resolve().parents[2] / "zoo"  # the source tree's zoo (editable install, checkout)
_COPIED = (RUN_FILE, "config.json", "log.jsonl", "model.json", "model.safetensors")  # what an evaluation needs

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Entry:
    """One zoo entry: its folder, what it is and its card.

    Attributes:
        name: the entry's name (its folder's name).
        folder: the run folder.
        dataset / network / norm / eps: from ``run.json`` (network: the registry model's name).
        method: the training method of its weights ("pgd", "trades", ...).
        defense: the constructed defense over the weights (``Defense.spec()``), None for a trained model.
        base: the entry whose weights a constructed defense wraps, None for a trained model.
        description: one line on what the entry is.
        provenance: the commands that made and evaluated it (e.g. {"train": ..., "evaluate": ...}).
        card: the RobustBench card (``robustbench.json``), None before the entry is evaluated.
    """

    name: str
    folder: Path
    dataset: str
    network: str
    method: str
    norm: str
    eps: float
    defense: dict[str, Any] | None = None
    base: str | None = None
    description: str = ""
    provenance: dict[str, str] = field(default_factory=dict)
    card: dict[str, Any] | None = None

    @property
    def training(self) -> str:
        """The training method, followed by the defense over it (``pgd + quantize``)."""
        return self.method + (f" + {self.defense['kind']}" if self.defense else "")

    @property
    def threat(self) -> str:
        """The threat model in words, e.g. ``linf 8/255`` or ``l2 2``."""
        return f"{self.norm} {_eps(self.eps)}"

    @property
    def clean_accuracy(self) -> float | None:
        """Clean accuracy on the card's test images (a fraction), None without a card."""
        return self.card["robustopt"]["clean_accuracy"] if self.card else None

    @property
    def robust_accuracy(self) -> float | None:
        """Robust accuracy on the card's test images (a fraction), None without a card."""
        return self.card["robustopt"]["robust_accuracy"] if self.card else None


def root(path: PathLike | None = None) -> Path:
    """The zoo folder: ``path`` if given, else ``$ROBUSTOPT_ZOO``, else the source tree's ``zoo/``.

    Raises:
        FileNotFoundError: the folder does not exist (the zoo is not shipped in the wheel).
    """
    env = os.environ.get(ENV_VAR, "").strip()
    folder = Path(path) if path is not None else Path(env) if env else _SOURCE_ZOO
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no model zoo at {folder}: the zoo lives in the zoo/ folder of robustopt's source tree and is not "
            f"part of the wheel; install robustopt from a checkout (pip install -e .) or set ${ENV_VAR} to a zoo folder.")
    return folder


def names(path: PathLike | None = None) -> list[str]:
    """The names of the zoo's entries, sorted."""
    folder = root(path)
    return sorted(p.name for p in folder.iterdir() if (p / ENTRY_FILE).is_file())


def entry(name: str, path: PathLike | None = None) -> Entry:
    """The zoo entry ``name`` (a ``zoo:`` prefix is allowed).

    Raises:
        ValueError: no such entry (the message lists them), or its files are damaged.
    """
    if not isinstance(name, str):
        raise TypeError(f"a zoo entry name is a string such as 'mnist-pgd-linf', got {type(name).__name__}.")
    name = name.removeprefix(PREFIX)
    folder = root(path) / name
    if not name or "/" in name or not (folder / ENTRY_FILE).is_file():
        raise ValueError(f"no zoo entry {name!r}; the entries are: {', '.join(names(path))} (robustopt zoo list).")
    record = _read_json(folder / ENTRY_FILE)
    info = read_info(folder)
    card = _read_json(folder / CARD_NAME) if (folder / CARD_NAME).is_file() else None
    return Entry(name=name, folder=folder, dataset=info["data"], network=info["model"],
                 method=record.get("method", info.get("method", "")), norm=info["norm"], eps=float(info["eps"]),
                 defense=info.get("defense"), base=record.get("base"), description=record.get("description", ""),
                 provenance=dict(record.get("provenance", {})), card=card)


def entries(path: PathLike | None = None) -> list[Entry]:
    """Every entry of the zoo, sorted by name."""
    return [entry(n, path) for n in names(path)]


def load(name: str, path: PathLike | None = None) -> nn.Module:
    """The model of zoo entry ``name``, in eval mode, on the CPU (wrapped in its defense, if any).

    Example:
        >>> model = ro.zoo.load("mnist-pgd-linf-quantized")
    """
    return load_run(entry(name, path).folder)[0]


def prepare_run(name: str, out: PathLike | None = None, path: PathLike | None = None) -> Path:
    """A run folder of zoo entry ``name`` for commands that write results into it (``robustopt eval zoo:NAME``).

    The entry's ``run.json``, training files and weights are copied into ``out`` (default: a folder per
    entry in the user cache), so that results never land in the zoo itself; ``out`` naming the
    entry's own folder evaluates in place.

    Args:
        name: the entry (a ``zoo:`` prefix is allowed).
        out: the folder to evaluate in.
        path: the zoo folder (default: see :func:`root`).

    Returns:
        The run folder.

    Raises:
        ValueError: no such entry, or ``out`` is a file or another run's folder.
    """
    item = entry(name, path)
    out = Path(out) if out is not None else cache_dir() / item.name
    if out.exists() and out.resolve() == item.folder.resolve():
        return out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the evaluation of zoo:{item.name}.")
    if (out / RUN_FILE).is_file() and read_info(out).get("zoo") != item.name:
        raise ValueError(f"{out} is the run folder of another model; give an empty folder or one made for "
                         f"zoo:{item.name}.")
    out.mkdir(parents=True, exist_ok=True)
    for file in _COPIED:
        source = item.folder / file
        if source.is_file() and not (out / file).is_file():
            if file == RUN_FILE:
                (out / file).write_text(json.dumps({**read_info(item.folder), "zoo": item.name}, indent=2) + "\n")
            else:
                shutil.copyfile(source, out / file)  # follows the entry's links to shared weights
    check_run(out)
    return out


def cache_dir() -> Path:
    """Where ``robustopt eval zoo:NAME`` evaluates without ``--out``: ``zoo-runs`` in the user cache folder."""
    return Path(pooch.os_cache("robustopt")) / "zoo-runs"


def leaderboard(path: PathLike | None = None) -> str:
    """The zoo's leaderboard in Markdown, RobustBench-style: one row per entry and threat model, from the cards.

    Rows are grouped by dataset and threat model and sorted by robust accuracy, highest first;
    entries without a card are listed last with their accuracies empty.
    """
    groups: dict[tuple[str, str, float], list[Entry]] = {}
    for item in entries(path):
        groups.setdefault((item.dataset, item.norm, item.eps), []).append(item)
    lines = []
    for (dataset, norm, eps), items in sorted(groups.items()):
        items.sort(key=lambda e: (e.robust_accuracy is None, -(e.robust_accuracy or 0), e.name))
        lines += [f"## {dataset}, {items[0].threat.replace(' ', ' eps = ')}", "",
                  "| # | Entry | Network | Training | Clean | Robust | Attacks | Test images | Description |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for rank, item in enumerate(items, 1):
            card = item.card["robustopt"] if item.card else {}
            clean = f"{100 * card['clean_accuracy']:.1f}%" if card else ""
            robust = f"{100 * card['robust_accuracy']:.1f}%" if card else ""
            attacks = ", ".join(card.get("attacks", [])) if card else "not evaluated"
            lines.append(f"| {rank} | {item.name} | {item.network} | {item.training} | {clean} | {robust} | {attacks} | "
                         f"{card.get('n', ''):,} | {item.description} |" if card else
                         f"| {rank} | {item.name} | {item.network} | {item.training} |  |  | {attacks} |  | "
                         f"{item.description} |")
        lines.append("")
    return "\n".join(lines)


def _eps(eps: float) -> str:
    k = eps * 255
    return f"{eps:g}" if round(eps, 4) == eps or abs(k - round(k)) > 1e-6 else f"{round(k)}/255"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it from the repository.") from err
