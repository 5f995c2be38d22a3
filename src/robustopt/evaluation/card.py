"""Model cards in RobustBench's format: one JSON per model, as in RobustBench's ``model_info/`` folder.

RobustBench (Croce et al. 2021) keeps a JSON per model under
``model_info/DATASET/THREAT_MODEL/NAME.json`` with the fields ``link``, ``name``, ``authors``,
``additional_data``, ``number_forward_passes``, ``dataset``, ``venue``, ``architecture``, ``eps``,
``clean_acc``, ``reported``, ``autoattack_acc``, ``footnote`` and ``unreliable``, and renders its
leaderboards from them. Its own writer (``robustbench.utils.update_json``) stores eps as a
string such as ``"8/255"`` and accuracies as percent strings rounded to two decimals
(``"59.53"``); :func:`robustbench_card` writes them the same way, so a card can be dropped into
that folder as it is. ``threat_model`` ("Linf" or "L2", the folder RobustBench files it under)
is added, and so is a ``robustopt`` block with the exact numbers as numbers (fractions in
[0, 1], eps as a float), the evaluation's size and attacks, for everything else.

Example:
    >>> ev = ro.evaluate(model, (x, y), ro.suites.standard(ro.Linf(8 / 255)))
    >>> card = robustbench_card(ev, name="My model", dataset="cifar10", architecture="PreActResNet-18")
"""

from __future__ import annotations

import math
from typing import Any

from robustopt.attacks.base import WHITE_BOX_SOURCE
from robustopt.evaluation.results import Evaluation

__all__ = ["autoattack_grade", "robustbench_card"]

_THREAT_MODELS = {"Linf": "Linf", "L2": "L2"}  # robustopt norm -> RobustBench threat model


def robustbench_card(
    evaluation: Evaluation,
    *,
    name: str,
    dataset: str,
    architecture: str,
    link: str = "",
    authors: str = "",
    venue: str = "N/A",
    reported: float | None = None,
    footnote: str | None = None,
    test_size: int | None = None,
) -> dict[str, Any]:
    """A RobustBench model card (see the module docstring) from an evaluation of one model.

    ``autoattack_acc`` is the evaluation's per-example worst case over its attacks, so it is
    RobustBench's number when the evaluation is the AutoAttack-grade ``suites.standard`` on the
    test set; the footnote names the attacks and the number of images either way. An evaluation
    that lacks AutoAttack's four attacks (APGD-CE, APGD-T, FAB-T, Square, or the adaptive suite
    that schedules them) is marked ``"unreliable": true``, as RobustBench marks entries whose
    number an AutoAttack-grade evaluation does not back.

    Args:
        evaluation: the result of ``ro.evaluate`` (e.g. ``RUN/eval-standard.json`` read back
            with ``Evaluation.from_json``); its white-box attacks give eps and the threat model.
        name: the model's name (RobustBench: the paper's title).
        dataset: the dataset, e.g. "cifar10".
        architecture: e.g. "WideResNet-34-10".
        link / authors / venue: as RobustBench shows them ("N/A" venue: no BibTeX entry).
        reported: robust accuracy the authors report, in [0, 1]; default: ``autoattack_acc``.
        footnote: text shown under the entry; default: the evaluation's attacks and size.
        test_size: size of the test split, to say in the footnote when fewer images were used.

    Returns:
        The card as a JSON-ready dict, RobustBench's fields first.

    Raises:
        ValueError: the evaluation has no white-box attack, its threat model is not L-inf or
            L2 (RobustBench has no other leaderboard), or ``reported`` is not in [0, 1].
    """
    threats = [r.attack["threat"] for r in evaluation.rows if r.source == "A" and "threat" in r.attack]
    if not threats:
        raise ValueError("the evaluation has no white-box attack row to take eps and the threat model from; "
                         "evaluate with ro.suites.standard (robustopt eval RUN --suite standard).")
    norm, eps = threats[0]["norm"], float(threats[0]["eps"])
    if norm not in _THREAT_MODELS:
        raise ValueError(f"RobustBench has L-inf and L2 leaderboards only; this evaluation is {norm}.")
    if reported is not None and not 0 <= reported <= 1:
        raise ValueError(f"reported must be a fraction in [0, 1] (e.g. 0.4404 for 44.04%), got {reported}.")
    attacks = ", ".join(dict.fromkeys(r.name for r in evaluation.rows if r.source))
    robust = evaluation.robust_accuracy
    of = f" of {test_size:,}" if test_size and test_size != evaluation.n else ""
    return {
        "link": link,
        "name": name,
        "authors": authors,
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": dataset,
        "threat_model": _THREAT_MODELS[norm],
        "venue": venue,
        "architecture": architecture,
        "eps": _eps_text(eps),
        "clean_acc": _percent(evaluation.clean_accuracy),
        "reported": _percent(robust if reported is None else reported),
        "autoattack_acc": _percent(robust),
        "footnote": footnote if footnote is not None else
        f"Evaluated with robustopt ({attacks}; per-example worst case) on the first {evaluation.n:,}{of} test images.",
        "unreliable": not autoattack_grade(evaluation),
        "robustopt": {
            "clean_accuracy": evaluation.clean_accuracy,
            "robust_accuracy": robust,
            "norm": norm,
            "eps": eps,
            "n": evaluation.n,
            "attacks": [r.name for r in evaluation.rows if r.source],
            "mode": evaluation.mode,
            "seed": evaluation.seed,
        },
    }


def autoattack_grade(evaluation: Evaluation) -> bool:
    """Whether the white-box rows hold AutoAttack's four attacks, or the adaptive suite that schedules them."""
    kinds = set()
    for row in evaluation.rows:
        if row.source != WHITE_BOX_SOURCE or row.key is None:
            continue
        if row.key == "adaptive":
            return True
        kinds.add((row.key, bool(row.attack.get("targeted"))))
    return {("apgd", False), ("apgd", True), ("fab", True), ("square", False)} <= kinds


def _percent(fraction: float) -> str:
    """RobustBench's accuracy format: percent, rounded to two decimals, as a string ("59.53")."""
    return str(round(100 * fraction, 2))


def _eps_text(eps: float) -> str:
    """RobustBench's eps format: "8/255" for a multiple of 1/255 without a short decimal form, else "0.3"."""
    if round(eps, 4) == eps:
        return f"{eps:g}"
    k = eps * 255
    return f"{round(k)}/255" if math.isclose(k, round(k), rel_tol=0, abs_tol=1e-6) else f"{eps:g}"
