"""Declarative lists of attacks: the rows of a robustness table.

``madry`` gives the rows of Madry et al. (2018), Table 1 (MNIST) and Table 2 (CIFAR-10);
``standard`` the AutoAttack-grade ensemble of Croce & Hein (2020), with its L1 protocol
(Croce & Hein 2021) and its version for randomized models (EOT).
"""

from __future__ import annotations

from typing import Literal, Mapping

import torch
from torch import nn

from robustopt.attacks import Attack, Transfer, create
from robustopt.attacks.base import is_randomized
from robustopt.threat import L1, L2, Linf, ThreatModel

__all__ = ["madry", "standard", "MADRY_REFERENCE", "EOT_DRAWS"]

Preset = Literal["mnist", "cifar10"]

# The paper's numbers (accuracy in %), keyed like evaluation.row_key: (name, steps, restarts, source).
MADRY_REFERENCE: dict[str, dict[tuple, float]] = {
    "mnist": {
        ("Natural", None, None, ""): 98.8,
        ("FGSM", 1, 1, "A"): 95.6,
        ("PGD", 40, 1, "A"): 93.2,
        ("PGD", 100, 1, "A"): 91.8,
        ("PGD", 40, 20, "A"): 90.4,
        ("PGD", 100, 20, "A"): 89.3,
        ("Targeted PGD", 40, 1, "A"): 92.7,
        ("CW", 40, 1, "A"): 94.0,
        ("CW+", 40, 1, "A"): 93.9,
        ("FGSM", 1, 1, "A'"): 96.8,
        ("PGD", 40, 1, "A'"): 96.0,
        ("PGD", 100, 20, "A'"): 95.7,
        ("CW", 40, 1, "A'"): 97.0,
        ("CW+", 40, 1, "A'"): 96.4,
        ("FGSM", 1, 1, "B"): 95.4,
        ("PGD", 40, 1, "B"): 96.4,
        ("CW+", 40, 1, "B"): 95.7,
    },
    "cifar10": {
        ("Natural", None, None, ""): 87.3,
        ("FGSM", 1, 1, "A"): 56.1,
        ("PGD", 7, 1, "A"): 50.0,
        ("PGD", 20, 1, "A"): 45.8,
        ("CW", 30, 1, "A"): 46.8,
        ("FGSM", 1, 1, "A'"): 67.0,
        ("PGD", 7, 1, "A'"): 64.2,
        ("CW", 30, 1, "A'"): 78.7,
        ("FGSM", 1, 1, "A_nat"): 85.6,
        ("PGD", 7, 1, "A_nat"): 86.0,
    },
}

# (loss, kappa, steps, restarts, targeted) per row; the paper's MNIST step is eps/30 (0.01 at 0.3).
_WHITE_BOX = {
    "mnist": [("fgsm",), ("ce", 0, 40, 1), ("ce", 0, 100, 1), ("ce", 0, 40, 20), ("ce", 0, 100, 20),
              ("ce", 0, 40, 1, "least-likely"), ("cw", 0, 40, 1), ("cw", 50, 40, 1)],
    "cifar10": [("fgsm",), ("ce", 0, 7, 1), ("ce", 0, 20, 1), ("cw", 0, 30, 1)],
}
_TRANSFER = {
    "mnist": {
        "A'": [("fgsm",), ("ce", 0, 40, 1), ("ce", 0, 100, 20), ("cw", 0, 40, 1), ("cw", 50, 40, 1)],
        None: [("fgsm",), ("ce", 0, 40, 1), ("cw", 50, 40, 1)],
    },
    "cifar10": {None: [("fgsm",), ("ce", 0, 7, 1), ("cw", 0, 30, 1)]},
}
_REL_STEP = {"mnist": 1 / 30, "cifar10": 1 / 4}
EOT_DRAWS = 20  # draws of a randomized model's randomness per gradient in the rand version

# AutoAttack's ensembles (Croce & Hein 2020) as (registered attack, configuration) rows, in its order.
_STANDARD: dict[str, list[tuple[str, dict]]] = {
    "standard": [
        ("apgd", {"loss": "ce", "steps": 100}),
        ("apgd", {"loss": "dlr", "targeted": True, "n_target_classes": 9, "steps": 100}),
        ("fab", {"targeted": True, "n_target_classes": 9, "steps": 100, "restarts": 1}),
        ("square", {"queries": 5000}),
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
        ("square", {"queries": 5000}),
    ],
    "fast": [
        ("apgd", {"loss": "ce", "steps": 100, "decreasing_eps": True}),
        ("apgd", {"loss": "dlr", "targeted": True, "n_target_classes": 3, "steps": 100, "decreasing_eps": True}),
    ],
    "adaptive": _STANDARD["adaptive"],
    "rand": [(name, {**config, "decreasing_eps": True}) for name, config in _STANDARD["rand"]],
}


def _build(threat: ThreatModel, spec: tuple, preset: str, max_restarts: int | None) -> Attack:
    if spec[0] == "fgsm":
        return create("fgsm", threat)
    loss, kappa, steps, restarts, *targeted = spec
    if max_restarts is not None:
        restarts = min(restarts, max_restarts)
    return create("pgd", threat, steps=steps, restarts=restarts, rel_step_size=_REL_STEP[preset], loss=loss,
                  kappa=float(kappa), targeted=targeted[0] if targeted else None)


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
        preset: "mnist" (Table 1) or "cifar10" (Table 2).
        max_restarts: cap on restarts (e.g. 2 for a quick demo); rows show the restarts actually run.

    Returns:
        The list of attacks, white-box rows first.

    Example:
        >>> ev = ro.evaluate(model, (x, y), madry(Linf(0.3), {"B": model_b}), mode="independent")
    """
    if preset not in _WHITE_BOX:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(_WHITE_BOX)}.")
    if max_restarts is not None and (not isinstance(max_restarts, int) or max_restarts < 1):
        raise ValueError(f"max_restarts must be a positive integer or None, got {max_restarts!r}.")
    rows = [_build(threat, spec, preset, max_restarts) for spec in _WHITE_BOX[preset]]
    for name, model in (sources or {}).items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"every source needs a name for the table's Source column, e.g. \"B\"; got {name!r}.")
        specs = _TRANSFER[preset].get(name, _TRANSFER[preset][None])
        rows += [Transfer(model, _build(threat, spec, preset, max_restarts), source_name=name) for spec in specs]
    # Capping restarts can turn a row into a copy of another (PGD 40x20 -> 40x1): keep the first. A copy is
    # the same configuration on the same model; the names shown in tables play no part.
    unique = {_identity(a): a for a in reversed(rows)}
    return [a for a in rows if unique[_identity(a)] is a]


def _identity(attack: Attack) -> tuple:
    """What makes two rows the same attack: the configuration, and for a transfer row its source model."""
    if isinstance(attack, Transfer):
        return ("transfer", id(attack.source_model), attack.source_name, repr(attack.attack.describe()))
    return ("white-box", repr(attack.describe()))


def standard(threat: ThreatModel, *, version: Literal["standard", "fast", "adaptive", "rand"] = "standard",
             seed: int = 0, model: nn.Module | None = None, x: torch.Tensor | None = None) -> list[Attack]:
    """An AutoAttack-grade ensemble (Croce & Hein 2020), to run as a cascade.

    ``version="standard"``: AutoAttack's standard version, in its order: APGD-CE (100 steps),
    APGD-T (targeted DLR, 100 steps, the 9 most likely wrong classes, fewer when the model has
    fewer classes), FAB-T (the targeted Fast Adaptive Boundary attack, 100 steps, 9 target
    classes, 1 run each from the clean input) and Square (5000 queries).
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
