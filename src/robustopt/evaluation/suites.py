"""Declarative lists of attacks: the rows of a robustness table.

``madry`` gives the rows of Madry et al. (2018), Table 1 (MNIST) and Table 2 (CIFAR-10);
``standard`` the AutoAttack-grade ensemble of Croce & Hein (2020).
"""

from __future__ import annotations

from typing import Literal, Mapping

from torch import nn

from robustopt.attacks import Attack, Transfer, create
from robustopt.threat import L2, Linf, ThreatModel

__all__ = ["madry", "standard", "MADRY_REFERENCE"]

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



def standard(threat: ThreatModel, *, version: Literal["standard", "fast", "adaptive"] = "standard",
             seed: int = 0) -> list[Attack]:
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

    Args:
        threat: ``Linf(eps)`` or ``L2(eps)``; L1 is not supported (AutoAttack's L1 version
            uses the L1-APGD of a later paper).
        version: "standard", "fast" or "adaptive".
        seed: seed of every attack (``evaluate`` passes its own seeded generators).

    Returns:
        The list of attacks, strongest-per-cost first.

    Example:
        >>> ev = ro.evaluate(model, (x, y), standard(Linf(8 / 255)), mode="cascade")
    """
    if not isinstance(threat, (Linf, L2)):
        raise ValueError(
            f"the standard suite is defined for Linf and L2 threat models, got {threat}; "
            "for L1 build a list yourself, e.g. [APGD(t, loss='ce'), APGD(t, loss='dlr', targeted=True)]."
        )
    if version not in _STANDARD:
        raise ValueError(f"unknown version {version!r}; choose one of {sorted(_STANDARD)}.")
    return [create(name, threat, seed=seed, **config) for name, config in _STANDARD[version]]
