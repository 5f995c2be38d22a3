"""Robust accuracy as a function of eps (Madry et al. 2018, Fig. 2), from one monotone cascade.

The feasible sets are nested: for ``eps1 <= eps2`` the ball of radius ``eps1``
(intersected with the box) lies inside the ball of radius ``eps2``. An
adversarial point found at ``eps1`` is therefore also valid at every larger
eps, so an example broken at ``eps1`` stays broken. ``sweep`` walks the eps
grid in increasing order and, at each eps, only attacks the examples that
survived the previous one: the work shrinks as the curve falls, and one pass
also gives every example's *breaking eps* (the smallest grid eps at which it
was broken), i.e. a per-example minimal-perturbation curve.

With ``independent=True`` every eps attacks all clean-correct examples instead;
use it to check the cascade or to measure how much work the cascade saves.

Example:
    >>> curve = sweep(model, (x, y), Linf, [0.0, 0.1, 0.2, 0.3, 0.4])
    >>> print(curve.table())
    >>> curve.plot("sweep.png", train_eps=0.3)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, Union

import numpy as np
import torch
from torch import nn

from robustopt._checks import check_grid_size, warn_eps
from robustopt._io import atomic_path, atomic_write_json, atomic_write_text
from robustopt._progress import progress_bar
from robustopt.attacks.base import Attack
from robustopt.attacks.checks import check_batch
from robustopt.attacks.gradient import PGD
from robustopt.evaluation._cascade import AttackPass, Cascade, seeded_generator
from robustopt.evaluation.evaluate import _as_tensors, check_seed
from robustopt.evaluation.tables import render
from robustopt.threat import ThreatModel

__all__ = ["SweepCurve", "sweep", "default_attacks"]

AttackSpec = Union[Attack, Callable[[ThreatModel], Union[Attack, Sequence[Attack]]], None]

DEFAULT_STEPS = 40


def default_attacks(threat: ThreatModel) -> list[Attack]:
    """The default attack of a sweep: PGD, 40 steps of ``2.5 * eps / 40``, one random start, CE loss.

    The step ``2.5 * eps / steps`` (Madry et al.'s rule) scales with eps, so the
    attack is equally strong relative to every radius of the grid, and 40 steps
    can walk 2.5 ball-radii: enough to reach the boundary from any start.
    """
    return [PGD(threat, steps=DEFAULT_STEPS, rel_step_size=2.5 / DEFAULT_STEPS, restarts=1, random_start=True)]


def _rethreat(attack: Attack, threat: ThreatModel) -> Attack:
    """A copy of ``attack`` with its threat model replaced (also inside wrappers such as Transfer)."""
    names = {f.name for f in dataclasses.fields(attack)}  # type: ignore[arg-type]
    if "threat" in names:
        return dataclasses.replace(attack, threat=threat)  # type: ignore[type-var]
    if "attack" in names and isinstance(getattr(attack, "attack"), Attack):  # e.g. Transfer(source, inner)
        return dataclasses.replace(attack, attack=_rethreat(attack.attack, threat))  # type: ignore[type-var]
    raise TypeError(
        f"cannot rebuild {type(attack).__name__} for another eps (it has no 'threat' field); "
        "pass attack= as a function threat -> list of attacks instead."
    )


def _attacks_for(spec: AttackSpec, threat: ThreatModel) -> list[Attack]:
    if spec is None:
        return default_attacks(threat)
    if isinstance(spec, Attack):
        if not dataclasses.is_dataclass(spec):
            raise TypeError(f"attack template {spec!r} is not a dataclass; pass a function threat -> list of attacks.")
        return [_rethreat(spec, threat)]
    if not callable(spec):
        raise TypeError(
            f"attack must be None, an Attack used as a template (e.g. PGD(Linf(0.0), steps=40)), or a "
            f"function threat -> list of attacks; got {type(spec).__name__}."
        )
    built = spec(threat)
    attacks = [built] if isinstance(built, Attack) else list(built)
    if not attacks:
        raise ValueError(f"the attack factory returned no attacks for {threat}; return at least one.")
    for a in attacks:
        if not isinstance(a, Attack):
            raise TypeError(f"the attack factory must return robustopt attacks, got {a!r} for {threat}.")
        if a.threat.eps != threat.eps or a.threat.norm != threat.norm:
            raise ValueError(
                f"the attack factory returned {a.name} with threat {a.threat} when asked for {threat}; "
                "build every attack with the threat model it is given."
            )
    return attacks


def _check_eps(eps_values: Any) -> list[float]:
    """Sorted, de-duplicated list of floats; ValueError on an empty list or a bad value."""
    if isinstance(eps_values, (torch.Tensor, np.ndarray)):
        eps_values = eps_values.reshape(-1).tolist()
    if isinstance(eps_values, (str, bytes)) or not isinstance(eps_values, Sequence):
        raise TypeError(
            f"eps_values must be a list of numbers such as [0.0, 0.1, 0.2, 0.3], got {type(eps_values).__name__}."
        )
    if len(eps_values) == 0:
        raise ValueError("eps_values is empty: pass at least one eps, e.g. [0.0, 0.1, 0.2, 0.3].")
    check_grid_size(len(eps_values))
    out = []
    for e in eps_values:
        if isinstance(e, bool) or not isinstance(e, numbers.Real):
            raise ValueError(f"every eps must be a number, got {e!r} in {list(eps_values)}.")
        e = float(e)
        if not math.isfinite(e) or e < 0:
            raise ValueError(f"every eps must be finite and >= 0 (pixel units, e.g. 8/255), got {e} in {list(eps_values)}.")
        out.append(e)
    return sorted(set(out))


def _make_threat(threat_cls: Callable[[float], ThreatModel], eps: float) -> ThreatModel:
    if isinstance(threat_cls, ThreatModel):
        raise TypeError(
            f"threat_cls must be the class (e.g. ro.Linf), not an instance such as {threat_cls}: "
            "the sweep builds one threat model per eps."
        )
    threat = threat_cls(eps)
    if not isinstance(threat, ThreatModel):
        raise TypeError(
            f"threat_cls must be a threat model class such as ro.Linf (or a function eps -> ThreatModel), "
            f"got {threat_cls!r} which returned {type(threat).__name__}."
        )
    if not math.isclose(threat.eps, eps, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"threat_cls returned {threat} when asked for eps={eps:g}; it must build the threat model "
                         "of the eps it is given (e.g. functools.partial(ro.Linf, bounds=(-1, 1))).")
    return threat


@dataclass
class SweepCurve:
    """Robust accuracy against eps, and each example's breaking eps.

    Attributes:
        norm: "Linf", "L2" or "L1".
        eps: the grid, increasing, in pixel units.
        accuracy: robust accuracy at each eps, in [0, 1] (eps = 0: clean accuracy).
        grad_evals: forward+backward passes spent at each eps.
        seconds: wall time spent at each eps.
        breaking_eps: float (N,): the smallest eps of the grid at which the example was
            misclassified; 0 for clean mistakes, ``inf`` if never broken. In cascade mode
            ``accuracy[i] == mean(breaking_eps > eps[i])``.
        attacked: number of examples attacked at each eps.
        mode: "cascade" or "independent".
        seed: the seed of the random starts.
        attacks: JSON description of the attacks at the largest eps.
        meta: input dimension, bounds, label shares, versions and anything passed in.
    """

    norm: str
    eps: list[float]
    accuracy: list[float]
    grad_evals: list[int]
    seconds: list[float]
    breaking_eps: torch.Tensor
    attacked: list[int] = field(default_factory=list)
    mode: str = "cascade"
    seed: int = 0
    attacks: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.breaking_eps.numel())

    @property
    def total_grad_evals(self) -> int:
        return int(sum(self.grad_evals))

    def accuracy_at(self, eps: float) -> float:
        """Robust accuracy at a grid point ``eps`` (KeyError if it is not on the grid)."""
        for e, a in zip(self.eps, self.accuracy):
            if math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12):
                return a
        raise KeyError(f"eps={eps} is not on the grid {self.eps}.")

    # --- views -------------------------------------------------------------------------
    def cells(self) -> tuple[list[str], list[list[str]], str]:
        """The table as strings: its header, one line per eps, its caption."""
        header = [f"eps ({self.norm})", "Robust accuracy", "Attacked", "Grad evals", "Seconds"]
        lines = [
            [f"{e:.4g}", f"{100 * a:.1f}%", str(k), str(g), f"{s:.2f}"]
            for e, a, k, g, s in zip(self.eps, self.accuracy, self.attacked or [""] * len(self.eps), self.grad_evals, self.seconds)
        ]
        return header, lines, f"{self.n} examples, mode={self.mode}, {self.total_grad_evals} grad evals in total"

    def table(self, fmt: Literal["text", "markdown"] = "text") -> str:
        """eps | robust accuracy | attacked | grad evals | seconds, as text or Markdown."""
        header, lines, caption = self.cells()
        return render(header, lines, fmt, align="right", caption=caption) + "\n"

    def plot(self, path: str | Path, train_eps: float | None = None, title: str | None = None) -> Path:
        """Save the curve (robust accuracy against eps) as an image, e.g. ``sweep.png`` or ``.pdf``.

        Args:
            path: output file; the format follows its suffix. Written atomically.
            train_eps: eps the model was trained with; drawn as a dashed vertical line.
            title: figure title (default: the norm and number of examples).
        """
        path = Path(path)
        fig = self.figure(train_eps, title)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
        return path

    def figure(self, train_eps: float | None = None, title: str | None = None) -> Any:
        """The plot of :meth:`plot` as a matplotlib Figure (on an Agg canvas), e.g. to embed it elsewhere."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported on use: it takes a second
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.0, 3.6))
        FigureCanvasAgg(fig)  # Agg canvas: no display or pyplot state involved
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(self.eps, [100 * a for a in self.accuracy], marker="o", label=f"robust accuracy ({self.mode})")
        if train_eps is not None:
            ax.axvline(float(train_eps), color="gray", linestyle="--", label=f"training eps = {float(train_eps):.3g}")
        ax.set_xlabel(f"eps ({self.norm})")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        ax.set_title(title or f"{self.norm} sweep, {self.n} examples")
        fig.tight_layout()
        return fig

    # --- files -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``inf`` breaking eps (never broken) are stored as null."""
        breaking = [None if math.isinf(b) else b for b in self.breaking_eps.double().tolist()]
        return {
            "norm": self.norm,
            "eps": list(self.eps),
            "accuracy": list(self.accuracy),
            "grad_evals": list(self.grad_evals),
            "seconds": list(self.seconds),
            "attacked": list(self.attacked),
            "mode": self.mode,
            "seed": self.seed,
            "n": self.n,
            "attacks": self.attacks,
            "meta": self.meta,
            "breaking_eps": breaking,
        }

    def to_json(self, path: str | Path) -> Path:
        """Write the curve (per-example breaking eps included) atomically."""
        return atomic_write_json(path, self.to_dict())

    def to_markdown(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.table("markdown"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepCurve":
        """The inverse of :meth:`to_dict` (``n`` and the totals are recomputed)."""
        breaking = [math.inf if b is None else float(b) for b in d["breaking_eps"]]
        return cls(
            norm=d["norm"],
            eps=[float(e) for e in d["eps"]],
            accuracy=[float(a) for a in d["accuracy"]],
            grad_evals=[int(g) for g in d["grad_evals"]],
            seconds=[float(s) for s in d["seconds"]],
            breaking_eps=torch.tensor(breaking, dtype=torch.float64),
            attacked=[int(k) for k in d.get("attacked", [])],
            mode=d.get("mode", "cascade"),
            seed=int(d.get("seed", 0)),
            attacks=d.get("attacks", []),
            meta=d.get("meta", {}),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "SweepCurve":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a robustopt sweep JSON file ({err}).") from err


def sweep(
    model: nn.Module,
    data: Any,
    threat_cls: Callable[[float], ThreatModel],
    eps_values: Sequence[float],
    *,
    attack: AttackSpec = None,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
    independent: bool = False,
    meta: dict[str, Any] | None = None,
) -> SweepCurve:
    """Robust accuracy of ``model`` over a grid of eps (Madry et al. 2018, Fig. 2).

    Monotone cascade: eps are processed in increasing order and at each eps only
    the examples that survived the previous eps are attacked (an adversarial
    point at a smaller eps lies inside every larger ball and the box, so a broken
    example stays broken). With several attacks per eps, they run as a cascade too.
    eps = 0 is not attacked: the ball is the clean point, the accuracy is the clean one.

    Args:
        model: maps inputs in the threat's bounds to logits (N, C); run in eval mode, mode restored.
        data: ``(x, y)`` tensors or an iterable of ``(x, y)`` batches.
        threat_cls: threat model class, ``ro.Linf``, ``ro.L2`` or ``ro.L1`` (or any function
            eps -> ThreatModel, e.g. ``functools.partial(ro.Linf, bounds=(-1, 1))``).
        eps_values: the grid, finite and >= 0, in pixel units; sorted and de-duplicated here.
        attack: None for ``default_attacks`` (PGD 40 steps of 2.5 * eps / 40, random start);
            an Attack used as a template (its threat is replaced by ``threat_cls(eps)``,
            also inside a ``Transfer``); or a function ``threat -> list[Attack]``.
        batch_size: examples per attack call.
        seed: makes the random starts reproducible (one generator per eps, attack and batch).
        progress: show a progress bar.
        independent: attack all clean-correct examples at every eps (no cascade): the rows are
            then each eps alone, and the curve may be non-monotone if the attack is weak.
        meta: extra JSON-ready information stored with the curve.

    Under ``torchrun`` the batches are shared out as in :func:`robustopt.evaluate` (batch ``j``
    on rank ``j % world_size``, same generators), so the curve and every breaking eps are
    those of a single-process run.

    Returns:
        SweepCurve with the accuracy, cost and time per eps and each example's breaking eps.

    Raises:
        ValueError: empty eps list, more than 1,000 eps values, negative or non-finite eps, an eps beyond
            the input box (see :mod:`robustopt._checks`; EpsWarning above half of it), a ``threat_cls``
            that does not build the eps it is given, bad batch_size or seed, data (none, or malformed),
            labels that are not classes of the model, or a model output with NaN or Inf.

    Example:
        >>> curve = sweep(model, (x, y), ro.Linf, [0, 0.1, 0.2, 0.3], attack=ro.attacks.PGD(ro.Linf(0), steps=20))
    """
    eps_grid = _check_eps(eps_values)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    check_seed(seed)
    threats = [_make_threat(threat_cls, e) for e in eps_grid]
    if len({(t.norm, tuple(t.bounds)) for t in threats}) > 1:
        raise ValueError(f"threat_cls returned threat models of several norms or bounds ({threats[0]}, {threats[-1]}); "
                         "a curve is over one norm and one box.")
    attacks_per_eps = [_attacks_for(attack, t) for t in threats]

    x, y = _as_tensors(data)
    check_batch(x, y, threats[0])
    y = y.long()
    n = len(x)
    if n == 0:
        raise ValueError("data holds no examples: pass at least one (x, y) pair to sweep.")
    warn_eps(threats[-1], x.shape[1:])  # the largest eps of the grid

    # Under torchrun, batch j runs on rank j % world_size with batch j's generator and the flags
    # are merged after every round: the result is the single-process one, example by example.
    core = Cascade(model, x, y, batch_size, "the sweep data")
    ctx = core.ctx

    start = time.perf_counter()
    correct = core.clean()
    clean_seconds = time.perf_counter() - start
    breaking = torch.where(correct.cpu(), math.inf, 0.0).double()  # on the CPU: float64 everywhere
    robust = correct.clone()  # cascade state: not broken at any eps so far

    accuracy: list[float] = []
    grad_evals: list[int] = []
    seconds: list[float] = []
    attacked: list[int] = []
    bar = progress_bar(len(eps_grid), "sweep", "eps value", enabled=progress and ctx.is_main, leave=False)
    for k, (eps, threat, attacks) in enumerate(zip(eps_grid, threats, attacks_per_eps)):
        t0 = time.perf_counter()
        bar.set_description(f"sweep {threat}")
        pool = (correct if independent else robust).clone()  # the examples attacked at this eps
        survived = pool.clone()  # not broken by any attack of this eps
        cost = 0
        if eps > 0:  # at eps = 0 the ball is the clean point: nothing to attack
            for i, atk in enumerate(attacks):
                todo = survived.nonzero().squeeze(1)  # several attacks at one eps cascade too
                generator = functools.partial(seeded_generator, x.device, seed, k, i)  # batch j -> its stream
                step = core.run(atk, AttackPass(core.batches(todo, atk), survived), generator, threat=threat)
                survived, cost = step.survived, cost + step.grad_evals
        newly = (pool & ~survived).cpu()
        breaking[newly] = torch.clamp(breaking[newly], max=eps)
        if not independent:
            robust &= survived
        accuracy.append(float(survived.double().mean()) if n else 0.0)
        grad_evals.append(cost)
        seconds.append(time.perf_counter() - t0 + (clean_seconds if k == 0 else 0.0))
        attacked.append(int(pool.sum()) if eps > 0 else 0)
        bar.update(1)
    bar.close()

    counts = torch.bincount(y.cpu()) if n else torch.zeros(1)
    info: dict[str, Any] = {
        "clean_accuracy": float(correct.double().mean()) if n else 0.0,
        "dim": int(x[0].numel()) if n else 0,
        "bounds": list(threats[0].bounds),
        "majority_fraction": float(counts.max() / max(n, 1)),
        "batch_size": batch_size,
        "seconds": time.perf_counter() - start,
        "torch": torch.__version__,
        "device": str(x.device),
    }
    if ctx.enabled:
        info["world_size"] = ctx.world_size
    info.update(meta or {})
    return SweepCurve(
        norm=threats[0].norm,
        eps=eps_grid,
        accuracy=accuracy,
        grad_evals=grad_evals,
        seconds=seconds,
        breaking_eps=breaking,
        attacked=attacked,
        mode="independent" if independent else "cascade",
        seed=seed,
        attacks=[a.describe() for a in attacks_per_eps[-1]],
        meta=info,
    )
