"""Early exit: why a search ended, and the rule that stops an example that cannot flip.

Per example in ``AttackResult.notes["stop"]`` of attacks run with ``early_exit`` (an index into
``STOP_REASONS``); the last search of an example decides (e.g. its last target).
"""

from __future__ import annotations

import torch

__all__ = ["STOP_REASONS", "STOP_NOT_RUN", "STOP_BUDGET", "STOP_BROKEN", "STOP_STALLED", "stalled"]

STOP_REASONS = ("not run", "budget", "broken", "stalled")
STOP_NOT_RUN, STOP_BUDGET, STOP_BROKEN, STOP_STALLED = range(len(STOP_REASONS))


def stalled(margin: torch.Tensor, margin_then: torch.Tensor, remaining: int, window: int, factor: float) -> torch.Tensor:
    """bool: the margin cannot reach 0 even at ``factor`` times the pace of the last window.

    ``margin + factor * (remaining / window) * max(margin - margin_then, 0) < 0``: the margin is
    ``losses.margin`` (positive exactly when the example is broken), ``margin_then`` its value
    ``window`` steps ago and ``remaining`` the steps left. A search whose progress slows down
    (APGD's shrinking steps, Square's shrinking windows) stays under this linear extrapolation,
    so ``factor`` is a margin of safety on top of it. The online discarding of A3 (Liu et al.
    2022, "Practical Evaluation of Adversarial Robustness via Adaptive Auto Attack", CVPR), with
    the example's own progress as the statistic.
    """
    gain = (margin - margin_then).clamp_min(0)
    return margin + factor * (remaining / window) * gain < 0
