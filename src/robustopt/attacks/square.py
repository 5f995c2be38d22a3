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
* ``L1`` (Croce & Hein 2021, "Mind the box", as in AutoAttack's code): the start is the grid of
  blocks of ``L2`` with rings weighted ``1/(k+1)^4`` and unit l1 norm per channel, projected onto
  ball and box; a proposal moves, per channel, the mass of W2 into W1 as ``L2`` does, with l1
  norms: the old content of W1 (normalized) plus a new random-signed block, scaled to the unused
  budget over the channels plus the window's old mass, times the channels (AutoAttack's rule),
  then projected onto ball and box. Windows are at least 3 pixels wide and of odd side.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from robustopt import losses
from robustopt.attacks.base import Attack
from robustopt.attacks.early_exit import STOP_BROKEN, STOP_BUDGET, STOP_NOT_RUN, STOP_STALLED, stalled
from robustopt.attacks.passes import predict
from robustopt.attacks.registry import register_attack
from robustopt.attacks.search import Search
from robustopt.threat import ThreatModel, random_signs

__all__ = ["Square", "AUTOATTACK_SCHEDULE_SCALE", "p_schedule", "window_side"]

# Fractions of the budget at which the early exit looks for stalled examples.
_STALL_CHECKS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# AutoAttack's standard version runs its 5,000 queries on the schedule of a 10,000-query run (resc_schedule=False): the
# schedule laid out for twice the budget. On the hardest points it breaks more than the schedule rescaled to 5,000
# queries (bench/square_schedule.py). The suites keep that ratio at any budget.
AUTOATTACK_SCHEDULE_SCALE = 2
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


def _rings(rows: int, cols: int, power: int = 2) -> torch.Tensor:
    """Concentric squares around the centre of a rows x cols block: ``sum_{k=d}^{n} 1/(k+1)^power``.

    ``d`` is the Chebyshev distance of a pixel to the centre ``(rows // 2, cols // 2)`` and
    ``n = max(rows // 2, cols // 2)`` (eq. 5 of the paper for a square block).
    """
    n = max(rows // 2, cols // 2)
    r = (torch.arange(rows) - rows // 2).abs()
    c = (torch.arange(cols) - cols // 2).abs()
    d = torch.maximum(r[:, None], c[None, :])
    weights = 1.0 / torch.arange(1, n + 2, dtype=torch.float64) ** power  # 1/(k+1)^power, k = 0..n
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k=d}^{n} 1/(k+1)^power
    return tail[d]


def _block_grid(x: torch.Tensor, make_block: Callable[[int], torch.Tensor],
                generator: torch.Generator) -> torch.Tensor:
    """Square's initial perturbation: a centred grid of ``make_block(side)`` blocks (side a fifth of
    the image), each with a random sign per example and channel."""
    n, channels, height, width = x.shape
    side = max(1, min(height, width) // 5)
    block = make_block(side).to(device=x.device, dtype=x.dtype)
    rows, cols = height // side, width // side
    r0, c0 = (height - rows * side) // 2, (width - cols * side) // 2
    delta = torch.zeros_like(x)
    for i in range(rows):
        for j in range(cols):
            signs = random_signs((n, channels, 1, 1), generator, x)
            r, c = r0 + i * side, c0 + j * side
            delta[:, :, r : r + side, c : c + side] = signs * block
    return delta


def _place_block(block: torch.Tensor, window: torch.Tensor, generator: torch.Generator,
                 x: torch.Tensor) -> torch.Tensor:
    """``block`` (side x side), transposed for a random half of the examples, placed at ``window``
    in an (N, 1, H, W) tensor of zeros."""
    n, _, height, width = x.shape
    side = block.shape[0]
    block = block.to(device=x.device, dtype=x.dtype)
    transpose = torch.randint(0, 2, (n, 1, 1), generator=generator, device=x.device).bool()
    blocks = torch.where(transpose, block.T.expand(n, side, side), block.expand(n, side, side))
    placed = torch.zeros(n, 1, height, width, device=x.device, dtype=x.dtype)
    placed[window] = blocks.reshape(-1)  # row-major order matches the window's pixels
    return placed


def _block(side: int) -> torch.Tensor:
    """Unit-norm side x side block: rings on the first half of the rows, minus rings on the rest."""
    top = side // 2
    block = torch.cat([_rings(top, side), -_rings(side - top, side)]) if top else -_rings(side, side)
    return block / block.norm()


def _block_l1(side: int) -> torch.Tensor:
    """Unit-l1 side x side block of the L1 Square Attack: rings ``1/(k+1)^4``, each half of unit l1 norm,
    on the first half of the rows, minus on the rest."""
    top = side // 2
    halves = [h / h.abs().sum() for h in (_rings(top, side, 4), _rings(side - top, side, 4)) if h.numel()]
    block = torch.cat([halves[0], -halves[1]]) if top else -halves[0]
    return block / block.abs().sum()


def _window_side_l1(p: float, channels: int, height: int, width: int) -> int:
    """The L1 Square Attack's window side: ``round(sqrt(p * height * width))``, at least 3, odd, at most the image."""
    side = max(int(round(math.sqrt(p * height * width))), 3)
    side += 1 - side % 2
    return min(side, height, width)


def _flat_sq(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).pow(2).sum(1)


# The objectives the search improves; "margin" is the CW margin with kappa = 0 (losses.cw): it is
# the paper's ``max_{j != y} z_j - z_y`` at every point not yet broken, the only points compared.
_OBJECTIVES = {"margin": losses.cw, "ce": losses.ce}


@register_attack("square")
@dataclass(frozen=True)
class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020): random search on the logits, no gradients.

    Args:
        threat: ``ro.Linf``, ``ro.L2`` or ``ro.L1``; inputs must be NCHW images.
        queries: model queries per example and restart, the initial point included (>= 1).
        p_init: fraction of the pixels the first windows cover, in (0, 1]; halved on the
            schedule of the paper rescaled to ``schedule_queries``.
        schedule_queries: the budget that the schedule of ``p`` is laid out for: None (the
            default) is ``queries`` (the paper's rescaling); 10000 is the paper's schedule at its
            iterations, which AutoAttack's standard version uses at any budget
            (``resc_schedule=False``).
        loss: objective the search improves: "margin" (``max_{j != y} z_j - z_y``; the paper's
            choice, positive exactly when misclassified) or "ce" (cross-entropy).
        restarts: runs, each from a new random start, on the examples not yet broken.
        early_exit: also stop an example at a checkpoint when its margin cannot flip at its pace
            (``early_exit.stalled``; not part of the paper).
        stall_factor: with ``early_exit``, how many times its pace an example is granted before it
            counts as stalled (> 0).
        stall_window: with ``early_exit``, the stretch of the budget that measures the pace: None,
            since the start, checked at every tenth of the budget; a fraction ``w`` in (0, 0.5],
            the last ``w`` of the budget, checked every ``w`` (the search's large early windows
            then no longer speak for its late ones).
        seed: seed of the random search when no generator is given.
        label: display name in tables (default "Square").

    Returns of ``run``: ``grad_evals`` = 0 and ``forwards`` = every query: one clean pass per
    example, then one per example per iteration while it is not broken. With ``targets=`` the
    search aims at them (targeted margin ``z_t - max_{j != t} z_j`` or minus the CE of the
    target) and stops on hitting them.

    Example:
        >>> x_adv = Square(Linf(8 / 255), queries=5000)(model, x, y)
    """

    threat: ThreatModel
    _: KW_ONLY
    queries: int = 5000
    p_init: float = 0.8
    schedule_queries: int | None = None
    loss: str = "margin"
    restarts: int = 1
    early_exit: bool = False
    stall_factor: float = 2.0
    stall_window: float | None = None
    seed: int = 0
    label: str | None = None

    norms: ClassVar[tuple[str, ...]] = ("Linf", "L2", "L1")
    clean_success_counts: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_counts("queries", "restarts")
        if self.schedule_queries is not None:
            self._check_counts("schedule_queries")
        if not (isinstance(self.p_init, (int, float)) and 0.0 < self.p_init <= 1.0):
            raise ValueError(f"p_init must be a number in (0, 1], got {self.p_init!r}.")
        if self.loss not in _OBJECTIVES:
            raise ValueError(f"loss must be 'margin' or 'ce', got {self.loss!r}.")
        self._check_flags("early_exit")
        self._check_positive("stall_factor")
        w = self.stall_window
        if w is not None and not (isinstance(w, (int, float)) and not isinstance(w, bool) and 0.0 < w <= 0.5):
            raise ValueError(f"stall_window must be None or a fraction of the budget in (0, 0.5], got {w!r}.")
        self._check_seed()

    @property
    def steps(self) -> int:
        """Iterations of the random search per restart, the initial point included: one query each."""
        return self.queries

    # --- the hooks of the driver ---------------------------------------------------------
    def _check_call(self, x: torch.Tensor, options: dict[str, Any]) -> None:
        super()._check_call(x, options)
        if x.dim() != 4:
            raise ValueError(f"Square needs images of shape (N, C, H, W), got shape {tuple(x.shape)}.")

    def _stall_checks(self) -> set[int]:
        """The iterations before which the early exit looks for stalled examples."""
        w = self.stall_window
        # k * w rounded: 3 * 0.1 is the fraction 0.3, not 0.30000000000000004 (whose check would come one iteration later)
        fractions = _STALL_CHECKS if w is None else [round(k * w, 9) for k in range(1, math.ceil(1 / w - 1e-9))]
        return {math.ceil(f * self.queries) for f in fractions} - {0}

    def _objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return _OBJECTIVES[self.loss](logits, y, target).float()

    def _search(self, s: Search) -> None:
        """One random search from a fresh start, until broken or out of queries; offers its final point."""
        x, y, target = s.x, s.y, s.loss_target  # Square aims where it succeeds (explicit targets or none)
        init, propose = _NORMS[self.threat.norm]
        x_hat = init(self, x, s.generator)
        logits = predict(s.model, x_hat)
        obj, success = self._objective(logits, y, target), s.success(logits)
        s.cost.add(s.rows, forwards=1)
        height, width = x.shape[2:]
        searching = ~success  # with early exit, also not stalled
        if self.early_exit:
            margin = losses.margin(logits, y, s.success_target)
            margin_then, then = margin.clone(), 0  # the margins the pace is measured from, and when
            checks = self._stall_checks()
        for i in range(1, self.queries):
            if self.early_exit and i in checks:  # who cannot flip at its pace (early_exit.stalled)
                searching &= ~stalled(margin, margin_then, self.queries - i, i - then, self.stall_factor)
                if self.stall_window is not None:  # the next check measures the pace from here
                    margin_then, then = margin.clone(), i
            active = searching.nonzero().squeeze(1)
            if len(active) == 0:
                break
            p = p_schedule(self.p_init, i, self.schedule_queries or self.queries)
            side = (_window_side_l1(p, x.shape[1], height, width) if self.threat.norm == "L1"
                    else window_side(p, height, width))
            xa, ya = x[active], y[active]
            ta = target[active] if target is not None else None
            x_new = propose(self, xa, x_hat[active], side, s.generator)
            logits = predict(s.model, x_new)
            s.cost.add(s.rows[active], forwards=1)
            obj_new, success_new = self._objective(logits, ya, ta), s.success(logits, active)
            accept = success_new | (obj_new > obj[active])
            sel = active[accept]
            x_hat[sel], obj[sel], success[sel] = x_new[accept], obj_new[accept], success_new[accept]
            searching[sel] &= ~success_new[accept]
            if self.early_exit:
                margin[sel] = losses.margin(logits[accept], ya[accept], None if s.success_target is None else s.success_target[sel])
        s.offer(x_hat, success, obj)
        if self.early_exit:
            stop = torch.where(success, STOP_BROKEN, torch.where(searching, STOP_BUDGET, STOP_STALLED)).to(torch.int8)
            s.cost.note("stop", s.rows, stop, fill=STOP_NOT_RUN)
            s.cost.note("margin", s.rows, margin, fill=float("nan"))

    # --- per norm: the start and the proposal -----------------------------------------------
    def _init_linf(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Vertical stripes of +-eps, one sign per column and channel."""
        n, channels, height, width = x.shape
        stripes = random_signs((n, channels, 1, width), generator, x)
        return self.threat.project(x + self.threat.eps * stripes, x)

    def _init_l2(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A centred grid of pseudo-Gaussian blocks with random signs, scaled to norm eps."""
        delta = _block_grid(x, _block, generator)
        delta = delta * (self.threat.eps / _flat_sq(delta).sqrt().clamp_min(1e-12)).view(-1, 1, 1, 1)
        return self.threat.project(x + delta, x)

    def _propose_linf(self, x, x_hat, side, generator):
        n, channels, height, width = x.shape
        window = _windows(n, side, height, width, generator, x.device)
        signs = random_signs((n, channels, 1, 1), generator, x)
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
        placed = _place_block(_block(side), w1, generator, x)
        rho = random_signs((n, channels, 1, 1), generator, x)

        def norm_hw(v):
            return v.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()

        nu_w1 = nu * w1
        direction = rho * placed + nu_w1 / norm_hw(nu_w1).clamp_min(1e-12)
        both = w1 | w2
        available = (norm_hw(nu * both) ** 2 + unused / channels).sqrt()
        nu_new = nu * ~both + direction / norm_hw(direction).clamp_min(1e-12) * available
        return self.threat.project(x + nu_new, x)

    def _init_l1(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A centred grid of L1 blocks with random signs per channel, projected onto ball and box."""
        return self.threat.project(x + _block_grid(x, _block_l1, generator), x)

    def _propose_l1(self, x, x_hat, side, generator):
        n, channels, height, width = x.shape
        eps = self.threat.eps
        nu = x_hat - x
        unused = (eps - nu.abs().flatten(1).sum(1)).clamp_min(0).view(-1, 1, 1, 1)
        w1 = _windows(n, side, height, width, generator, x.device)
        w2 = _windows(n, side, height, width, generator, x.device)
        placed = _place_block(_block_l1(side), w1, generator, x)
        rho = random_signs((n, channels, 1, 1), generator, x)

        def l1_hw(v):
            return v.abs().sum(dim=(2, 3), keepdim=True)

        nu_w1 = nu * w1
        direction = rho * placed + nu_w1 / l1_hw(nu_w1).clamp_min(1e-12)
        both = w1 | w2
        mass = (unused / channels + l1_hw(nu * both)) * channels
        nu_new = nu * ~both + direction / l1_hw(direction).clamp_min(1e-12) * mass
        return self.threat.project(x + nu_new, x)


# The start and the proposal of each norm the attack supports (Square.norms).
_NORMS = {"Linf": (Square._init_linf, Square._propose_linf), "L2": (Square._init_l2, Square._propose_l2),
          "L1": (Square._init_l1, Square._propose_l1)}
