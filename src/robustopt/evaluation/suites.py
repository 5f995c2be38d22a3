"""Declarative lists of attacks, the rows of a robustness table, in a registry of named suites.

``madry`` gives the rows of Madry et al. (2018), Table 1 (MNIST) and Table 2 (CIFAR-10), with
the paper's numbers beside them (:class:`MadryTable`); ``standard`` the AutoAttack-grade ensemble
of Croce & Hein (2020), with its L1 protocol (Croce & Hein 2021) and its version for randomized
models (EOT). Every suite that ``robustopt eval --suite NAME`` runs is a :class:`Suite` in
:data:`SUITES`, added with :func:`register_suite`: its builder, its evaluation mode and its paper
reference in one place.

Example:
    >>> @register_suite("pgd-only", mode="cascade", summary="PGD 100 steps")
    ... def pgd_only(request: SuiteRequest) -> list[Attack]:
    ...     return [create("pgd", request.threat, steps=100, seed=request.seed)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from robustopt import data as datasets
from robustopt._registry import Registry
from robustopt.attacks import Attack, Transfer, create
from robustopt.attacks.base import WHITE_BOX_SOURCE
from robustopt.attacks.passes import is_randomized
from robustopt.attacks.square import AUTOATTACK_SCHEDULE_SCALE
from robustopt.threat import L1, L2, Linf, ThreatModel

__all__ = ["madry", "standard", "MADRY_REFERENCE", "MADRY_TABLES", "EOT_DRAWS", "RowSpec", "MadryTable",
           "madry_preset", "paper_reference", "Suite", "SuiteRequest", "SUITES", "register_suite", "get_suite",
           "names"]

Preset = Literal["mnist", "cifar10"]
Mode = Literal["cascade", "independent"]


# --- the paper's tables ------------------------------------------------------------------------
@dataclass(frozen=True)
class RowSpec:
    """One attack row of Madry et al.'s tables, by its configuration.

    Args:
        loss: "fgsm" (one step of eps along the gradient's sign), "ce" (PGD on the cross-entropy)
            or "cw" (PGD on the CW margin).
        steps: PGD steps (1 for FGSM).
        restarts: PGD restarts (1 for FGSM).
        kappa: confidence of the CW margin (the paper's CW+ uses 50).
        targeted: None, or "least-likely" (the paper's targeted PGD).
    """

    loss: Literal["fgsm", "ce", "cw"]
    steps: int = 1
    restarts: int = 1
    kappa: float = 0.0
    targeted: str | None = None

    def build(self, threat: ThreatModel, rel_step: float, max_restarts: int | None = None) -> Attack:
        """The attack of this row under ``threat``, PGD's step ``rel_step * eps``, restarts capped at ``max_restarts``."""
        if self.loss == "fgsm":
            return create("fgsm", threat)
        restarts = self.restarts if max_restarts is None else min(self.restarts, max_restarts)
        return create("pgd", threat, steps=self.steps, restarts=restarts, rel_step_size=rel_step, loss=self.loss,
                      kappa=float(self.kappa), targeted=self.targeted)


_FGSM = RowSpec("fgsm")


def _pgd(steps: int, restarts: int = 1, targeted: str | None = None) -> RowSpec:
    return RowSpec("ce", steps, restarts, targeted=targeted)


def _cw(steps: int, kappa: float = 0.0) -> RowSpec:
    return RowSpec("cw", steps, kappa=kappa)


Rows = tuple[tuple[RowSpec, float | None], ...]  # (row, the paper's accuracy in %, None where it has none)


@dataclass(frozen=True)
class MadryTable:
    """One of the paper's tables: its rows, their PGD step, and the paper's numbers.

    Args:
        title: where the numbers come from, for captions.
        eps: the L-inf radius of the table, pixel space.
        rel_step: PGD's step as a fraction of eps.
        natural: the paper's clean accuracy of A, in %.
        white_box: the rows attacking A itself, with the paper's accuracy (%).
        transfer: the rows transferred from each source, by the source's table name; key None holds
            the rows from any other source.
    """

    title: str
    eps: float
    rel_step: float
    natural: float
    white_box: Rows
    transfer: Mapping[str | None, Rows]

    @property
    def threat(self) -> Linf:
        """The table's threat model."""
        return Linf(self.eps)

    def transfer_rows(self, source: str) -> tuple[RowSpec, ...]:
        """The rows transferred from the source named ``source``."""
        return tuple(spec for spec, _ in self.transfer.get(source, self.transfer[None]))

    def applies(self, threat: ThreatModel | None) -> bool:
        """Whether an evaluation under ``threat`` compares with this table: L-inf at its eps (within 0.1%)."""
        return threat is not None and threat.norm == "Linf" and math.isclose(threat.eps, self.eps, rel_tol=1e-3)

    def reference(self) -> dict[tuple, float]:
        """The paper's numbers (%) keyed like ``robustopt.evaluation.row_key``: (name, steps, restarts, source)."""
        numbers: dict[tuple, float] = {("Natural", None, None, ""): self.natural}
        sources = [(WHITE_BOX_SOURCE, self.white_box)] + [(s, rows) for s, rows in self.transfer.items() if s]
        for source, rows in sources:
            for spec, accuracy in rows:
                if accuracy is not None:
                    attack = spec.build(self.threat, self.rel_step)
                    numbers[(attack.name, attack.steps, attack.restarts, source)] = accuracy
        return numbers


_MNIST_TRANSFER_OTHER = (_FGSM, _pgd(40), _cw(40, kappa=50))
_CIFAR_TRANSFER = (_FGSM, _pgd(7), _cw(30))

# The paper's MNIST step is eps/30 (0.01 at 0.3), its CIFAR-10 step eps/4 (2/255 at 8/255).
MADRY_TABLES: dict[str, MadryTable] = {
    "mnist": MadryTable(
        title="Madry et al. (2018), Table 1: full MNIST, 100k training steps, up to 20 restarts",
        eps=0.3, rel_step=1 / 30, natural=98.8,
        white_box=((_FGSM, 95.6), (_pgd(40), 93.2), (_pgd(100), 91.8), (_pgd(40, 20), 90.4), (_pgd(100, 20), 89.3),
                   (_pgd(40, targeted="least-likely"), 92.7), (_cw(40), 94.0), (_cw(40, kappa=50), 93.9)),
        transfer={
            "A'": ((_FGSM, 96.8), (_pgd(40), 96.0), (_pgd(100, 20), 95.7), (_cw(40), 97.0), (_cw(40, kappa=50), 96.4)),
            "B": tuple(zip(_MNIST_TRANSFER_OTHER, (95.4, 96.4, 95.7))),
            None: tuple((spec, None) for spec in _MNIST_TRANSFER_OTHER),
        }),
    "cifar10": MadryTable(
        title="Madry et al. (2018), Table 2: full CIFAR-10, wide ResNet",
        eps=8 / 255, rel_step=1 / 4, natural=87.3,
        white_box=((_FGSM, 56.1), (_pgd(7), 50.0), (_pgd(20), 45.8), (_cw(30), 46.8)),
        transfer={
            "A'": tuple(zip(_CIFAR_TRANSFER, (67.0, 64.2, 78.7))),
            "A_nat": tuple(zip(_CIFAR_TRANSFER, (85.6, 86.0, None))),
            None: tuple((spec, None) for spec in _CIFAR_TRANSFER),
        }),
}

# The paper's numbers (accuracy in %) per table, keyed like evaluation.row_key: (name, steps, restarts, source).
MADRY_REFERENCE: dict[str, dict[tuple, float]] = {name: table.reference() for name, table in MADRY_TABLES.items()}


def _dataset_table(data: str | None) -> str:
    """The key of the table a dataset compares with (its ``DatasetInfo.madry_table``); "" for a data SPEC,
    an unknown name or None."""
    if not isinstance(data, str) or datasets.formats.is_spec(data):
        return ""
    try:
        return datasets.info(data).madry_table
    except ValueError:
        return ""


def madry_preset(data: str | None) -> Preset:
    """Which of the paper's tables a madry suite on ``data`` follows: the dataset's (its
    ``DatasetInfo.madry_table``), Table 1's ("mnist") for a dataset without one."""
    return _dataset_table(data) or "mnist"  # type: ignore[return-value]


def paper_reference(data: str | None, threat: ThreatModel | None) -> MadryTable | None:
    """The paper's table an evaluation on ``data`` under ``threat`` compares with, if any.

    The dataset's table (``DatasetInfo.madry_table``: Table 1 for MNIST and the shipped
    mnist-mini, Table 2 for CIFAR-10) when the threat model is the table's, L-inf at eps 0.3 or
    8/255 (within 0.1%); None for a dataset without a table (a data SPEC too) or another threat model.
    """
    table = MADRY_TABLES.get(_dataset_table(data))
    return table if table is not None and table.applies(threat) else None


def madry(
    threat: ThreatModel,
    sources: Mapping[str, nn.Module] | None = None,
    *,
    preset: Preset = "mnist",
    max_restarts: int | None = None,
) -> list[Attack]:
    """The rows of Madry et al. (2018): white-box attacks on A, then transfer attacks from each source.

    MNIST (Table 1): FGSM; PGD 40x1, 100x1, 40x20, 100x20; targeted PGD 40 (least-likely
    class); CW 40; CW+ 40 (kappa=50); step eps/30. From source A' the paper's FGSM, PGD 40,
    PGD 100x20, CW, CW+; from any other source (B, A_nat, ...) FGSM, PGD 40, CW+.
    CIFAR-10 (Table 2): FGSM, PGD 7, PGD 20, CW 30, step eps/4; from every source FGSM, PGD 7, CW 30.
    Evaluate with ``mode="independent"`` to get each row alone, as in the paper.

    Args:
        threat: the threat model, e.g. ``Linf(0.3)`` (MNIST) or ``Linf(8/255)`` (CIFAR-10).
        sources: transfer sources by table name, e.g. ``{"A'": m2, "B": mb, "A_nat": mnat}``.
        preset: "mnist" (Table 1) or "cifar10" (Table 2): a key of ``MADRY_TABLES`` (``madry_preset(data)``
            gives a dataset's).
        max_restarts: cap on restarts (e.g. 2 for a quick demo); rows show the restarts actually run.

    Returns:
        The list of attacks, white-box rows first.

    Example:
        >>> ev = ro.evaluate(model, (x, y), madry(Linf(0.3), {"B": model_b}), mode="independent")
    """
    if preset not in MADRY_TABLES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(MADRY_TABLES)}.")
    if max_restarts is not None and (not isinstance(max_restarts, int) or max_restarts < 1):
        raise ValueError(f"max_restarts must be a positive integer or None, got {max_restarts!r}.")
    table = MADRY_TABLES[preset]
    rows = [spec.build(threat, table.rel_step, max_restarts) for spec, _ in table.white_box]
    for name, model in (sources or {}).items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"every source needs a name for the table's Source column, e.g. \"B\"; got {name!r}.")
        rows += [Transfer(model, spec.build(threat, table.rel_step, max_restarts), source_name=name)
                 for spec in table.transfer_rows(name)]
    # Capping restarts can turn a row into a copy of another (PGD 40x20 -> 40x1): keep the first. A copy is
    # the same configuration on the same model; the names shown in tables play no part.
    unique = {_identity(a): a for a in reversed(rows)}
    return [a for a in rows if unique[_identity(a)] is a]


def _identity(attack: Attack) -> tuple:
    """What makes two rows the same attack: the configuration, and for a transfer row its source model."""
    if isinstance(attack, Transfer):
        return ("transfer", id(attack.source_model), attack.source_name, repr(attack.attack.describe()))
    return ("white-box", repr(attack.describe()))


# --- AutoAttack's ensembles -----------------------------------------------------------------------
EOT_DRAWS = 20  # draws of a randomized model's randomness per gradient in the rand version

# AutoAttack's Square: 5,000 queries on the p schedule of twice as many (its resc_schedule=False)
_SQUARE = ("square", {"queries": 5000, "schedule_queries": AUTOATTACK_SCHEDULE_SCALE * 5000})
# AutoAttack's ensembles (Croce & Hein 2020) as (registered attack, configuration) rows, in its order.
_STANDARD: dict[str, list[tuple[str, dict]]] = {
    "standard": [
        ("apgd", {"loss": "ce", "steps": 100}),
        ("apgd", {"loss": "dlr", "targeted": True, "n_target_classes": 9, "steps": 100}),
        ("fab", {"targeted": True, "n_target_classes": 9, "steps": 100, "restarts": 1}),
        _SQUARE,
    ],
    "fast": [
        ("apgd", {"loss": "ce", "steps": 100}),
        ("apgd", {"loss": "dlr", "targeted": True, "n_target_classes": 3, "steps": 100}),
    ],
    # the same families, scheduled by evidence per example (robustopt.attacks.adaptive)
    "adaptive": [("adaptive", {})],
    # randomized models: the loss and gradient of each step averaged over 20 draws (AutoAttack's "rand")
    "rand": [
        ("apgd", {"loss": "ce", "steps": 100, "eot": EOT_DRAWS}),
        ("apgd", {"loss": "dlr", "steps": 100, "eot": EOT_DRAWS}),
    ],
}
# AutoAttack's L1 protocol (Croce & Hein 2021): L1-APGD with the 3-2-1 eps schedule (use_largereps),
# APGD-CE with 5 restarts and APGD-T on 5 targets; FAB-T and Square as in the other norms (Square's L1 version).
_STANDARD_L1: dict[str, list[tuple[str, dict]]] = {
    "standard": [
        ("apgd", {"loss": "ce", "steps": 100, "restarts": 5, "decreasing_eps": True}),
        ("apgd", {"loss": "dlr", "targeted": True, "n_target_classes": 5, "steps": 100, "decreasing_eps": True}),
        ("fab", {"targeted": True, "n_target_classes": 9, "steps": 100, "restarts": 1}),
        _SQUARE,
    ],
    "fast": [
        ("apgd", {"loss": "ce", "steps": 100, "decreasing_eps": True}),
        ("apgd", {"loss": "dlr", "targeted": True, "n_target_classes": 3, "steps": 100, "decreasing_eps": True}),
    ],
    "adaptive": _STANDARD["adaptive"],
    "rand": [(name, {**config, "decreasing_eps": True}) for name, config in _STANDARD["rand"]],
}


def standard(threat: ThreatModel, *, version: Literal["standard", "fast", "adaptive", "rand"] = "standard",
             seed: int = 0, model: nn.Module | None = None, x: torch.Tensor | None = None) -> list[Attack]:
    """An AutoAttack-grade ensemble (Croce & Hein 2020), to run as a cascade.

    ``version="standard"``: AutoAttack's standard version, in its order: APGD-CE (100 steps),
    APGD-T (targeted DLR, 100 steps, the 9 most likely wrong classes, fewer when the model has
    fewer classes), FAB-T (the targeted Fast Adaptive Boundary attack, 100 steps, 9 target
    classes, 1 run each from the clean input) and Square (5000 queries, on AutoAttack's unrescaled p schedule).
    ``version="fast"``: APGD-CE (100 steps) and APGD-T with 3 target classes.
    ``version="adaptive"``: one ``AdaptiveAutoAttack``, the same four families scheduled by
    evidence per example (early exits, APGD-T on 3 targets ranked at APGD-CE's point, FAB-T and
    Square on a sample of the survivors first); its row records every decision per example
    (``Row.records``, ``records.budget_table``).
    ``version="rand"``: AutoAttack's version for randomized models: APGD-CE and APGD-DLR, each
    step's loss and gradient averaged over 20 draws of the model's randomness (EOT, Athalye et
    al. 2018); ``evaluate`` then counts an example as broken when the attack's point fools the
    model in most of several draws.

    Under ``L1`` the suite follows AutoAttack's L1 protocol (Croce & Hein 2021, "Mind the box"):
    L1-APGD (sparse steps of adaptive sparsity, the exact projection onto the l1 ball and the
    box) with AutoAttack's 3-2-1 eps schedule (``decreasing_eps``), APGD-CE with 5 restarts and
    APGD-T on 5 targets, then FAB-T and Square (its L1 version). ``fast`` and ``rand`` use the
    same L1-APGD; ``adaptive`` schedules it as for the other norms.

    Args:
        threat: ``Linf(eps)``, ``L2(eps)`` or ``L1(eps)``.
        version: "standard", "fast", "adaptive" or "rand".
        seed: seed of every attack (``evaluate`` passes its own seeded generators).
        model, x: the model to evaluate and some of its inputs: when two forward passes on them
            differ (a randomized model, the probe of ``ro.audit``'s ``randomized-output``), the
            suite is the ``rand`` version whatever ``version`` says.

    Returns:
        The list of attacks, strongest-per-cost first.

    Example:
        >>> ev = ro.evaluate(model, (x, y), standard(Linf(8 / 255)), mode="cascade")
        >>> standard(Linf(0.3), model=noisy_model, x=x)     # the rand version, with EOT
    """
    if not isinstance(threat, (Linf, L2, L1)):
        raise ValueError(f"the standard suite is defined for the Linf, L2 and L1 threat models, got {threat}.")
    if version not in _STANDARD:
        raise ValueError(f"unknown version {version!r}; choose one of {sorted(_STANDARD)}.")
    if (model is None) != (x is None):
        raise ValueError("pass both model and x (some of its inputs) to detect a randomized model, or neither.")
    if model is not None and is_randomized(model, x):
        version = "rand"
    rows = (_STANDARD_L1 if isinstance(threat, L1) else _STANDARD)[version]
    return [create(name, threat, seed=seed, **config) for name, config in rows]


# --- the registry of named suites --------------------------------------------------------------
@dataclass(frozen=True)
class SuiteRequest:
    """What a suite's builder may use to make its attacks.

    Args:
        threat: the threat model.
        data: the dataset's name (picks the paper's table of the madry suite), or None.
        sources: transfer sources by table name (suites with ``transfer=True`` only).
        max_restarts: cap on restarts, or None.
        seed: seed of the attacks.
        model, x: the model to evaluate and some of its inputs, to detect a randomized model; or None.
    """

    threat: ThreatModel
    data: str | None = None
    sources: Mapping[str, nn.Module] = field(default_factory=dict)
    max_restarts: int | None = None
    seed: int = 0
    model: nn.Module | None = None
    x: torch.Tensor | None = None


@dataclass(frozen=True)
class Suite:
    """A named suite: how its attacks are made, how they are run, and the paper it compares with.

    Args:
        name: the key in ``SUITES`` (``robustopt eval --suite NAME``).
        build: makes the attacks from a :class:`SuiteRequest`.
        mode: "independent" (each row alone, a paper's table) or "cascade" (the worst case).
        summary: one line for ``robustopt eval --help``.
        transfer: whether the suite has transfer rows (takes ``sources``).
        reference: the paper's table an evaluation on a dataset under a threat model compares
            with, ``reference(data, threat) -> MadryTable | None``; None: the suite has none.
    """

    name: str
    build: Callable[[SuiteRequest], list[Attack]]
    mode: Mode
    summary: str
    transfer: bool = False
    reference: Callable[[str | None, ThreatModel | None], MadryTable | None] | None = None

    def paper(self, data: str | None, threat: ThreatModel | None) -> MadryTable | None:
        """The paper's table this suite on ``data`` under ``threat`` compares with, or None."""
        return None if self.reference is None else self.reference(data, threat)


SUITES: Registry[Suite] = Registry("suite")


def register_suite(name: str, *, mode: Mode, summary: str, transfer: bool = False,
                   reference: Callable[[str | None, ThreatModel | None], MadryTable | None] | None = None,
                   ) -> Callable[[Callable[[SuiteRequest], list[Attack]]], Callable[[SuiteRequest], list[Attack]]]:
    """Register the decorated builder as suite ``name`` (see :class:`Suite` for the arguments).

    Raises:
        ValueError: ``name`` is taken, or ``mode`` is neither "cascade" nor "independent".
    """
    if mode not in ("cascade", "independent"):
        raise ValueError(f"mode must be 'cascade' or 'independent', got {mode!r}.")

    def add(build: Callable[[SuiteRequest], list[Attack]]) -> Callable[[SuiteRequest], list[Attack]]:
        SUITES.register(name, Suite(name, build, mode, summary, transfer, reference))
        return build

    return add


def get_suite(name: str) -> Suite:
    """The suite registered as ``name``.

    Raises:
        ValueError: no such suite; the message names the close match and the known suites.
    """
    return SUITES.get(name)


def names() -> list[str]:
    """The registered suites, in registration order."""
    return SUITES.names()


@register_suite("madry", mode="independent", transfer=True, reference=paper_reference,
                summary="the paper's rows (Madry et al. 2018, Table 1 or 2 by dataset)")
def _madry_suite(request: SuiteRequest) -> list[Attack]:
    return madry(request.threat, request.sources, preset=madry_preset(request.data), max_restarts=request.max_restarts)


def _standard_suite(version: str, detect_randomness: bool = True) -> Callable[[SuiteRequest], list[Attack]]:
    def build(request: SuiteRequest) -> list[Attack]:
        probe = dict(model=request.model, x=request.x) if detect_randomness else {}
        return standard(request.threat, version=version, seed=request.seed, **probe)  # type: ignore[arg-type]

    return build


register_suite("standard", mode="cascade", summary="APGD-CE, APGD-T, FAB-T, Square (AutoAttack, cascade)")(
    _standard_suite("standard"))
register_suite("fast", mode="cascade", summary="APGD only")(_standard_suite("fast"))
register_suite("adaptive", mode="cascade",
               summary="the standard attacks scheduled by evidence per example (prints the budget per stage)")(
    _standard_suite("adaptive"))
register_suite("rand", mode="cascade",
               summary="APGD-CE and APGD-DLR with EOT, for a randomized model (standard, fast and adaptive switch "
                       "to it on their own when the model is random)")(_standard_suite("rand", detect_randomness=False))
