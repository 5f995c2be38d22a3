"""Square Attack: score-based black-box random search (Andriushchenko et al. 2020).

Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search" (ECCV). Only the model's logits are
used, never its gradients, which makes the attack a check against gradient masking.

Per example: start from an initial perturbation at the border of the ball, then
repeatedly propose a change inside a random square window and keep it when the
objective improves, until the example is misclassified or the query budget is spent.
The window covers a fraction ``p`` of the pixels; ``p`` starts at ``p_init`` and is
halved at the iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a
10,000-query run, rescaled to the budget.

* ``Linf`` (Alg. 1-2 of the paper): the start is vertical stripes of +-eps (one sign per
  column and channel); a proposal sets the window of each channel to one vertex,
  ``x +- eps`` (a random sign per channel), then projects onto ball and box. A proposal
  that would leave the current point unchanged is not queried: one channel's sign is
  flipped first.
* ``L2`` (Alg. 3 and the initialization of the paper): the start is a grid of
  "pseudo-Gaussian" blocks (concentric squares weighted ``1/(k+1)^2``, two halves of
  opposite sign) with random signs, scaled to norm eps. A proposal draws two windows
  W1 and W2 and, per channel, moves the perturbation mass of W2 (and the unused budget
  ``eps^2 - ||delta||^2``) into W1, in the direction of the old content of W1 plus a
  new random-signed block; the total norm stays eps before the projection onto the box.
* ``L1`` is not implemented (the L1 version is a later paper).
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustopt import losses
from robustopt.attacks.base import (
    Attack,
    AttackResult,
    _warn_if_probabilities,
    check_batch,
    check_labels,
    eval_mode,
    predict,
    success_of,
)
from robustopt.threat import L2, Linf, ThreatModel

__all__ = ["Square", "p_schedule", "window_side"]

# Iterations of a 10,000-query run after which p is halved (Andriushchenko et al. 2020, Sec. 3).
_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, iteration: int, queries: int) -> float:
    """Fraction of the pixels that the window covers at ``iteration`` of a ``queries``-query run.

    ``p_init`` halved once for each of the paper's iterations 10, 50, 200, 500, 1000, 2000,
    4000, 6000, 8000 (of 10,000) that the rescaled iteration ``iteration * 10000 / queries``
    has passed.
    """
    scaled = iteration * 10000 / queries
    return p_init / 2 ** sum(scaled > b for b in _P_HALVINGS)


def window_side(p: float, height: int, width: int) -> int:
    """Side h of a square window covering about a fraction ``p`` of the ``height x width`` pixels.

    ``h = round(sqrt(p * height * width))``, at least 1 and at most ``min(height, width) - 1``
    (so that the window can move), or 1 for images one pixel wide.
    """
    side = int(round(math.sqrt(p * height * width)))
    return max(1, min(side, min(height, width) - 1))


def _windows(n: int, side: int, height: int, width: int, generator: torch.Generator, device) -> torch.Tensor:
    """bool (n, 1, H, W): one square window of the given side per example, uniformly placed."""
    r = torch.randint(0, height - side + 1, (n, 1), generator=generator, device=device)
    c = torch.randint(0, width - side + 1, (n, 1), generator=generator, device=device)
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    in_rows = (rows >= r) & (rows < r + side)
    in_cols = (cols >= c) & (cols < c + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _random_signs(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1


def _rings(rows: int, cols: int) -> torch.Tensor:
    """Concentric squares around the centre of a rows x cols block: ``sum_{k=d}^{n} 1/(k+1)^2``.

    ``d`` is the Chebyshev distance of a pixel to the centre ``(rows // 2, cols // 2)`` and
    ``n = max(rows // 2, cols // 2)`` (eq. 5 of the paper for a square block).
    """
    n = max(rows // 2, cols // 2)
    r = (torch.arange(rows) - rows // 2).abs()
    c = (torch.arange(cols) - cols // 2).abs()
    d = torch.maximum(r[:, None], c[None, :])
    weights = 1.0 / torch.arange(1, n + 2, dtype=torch.float64) ** 2  # 1/(k+1)^2, k = 0..n
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k=d}^{n} 1/(k+1)^2
    return tail[d]


def _block(side: int) -> torch.Tensor:
    """Unit-norm side x side block: rings on the first half of the rows, minus rings on the rest."""
    top = side // 2
    block = torch.cat([_rings(top, side), -_rings(side - top, side)]) if top else -_rings(side, side)
    return block / block.norm()


def _flat_sq(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).pow(2).sum(1)


@dataclass(frozen=True)
class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020): random search on the logits, no gradients.

    Args:
        threat: ``ro.Linf`` or ``ro.L2`` (``ro.L1`` is not implemented); inputs must be NCHW images.
        queries: model queries per example and restart, the initial point included (>= 1).
        p_init: fraction of the pixels the first windows cover, in (0, 1]; halved on the
            schedule of the paper rescaled to ``queries``.
        loss: objective the search improves: "margin" (``max_{j != y} z_j - z_y``; the paper's
            choice, positive exactly when misclassified) or "ce" (cross-entropy).
        restarts: runs, each from a new random start, on the examples not yet broken.
        seed: seed of the random search when no generator is given.
        label: display name in tables (default "Square").

    Example:
        >>> x_adv = Square(Linf(8 / 255), queries=5000)(model, x, y)
    """

    threat: ThreatModel
    _: KW_ONLY
    queries: int = 5000
    p_init: float = 0.8
    loss: str = "margin"
    restarts: int = 1
    seed: int = 0
    label: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.threat, ThreatModel):
            raise TypeError(f"threat must be a threat model such as ro.Linf(0.3), got {self.threat!r}.")
        if not isinstance(self.threat, (Linf, L2)):
            raise NotImplementedError(
                f"Square supports Linf and L2 threat models, got {self.threat}; the L1 Square Attack "
                "(a later paper) is not implemented. Use APGD or PGD for L1."
            )
        for name in ("queries", "restarts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if not (isinstance(self.p_init, (int, float)) and 0.0 < self.p_init <= 1.0):
            raise ValueError(f"p_init must be a number in (0, 1], got {self.p_init!r}.")
        if self.loss not in ("margin", "ce"):
            raise ValueError(f"loss must be 'margin' or 'ce', got {self.loss!r}.")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}.")

    @property
    def steps(self) -> int:
        """The query budget, shown in the Steps column of tables."""
        return self.queries

    # --- the objective (to maximize) ------------------------------------------------------
    def _objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if self.loss == "ce":
            return losses.ce(logits, y, target).float()
        cls = y if target is None else target
        at = logits.gather(1, cls[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(cls, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
        return (other - at if target is None else at - other).float()

    # --- the attack ---------------------------------------------------------------------
    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``model`` on the batch ``(x, y)`` with at most ``queries`` queries per example and restart.

        Args:
            model: maps NCHW inputs in ``threat.bounds`` to logits (N, C); only its outputs are used.
            x: clean images (N, C, H, W), floating, inside the bounds.
            y: true labels (N,), integer.
            targets: explicit target classes (N,); the search then aims at them (targeted margin
                ``z_t - max_{j != t} z_j`` or minus the CE of the target) and stops on hitting them.
            generator: source of randomness; default: a fresh one seeded with ``self.seed``.

        Returns:
            AttackResult with x_adv inside the ball and the bounds, ``grad_evals`` = 0 and
            ``forwards`` = every query: one clean pass per example, then one per example per
            iteration while it is not broken.
        """
        check_batch(x, y, self.threat)
        if x.dim() != 4:
            raise ValueError(f"Square needs images of shape (N, C, H, W), got shape {tuple(x.shape)}.")
        y = y.long()
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        n = len(x)
        best_x = x.detach().clone()
        if n == 0:
            return AttackResult(best_x, torch.zeros(0, dtype=torch.bool, device=x.device))

        with eval_mode(model), torch.no_grad():
            clean_logits = predict(model, x)
            check_labels(clean_logits, y)
            _warn_if_probabilities(model, clean_logits)
            if targets is not None:
                if not isinstance(targets, torch.Tensor) or targets.shape != y.shape:
                    raise ValueError(f"targets must be a tensor of shape {tuple(y.shape)} (one class per example).")
                targets = targets.to(device=y.device, dtype=torch.long)
                check_labels(clean_logits, targets, "targets")
            forwards = n
            best_success = success_of(clean_logits, y, targets)
            best_obj = torch.full((n,), float("-inf"), device=x.device)
            if self.threat.eps == 0:
                return AttackResult(best_x, best_success, forwards=forwards)

            for _ in range(self.restarts):
                idx = (~best_success).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                ts = targets[idx] if targets is not None else None
                x_r, obj_r, success_r, queries = self._search(model, x[idx].detach(), y[idx], ts, generator)
                forwards += queries
                better = success_r | (obj_r > best_obj[idx])
                sel = idx[better]
                best_x[sel], best_obj[sel], best_success[sel] = x_r[better], obj_r[better], success_r[better]
        return AttackResult(best_x, best_success, grad_evals=0, forwards=forwards)

    def _search(self, model, x, y, target, generator):
        """One random search from a fresh start. Returns (x_hat, objective, success, queries)."""
        n = len(x)
        x_hat = self._init(x, generator)
        logits = predict(model, x_hat)
        obj, success = self._objective(logits, y, target), success_of(logits, y, target)
        queries = n
        height, width = x.shape[2:]
        for i in range(1, self.queries):
            active = (~success).nonzero().squeeze(1)
            if len(active) == 0:
                break
            side = window_side(p_schedule(self.p_init, i, self.queries), height, width)
            xa, ya = x[active], y[active]
            ta = target[active] if target is not None else None
            x_new = self._propose(xa, x_hat[active], side, generator)
            logits = predict(model, x_new)
            queries += len(active)
            obj_new, success_new = self._objective(logits, ya, ta), success_of(logits, ya, ta)
            accept = success_new | (obj_new > obj[active])
            sel = active[accept]
            x_hat[sel], obj[sel], success[sel] = x_new[accept], obj_new[accept], success_new[accept]
        return x_hat, obj, success, queries

    # --- per norm: the start and the proposal -----------------------------------------------
    def _init(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, channels, height, width = x.shape
        eps = self.threat.eps
        if isinstance(self.threat, Linf):
            stripes = _random_signs((n, channels, 1, width), generator, x)
            return self.threat.project(x + eps * stripes, x)
        # L2: a centred grid of pseudo-Gaussian blocks with random signs, scaled to norm eps.
        side = max(1, min(height, width) // 5)
        block = _block(side).to(device=x.device, dtype=x.dtype)
        rows, cols = height // side, width // side
        r0, c0 = (height - rows * side) // 2, (width - cols * side) // 2
        delta = torch.zeros_like(x)
        for i in range(rows):
            for j in range(cols):
                signs = _random_signs((n, channels, 1, 1), generator, x)
                r, c = r0 + i * side, c0 + j * side
                delta[:, :, r : r + side, c : c + side] = signs * block
        delta = delta * (eps / _flat_sq(delta).sqrt().clamp_min(1e-12)).view(-1, 1, 1, 1)
        return self.threat.project(x + delta, x)

    def _propose(self, x: torch.Tensor, x_hat: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
        if isinstance(self.threat, Linf):
            return self._propose_linf(x, x_hat, side, generator)
        return self._propose_l2(x, x_hat, side, generator)

    def _propose_linf(self, x, x_hat, side, generator):
        n, channels, height, width = x.shape
        window = _windows(n, side, height, width, generator, x.device)
        signs = _random_signs((n, channels, 1, 1), generator, x)
        vertex = lambda s: self.threat.clip_box(x + self.threat.eps * s)  # noqa: E731
        proposal = torch.where(window, vertex(signs), x_hat)
        unchanged = ~(proposal != x_hat).flatten(1).any(dim=1)
        if unchanged.any():  # the window already sits on this vertex: flip one channel
            channel = torch.randint(0, channels, (n,), generator=generator, device=x.device)
            flip = F.one_hot(channel, channels).bool()[:, :, None, None] & unchanged[:, None, None, None]
            signs = torch.where(flip, -signs, signs)
            proposal = torch.where(window, vertex(signs), x_hat)
        return self.threat.project(proposal, x)

    def _propose_l2(self, x, x_hat, side, generator):
        n, channels, height, width = x.shape
        eps = self.threat.eps
        nu = x_hat - x
        unused = (eps**2 - _flat_sq(nu)).clamp_min(0).view(-1, 1, 1, 1)
        w1 = _windows(n, side, height, width, generator, x.device)
        w2 = _windows(n, side, height, width, generator, x.device)
        # the new block, transposed for a random half of the examples, placed at W1
        block = _block(side).to(device=x.device, dtype=x.dtype)
        transpose = torch.randint(0, 2, (n, 1, 1), generator=generator, device=x.device).bool()
        blocks = torch.where(transpose, block.T.expand(n, side, side), block.expand(n, side, side))
        placed = torch.zeros(n, 1, height, width, device=x.device, dtype=x.dtype)
        placed[w1] = blocks.reshape(-1)  # row-major order matches the window's pixels
        rho = _random_signs((n, channels, 1, 1), generator, x)

        def norm_hw(v):
            return v.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()

        nu_w1 = nu * w1
        direction = rho * placed + nu_w1 / norm_hw(nu_w1).clamp_min(1e-12)
        both = w1 | w2
        available = (norm_hw(nu * both) ** 2 + unused / channels).sqrt()
        nu_new = nu * ~both + direction / norm_hw(direction).clamp_min(1e-12) * available
        return self.threat.project(x + nu_new, x)
