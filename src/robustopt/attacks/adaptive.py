"""AutoAttack's attacks, scheduled by evidence per example: ``AdaptiveAutoAttack``.

AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML) runs APGD-CE, APGD-T (9 targets), FAB-T
(9 targets) and Square (5000 queries) in a cascade, every attack to its full budget on every
example still robust. Most of that budget goes to examples that cannot flip. This schedule
runs the same families, each on the examples that every earlier stage left unbroken, and
spends where the evidence says an example can still flip:

1. **APGD-CE** with early exit (``APGD(early_exit=True)``): an example leaves as soon as it is
   broken, or at a checkpoint when its margin cannot reach zero at the pace it has kept since
   its random start (the stall rule in ``robustopt.attacks.apgd``, after the online discarding of A3: Liu et
   al. 2022, "Practical Evaluation of Adversarial Robustness via Adaptive Auto Attack", CVPR).
   A survivor whose margin never improved (*flat*) and where the model's Jacobian is exactly
   zero at APGD-CE's point (quantized or non-differentiable inputs; one gradient evaluation
   tells) goes straight to Square with its whole budget: APGD-T and FAB-T follow the same
   Jacobian, so they skip it.
2. **APGD-T** (targeted DLR), with early exit, on the ``n_target_classes`` classes that score
   highest (``target_score``); where it breaks ``MORE_TARGETS_SHARE`` of what it attacked (a
   model whose CE gradients mislead, or with many points near the boundary), it runs again on its
   survivors with AutoAttack's other targets (up to 9). The targets are ranked by:

   * ``"adversarial"`` (default): the logits at the point APGD-CE reached for the example.
     That point lies where the CE attack pushed the example, so its runner-up classes are
     the nearest boundaries there.
   * ``"malt"``: MALT (Melamed et al. 2024, "MALT Powers Up Adversarial Attacks", NeurIPS):
     the distance to each class's boundary in the linearization at the clean input,
     ``(z_y - z_t) / ||grad (z_y - z_t)||_q`` (q the dual norm), smallest first; it costs
     one Jacobian (``classes`` backward passes) per example.
   * ``"clean"``: the clean logits, highest first (AutoAttack).
3. **FAB-T** where it can still add something: first on ``m`` survivors (``sample`` of them,
   at least ``min_sample``), half those closest to flipping (the highest best margin of the
   gradient stages), half drawn at random from the others, in one call (on a few examples an
   attack's cost is per step, not per example). If a random one broke, on all the
   other survivors; if only close ones broke, on the next ``m`` closest, and so on while a
   pass breaks one; if none broke, nowhere else. Where it breaks at least ``masking_share``
   of what it attacked, it is the attack that works there (as when the model's gradients
   mislead APGD): it runs again on its survivors with AutoAttack's other targets (up to 9).
4. **Square** (the black-box stage): the same passes, or at once on all the survivors, with
   its whole budget (no early exit), when the gradients look masked:

   * *flat*: at least ``masking_share`` of the examples APGD-CE attacked never improved their
     margin over the random start (zero or vanishing gradients: quantized inputs, saturated
     logits, a softmax at the end);
   * *weak CE*: APGD-T broke at least ``masking_share`` of the examples it attacked, and at
     least a quarter of everything the two gradient stages broke: the CE gradients were
     uninformative while the scale-invariant DLR ones were not (saturated logits);
   * *FAB-T strong*: FAB-T broke as much, and a quarter of everything the white-box stages
     broke: APGD's gradient steps were misled where FAB's linearized boundaries were not.

   Otherwise Square keeps an early exit (``Square(early_exit=True)``, with twice
   ``stall_factor``: a random search moves in jumps).

A stage's success counts only if a fresh forward pass on its point confirms it (a point just
across the boundary, as FAB's are, can read differently in another batch; ``evaluate`` checks
again). A random model (two forward passes on the same inputs differ) gets APGD steps whose
loss and gradient are averaged over ``eot`` draws of its randomness (EOT, as in AutoAttack's
``rand`` version); an example leaves an APGD stage once it is broken under the mean of those
draws, but never as stalled (margins under EOT are too noisy to extrapolate); its success
counts only if it is wrong in ``RANDOM_CONFIRM_SHARE`` of ``RANDOM_CONFIRM_DRAWS`` fresh passes
(``evaluate`` judges by the majority of ``RANDOM_DRAWS``: a point just over half is a coin toss there,
and one confirmed by fewer draws often fails that judge), and an
early exit that this does not confirm runs the stage again with its whole budget. FAB-T and
Square then run on every survivor, without sampling or early exit: a success under one draw
proves little (and ``ro.audit`` flags such a model).

Under ``L1`` the APGD stages are L1-APGD with AutoAttack's 3-2-1 eps schedule
(``APGD.decreasing_eps``, as in ``suites.standard(L1(eps))``), APGD-CE runs AutoAttack's 5 restarts
(each on what the earlier ones left) and Square is its L1 version.

The samples are drawn over one call. ``evaluate`` gives this attack ``pool`` examples per call
(``call_size``) and its batch size as the ``batch_size`` option, so FAB-T's and Square's samples,
whose cost does not shrink with the number of survivors, are drawn once per ``pool`` examples and
not once per evaluation batch; every stage (and every pass on the model) still runs on at most
``batch_size`` examples at a time, so memory is what the batch size says.

Every decision is recorded: per example (``AttackResult.notes``) which stage broke it
(``broken_by``, an index into ``BROKEN_BY``, -1 for none) and how each stage ended for it
(an index into ``OUTCOMES``), with its model passes (``grad_evals_per_example``,
``forwards_per_example``); per call (``AttackResult.summary``) each stage's examples, breaks,
passes, seconds and sampling decision with its reason. ``evaluate`` keeps both in the
row (``robustopt.evaluation.records`` adds them up into the budget per stage).

An example that no stage breaks gets APGD-CE's best point. Each stage draws from the
call's generator, so the schedule is deterministic under a seed.

Example:
    >>> ev = ro.evaluate(model, (x, y), [AdaptiveAutoAttack(Linf(0.3))])
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable, ClassVar, Literal

import torch
from torch import nn

from robustopt.attacks.apgd import APGD
from robustopt.attacks.base import Attack, AttackResult
from robustopt.attacks.early_exit import STOP_BROKEN, STOP_BUDGET, STOP_STALLED
from robustopt.attacks.fab import FAB
from robustopt.attacks.passes import RANDOM_DRAWS, InBatches, batches, output_change, predict, success_share
from robustopt.attacks.registry import register_attack
from robustopt.attacks.search import Search, success_of
from robustopt.attacks.square import AUTOATTACK_SCHEDULE_SCALE, Square
from robustopt.threat import ThreatModel

__all__ = ["AdaptiveAutoAttack", "STAGES", "OUTCOMES", "BROKEN_BY", "malt_scores"]

STAGES = ("APGD-CE", "APGD-T", "FAB-T", "Square")
MORE_TARGETS_SHARE = 0.15  # APGD-T broke this share of what it attacked: its other targets (up to 9) on the rest
RANDOM_CONFIRM_SHARE = 0.9  # a random model: the share of fresh draws a stage's point must fool to count as broken
RANDOM_CONFIRM_DRAWS = 2 * RANDOM_DRAWS  # ... of this many draws
# How a stage ended for an example (``notes[stage]``).
OUTCOMES = ("not run", "budget", "broken", "stalled", "skipped")
NOT_RUN, BUDGET, BROKEN, STALLED, SKIPPED = range(len(OUTCOMES))
# Which stage broke an example (``notes["broken_by"]``; -1: none); "clean": misclassified as it is.
BROKEN_BY = ("clean", *STAGES)

TargetScore = Literal["adversarial", "malt", "clean"]
AUTOATTACK_TARGETS = 9  # the target classes of AutoAttack's APGD-T and FAB-T
L1_CE_RESTARTS = 5  # AutoAttack's L1 version runs APGD-CE 5 times


def malt_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """MALT's target scores: minus the linearized distance to each class's decision boundary.

    ``-(z_y - z_t) / ||grad_x (z_y - z_t)||_q`` at the clean input, q the dual exponent of the
    threat's norm (Melamed et al. 2024); the true class gets ``-inf``. Highest = nearest.

    Args:
        model: logits (N, C) in eval mode.
        x: clean inputs (N, ...); y: labels (N,).
        threat: gives the norm (L-inf: the l1 norm of the gradient; L2: l2; L1: l-inf).

    Returns:
        (N, C) float scores. Costs one forward and ``C`` backward passes.
    """
    q = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[float(threat.p)]
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logits = predict(model, xr)
        classes = logits.shape[1]
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        scores = torch.full(logits.shape, -math.inf, dtype=torch.float32, device=x.device)
        for c in range(classes):  # every class: each is some example's target
            gap = z_y - logits[:, c]
            (grad,) = torch.autograd.grad(gap.sum(), xr, retain_graph=c < classes - 1)
            norm = torch.linalg.vector_norm(grad.flatten(1), ord=q, dim=1).clamp_min(1e-12)
            scores[:, c] = (-gap.detach() / norm).float()
    return scores.masked_fill(torch.nn.functional.one_hot(y, classes).bool(), -math.inf)


@register_attack("adaptive")
@dataclass(frozen=True)
class AdaptiveAutoAttack(Attack):
    """AutoAttack's four attacks, scheduled per example by evidence (module docstring).

    Args:
        threat: ``ro.Linf``, ``ro.L2`` or ``ro.L1``.
        steps: iterations of APGD-CE and of each APGD-T target (AutoAttack: 100).
        n_target_classes: targets of APGD-T and FAB-T, the highest by ``target_score``.
        target_score: how the targets are ranked: "adversarial", "malt" or "clean".
        stall_factor: the early exit's margin of safety for APGD (``APGD.stall_factor``); Square gets
            twice it; > 0.
        fab_steps: iterations of FAB-T per target.
        queries: Square's query budget per example.
        square_stall_window: Square's ``stall_window`` (how its early exit measures an example's
            pace): None, since the start; a fraction of the budget, over the last such stretch.
        sample: the fraction of the survivors that FAB-T and Square try first, in (0, 1].
        min_sample: at least this many survivors are sampled (all, if fewer).
        masking_share: the share of examples that makes gradients look masked, in (0, 1].
        eot: draws per APGD step on a randomized model (module docstring).
        pool: the examples ``evaluate`` gives one call (at least its batch size): the samples of FAB-T
            and Square are drawn over the survivors of a whole call.
        seed: seed of every stage when no generator is given.
        label: display name in tables (default "AA-adaptive").

    Options of ``run``: ``batch_size``, the most examples any stage or model pass runs on at once
    (default: all of the call's); ``evaluate`` passes its own. ``on_stage``, a function called with
    a line of text as each stage starts (e.g. ``"APGD-T on 312 of 1000"``); ``evaluate`` shows it on
    its progress display, which otherwise moves once per call.

    Returns of ``run``: per example the first successful point any stage found (else APGD-CE's
    best point); ``grad_evals`` and ``forwards`` summed over the stages, per example too;
    ``notes`` and ``summary`` as in the module docstring.

    Example:
        >>> x_adv = AdaptiveAutoAttack(Linf(8 / 255))(model, x, y)
    """

    threat: ThreatModel
    _: KW_ONLY
    steps: int = 100
    n_target_classes: int = 3
    target_score: TargetScore = "adversarial"
    stall_factor: float = 1.0
    fab_steps: int = 100
    queries: int = 5000
    square_stall_window: float | None = None
    sample: float = 0.1
    min_sample: int = 20
    masking_share: float = 0.05
    eot: int = 20
    pool: int = 1000
    seed: int = 0
    label: str | None = None

    norms: ClassVar[tuple[str, ...]] = ("Linf", "L2", "L1")
    clean_success_counts: ClassVar[bool] = True
    call_options: ClassVar[tuple[str, ...]] = ("batch_size", "on_stage")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_counts("steps", "n_target_classes", "fab_steps", "queries", "min_sample", "eot", "pool")
        self._check_seed()
        if self.target_score not in ("adversarial", "malt", "clean"):
            raise ValueError(f"target_score must be 'adversarial', 'malt' or 'clean', got {self.target_score!r}.")
        self._check_positive("stall_factor", "sample", "masking_share")
        for name in ("sample", "masking_share"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be a fraction in (0, 1], got {getattr(self, name)!r}.")
        self.stages()  # each stage checks the settings it takes (e.g. square_stall_window)

    @property
    def name(self) -> str:
        return self.label or "AA-adaptive"

    def call_size(self, batch_size: int) -> int:
        """``pool`` examples per call of ``evaluate`` (its batch size where that is larger)."""
        return max(batch_size, self.pool)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int | None = None,
            on_stage: Callable[[str], Any] | None = None, **kwargs: Any) -> AttackResult:
        """``Attack.run``, with every pass on the model on at most ``batch_size`` examples at once, and
        ``on_stage`` told as each stage starts."""
        if on_stage is not None and not callable(on_stage):
            raise ValueError(f"on_stage must be a function of one string or None, got {type(on_stage).__name__}.")
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
            model = InBatches(model, batch_size)  # the forward-only passes; stages and gradient passes batch themselves
        return super().run(model, x, y, batch_size=batch_size, on_stage=on_stage, **kwargs)

    # --- the stages -------------------------------------------------------------------------
    def stages(self) -> list[Attack]:
        """The four stage attacks with this configuration (APGD-T's loss is fixed per call)."""
        common = {"seed": self.seed}
        l1 = {"decreasing_eps": True} if self.threat.norm == "L1" else {}
        ce_runs = {"restarts": L1_CE_RESTARTS} if self.threat.norm == "L1" else {}
        return [
            APGD(self.threat, loss="ce", steps=self.steps, early_exit=True, stall_factor=self.stall_factor, **l1,
                 **ce_runs, **common),
            APGD(self.threat, loss="dlr", targeted=True, n_target_classes=self.n_target_classes, steps=self.steps,
                 early_exit=True, stall_factor=self.stall_factor, **l1, **common),
            FAB(self.threat, targeted=True, n_target_classes=self.n_target_classes, steps=self.fab_steps, **common),
            # a random search progresses in jumps: Square gets twice the margin of safety
            Square(self.threat, queries=self.queries, schedule_queries=AUTOATTACK_SCHEDULE_SCALE * self.queries, early_exit=True,
                   stall_factor=2 * self.stall_factor, stall_window=self.square_stall_window, **common),
        ]

    def _check_call(self, x: torch.Tensor, options: dict[str, Any]) -> None:
        super()._check_call(x, options)
        if x.dim() != 4:
            raise ValueError(f"AdaptiveAutoAttack needs images of shape (N, C, H, W) (Square), got shape {tuple(x.shape)}.")

    def _search(self, s: Search) -> None:
        """The four stages on the examples of ``s``, each on what the earlier ones left (module docstring)."""
        log = _Log(s)
        ce, targeted, fab, square = self.stages()
        if log.randomized:  # EOT; an example leaves APGD once broken under the mean of the draws, never stalled
            ce, targeted = (dataclasses.replace(a, stall_exit=False, eot=self.eot) for a in (ce, targeted))
            square = dataclasses.replace(square, early_exit=False)
        explicit = s.success_target is not None
        left = torch.arange(len(s.x), device=s.x.device)  # positions in s, still unbroken

        res = log.run(0, ce, left, first=True)
        nan = torch.full((len(left),), math.nan, device=s.x.device)
        flat = res.notes.get("margin", nan) <= res.notes.get("margin_start", nan)  # never improved on the start
        keep = ~res.success
        left, margin = left[keep], res.notes.get("margin", nan)[keep]  # the best margin so far, per survivor
        x_ce = res.x_adv[keep]
        dead = self._dead_gradients(s, left, x_ce, flat[keep])
        if bool(dead.any()):  # no gradient stage can move these: the black box first, with its whole budget
            log.black_box_first(dataclasses.replace(square, early_exit=False), left[dead])
            left, margin, x_ce = left[~dead], margin[~dead], x_ce[~dead]
        scores = None
        if len(left) and not explicit and self.target_score != "clean":
            scores = self._target_scores(s, left, x_ce, log)
        if len(left):
            stage = targeted if log.classes >= 4 else dataclasses.replace(targeted, loss="cw")  # DLR-T needs 4 classes
            res = log.run(1, stage, left, target_scores=scores)
            keep = ~res.success
            left, margin = left[keep], torch.fmax(margin, res.notes.get("margin", margin))[keep]
            scores = None if scores is None else scores[keep]
            if len(left) and not explicit and int(res.success.sum()) >= MORE_TARGETS_SHARE * len(res.success):
                left, margin, scores = self._more_targets(s, log, 1, stage, left, margin, scores)
        (ce_broken, ce_attacked), (t_broken, t_attacked) = [(st["broken"], st["attacked"]) for st in log.stages[:2]]

        randomized = ("randomized: two forward passes on the same inputs differ, so a success under one draw "
                      "proves little" if log.randomized else None)
        if len(left):
            left, margin, scores = log.by_evidence(2, fab, left, margin, scores, self._sample_size(len(left)), randomized)
        fab_broken, fab_attacked = log.stages[2]["broken"], log.stages[2]["attacked"]
        productive = fab_attacked and fab_broken >= self.masking_share * fab_attacked
        if len(left) and productive and not explicit:  # FAB-T is what works here: AutoAttack's other targets too
            left, margin, scores = self._more_targets(s, log, 2, fab, left, margin, scores)
        if len(left):
            evidence = [randomized] if randomized else []
            if productive and 4 * fab_broken >= ce_broken + t_broken + fab_broken:
                evidence.append(f"FAB-T broke {fab_broken} of the {fab_attacked} examples APGD left: the APGD "
                                "stages' gradient steps were misled where FAB's linearized boundaries were not")
            if ce_attacked and float(flat.float().mean()) >= self.masking_share:
                evidence.append(f"flat: {int(flat.sum())} of the {ce_attacked} examples never improved their margin "
                                "under APGD-CE (zero or vanishing gradients)")
            if t_attacked and t_broken >= self.masking_share * t_attacked and 4 * t_broken >= ce_broken + t_broken:
                evidence.append(f"weak CE: APGD-T broke {t_broken} of the {t_attacked} examples APGD-CE left "
                                f"(APGD-CE broke {ce_broken})")
            # masked gradients: the black box is the attack to trust, with its whole budget (margins may be flat)
            square = square if not evidence else dataclasses.replace(square, early_exit=False)
            log.by_evidence(3, square, left, margin, None, self._sample_size(len(left)), "; ".join(evidence) or None)
        log.close()

    def _more_targets(self, s: Search, log: "_Log", i: int, attack: Attack, left: torch.Tensor, margin: torch.Tensor,
                      scores: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The targeted stage ``i`` (APGD-T or FAB-T, ``attack``) again on the survivors it ran on, aimed at
        the classes ranked after its first targets, up to AutoAttack's 9 (``AUTOATTACK_TARGETS``)."""
        more = min(AUTOATTACK_TARGETS, log.classes - 1) - self.n_target_classes
        ran = log.outcome[STAGES[i]][left] != SKIPPED
        if more <= 0 or not bool(ran.any()):
            return left, margin, scores
        idx = ran.nonzero().squeeze(1)
        if scores is None:  # the clean logits rank the targets: one forward pass
            with torch.no_grad():
                ranked = predict(s.model, s.x[left[idx]]).float()
            s.cost.add(s.rows[left[idx]], forwards=1)
        else:
            ranked = scores[idx].clone()
        first = ranked.masked_fill(torch.nn.functional.one_hot(s.y[left[idx]], log.classes).bool(), -math.inf)
        first = first.topk(self.n_target_classes, dim=1).indices  # the targets the stage has already tried
        ranked.scatter_(1, first, -math.inf)
        res = log.run(i, dataclasses.replace(attack, n_target_classes=more), left[idx], again=True,
                      target_scores=ranked)
        st = log.stages[i]
        why = f"{st['why']}; " if st.get("why") else ""
        st["why"] = (f"{why}it broke {st['broken'] - int(res.success.sum())} of {st['attacked']}, "
                     f"so the next {more} targets ran on the {len(idx)} it left and broke {int(res.success.sum())}")
        keep = torch.ones(len(left), dtype=torch.bool, device=left.device)
        keep[idx[res.success]] = False
        return left[keep], margin[keep], None if scores is None else scores[keep]

    def _dead_gradients(self, s: Search, left: torch.Tensor, x_at: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Per survivor: APGD-CE left it ``flat`` and the model's Jacobian is exactly zero at its APGD-CE point
        ``x_at`` (the input gradient of a random projection of the outputs is 0: quantized or shattered inputs).

        APGD-T and FAB-T follow the same Jacobian, so they cannot move such an example. The projection is
        drawn from ``self.seed`` (the call's stream is untouched); a softmax's outputs sum to 1, so a fixed
        projection could be blind. Costs one gradient evaluation per flat survivor.
        """
        dead = torch.zeros(len(left), dtype=torch.bool, device=left.device)
        probe = flat.nonzero().squeeze(1)
        if len(probe) == 0:
            return dead
        g = torch.Generator(device=s.generator.device).manual_seed(self.seed)
        for part in batches(len(probe), s.options.get("batch_size")):
            with torch.enable_grad():
                xr = x_at[probe[part]].detach().requires_grad_(True)
                outputs = predict(s.model, xr)
                projection = torch.randn(outputs.shape, generator=g, device=s.generator.device).to(outputs)
                (grad,) = torch.autograd.grad((outputs * projection).sum(), xr)
            dead[probe[part]] = grad.flatten(1).abs().amax(dim=1) == 0
        s.cost.add(s.rows[left[probe]], grad_evals=1)
        return dead

    def _sample_size(self, survivors: int) -> int:
        return min(survivors, max(self.min_sample, math.ceil(self.sample * survivors)))

    def _target_scores(self, s: Search, left: torch.Tensor, x_ce: torch.Tensor, log: "_Log") -> torch.Tensor:
        """The scores that rank APGD-T's and FAB-T's targets for the examples ``left`` (module docstring)."""
        rows = s.rows[left]
        if self.target_score == "adversarial":
            logits = predict(s.model, x_ce)
            s.cost.add(rows, forwards=1)
            return logits.float()
        scores = torch.cat([malt_scores(s.model, s.x[left[part]], s.y[left[part]], self.threat)
                            for part in batches(len(left), s.options.get("batch_size"))])
        s.cost.add(rows, grad_evals=log.classes)
        return scores


class _Log:
    """The stages' bookkeeping for one call: runs them, keeps their points and records every decision."""

    def __init__(self, s: Search) -> None:
        self.s = s
        n = len(s.x)
        self.outcome = {name: torch.full((n,), NOT_RUN, dtype=torch.int8, device=s.x.device) for name in STAGES}
        self.broken_by = torch.full((n,), -1, dtype=torch.int8, device=s.x.device)
        self.stages: list[dict[str, Any]] = [
            {"name": name, "attacked": 0, "broken": 0, "grad_evals": 0, "forwards": 0, "seconds": 0.0} for name in STAGES
        ]
        # two forward passes on (up to 32 of) the same inputs: a model that answers twice differently is random
        k = min(n, 32)
        with torch.no_grad():
            a, b = predict(s.model, s.x[:k]), predict(s.model, s.x[:k])
        s.cost.add(s.rows[:k], forwards=2)
        self.classes = a.shape[1]
        self.randomized = output_change(a, b)[1]

    def run(self, i: int, attack: Attack, idx: torch.Tensor, first: bool = False, again: bool = False,
            **options: Any) -> AttackResult:
        """Run stage ``i`` on the examples ``idx`` (positions in s); offer its points and record its outcomes.

        ``again``: the stage has attacked these examples before (they count once in ``attacked``).
        """
        s = self.s
        t0 = time.perf_counter()
        if s.options.get("on_stage") is not None:
            s.options["on_stage"](f"{STAGES[i]}{' (more targets)' if again else ''} on {len(idx)} of {len(s.x)}")
        targets = None if s.success_target is None else s.success_target[idx]
        options = {k: v for k, v in options.items() if v is not None}
        res = self._attack_and_confirm(attack, idx, targets, options)
        if self.randomized and getattr(attack, "early_exit", False):
            # left as broken under the mean of the EOT draws, yet not wrong in most fresh draws: the whole budget
            doubt = (res.notes["stop"] == STOP_BROKEN) & ~res.success
            if bool(doubt.any()):
                where = doubt.nonzero().squeeze(1)
                sliced = {k: v[where] if isinstance(v, torch.Tensor) else v for k, v in options.items()}  # per example
                again_res = self._attack_and_confirm(dataclasses.replace(attack, early_exit=False), idx[where],
                                                     None if targets is None else targets[where], sliced)
                res = _merge(res, where, again_res)
        # the first stage's points stand for every example; later stages replace them only where they succeed
        keep = torch.ones_like(res.success) if first else res.success
        s.offer(res.x_adv[keep], res.success[keep], torch.zeros(int(keep.sum()), device=s.x.device), idx[keep])
        stop = res.notes.get("stop")
        outcome = torch.full_like(res.success, BUDGET, dtype=torch.int8)
        if stop is not None:
            outcome[stop == STOP_STALLED] = STALLED
        outcome[res.success] = BROKEN
        self.outcome[STAGES[i]][idx] = outcome
        self.broken_by[idx[res.success]] = i + 1
        st = self.stages[i]
        st["attacked"] += 0 if again else len(idx)
        st["broken"] += int(res.success.sum())
        st["grad_evals"] += res.grad_evals
        st["forwards"] += res.forwards
        st["seconds"] += time.perf_counter() - t0
        return res

    def _attack_and_confirm(self, attack: Attack, idx: torch.Tensor, targets: torch.Tensor | None,
                            options: dict[str, Any]) -> AttackResult:
        """``attack`` on the examples ``idx`` (its passes counted); a success counts if fresh forward passes
        (other rounding, other draws) confirm it: one, or on a random model ``RANDOM_CONFIRM_SHARE`` of
        ``RANDOM_CONFIRM_DRAWS`` (a point fooled in barely most draws is a coin toss for ``evaluate``'s judge)."""
        s = self.s
        res = _concat([attack.run(s.model, s.x[idx[part]], s.y[idx[part]], generator=s.generator,
                                  targets=None if targets is None else targets[part],
                                  **{k: v[part] if isinstance(v, torch.Tensor) else v for k, v in options.items()})
                       for part in batches(len(idx), s.options.get("batch_size"))])
        rows = s.rows[idx]
        s.cost.add(rows, grad_evals=res.grad_evals_per_example, forwards=res.forwards_per_example)
        if bool(res.success.any()):
            hit = res.success.nonzero().squeeze(1)
            draws = RANDOM_CONFIRM_DRAWS if self.randomized else 1
            aim = None if targets is None else targets[hit]
            share = success_share(s.model, res.x_adv[hit], lambda z: success_of(z, s.y[idx[hit]], aim), draws)
            confirmed = share >= RANDOM_CONFIRM_SHARE if self.randomized else share > 0.5
            s.cost.add(rows[hit], forwards=draws)
            success = res.success.clone()
            success[hit] = confirmed
            res = dataclasses.replace(res, success=success)
        return res

    def black_box_first(self, attack: Attack, idx: torch.Tensor) -> None:
        """Square (``attack``) on the examples ``idx`` before the gradient stages, which skip them: APGD-CE
        found them flat and their gradients are exactly zero (``AdaptiveAutoAttack._dead_gradients``)."""
        res = self.run(3, attack, idx)
        for name in STAGES[1:3]:
            self.outcome[name][idx] = SKIPPED
        st = self.stages[3]
        st.setdefault("passes", []).append({"how": "dead gradients", "examples": len(idx),
                                            "broken": int(res.success.sum())})
        st["why"] = (f"dead gradients: {len(idx)} survivors were flat under APGD-CE and the model's Jacobian is "
                     f"exactly zero at their APGD-CE points: Square ran on them first, with its whole budget, "
                     f"and APGD-T and FAB-T skipped them")

    def by_evidence(self, i: int, attack: Attack, left: torch.Tensor, margin: torch.Tensor,
                    scores: torch.Tensor | None, m: int, masked: str | None):
        """Stage ``i`` on the survivors ``left`` where it can still add something, in passes.

        With ``masked`` (the evidence that the gradients are masked, or that the model is random)
        on all of them at once.
        Otherwise first on ``m`` of them: half the closest to flipping (highest best ``margin``
        of the gradient stages), half drawn at random from the others, in one call. If the random half broke
        one, on all the others; if only the closest did, on the next ``m`` closest, and so on
        while a pass breaks one; if the first pass broke none, nowhere else.

        Returns:
            The survivors still unbroken, with their margins and scores.
        """
        s, st = self.s, self.stages[i]
        earlier = st.pop("why", None)  # a pass before the gradient stages (``black_box_first``)
        st.setdefault("passes", [])
        broken = torch.zeros(len(left), dtype=torch.bool, device=left.device)
        done = torch.zeros_like(broken)

        def attack_on(sel: torch.Tensor, how: str) -> int:
            res = self.run(i, attack, left[sel], target_scores=None if scores is None else scores[sel])
            broken[sel[res.success]] = True
            done[sel] = True
            st["passes"].append({"how": how, "examples": len(sel), "broken": int(res.success.sum())})
            return int(res.success.sum())

        everyone = torch.arange(len(left), device=left.device)
        if masked is not None:
            attack_on(everyone, "all")
            st["why"] = f"all {len(left)} survivors at once: {masked}"
        else:
            order = margin.argsort(descending=True, stable=True)  # closest to flipping first (NaN last)
            close, rest = order[: m - m // 2], order[m - m // 2 :]
            drawn = rest[torch.randperm(len(rest), generator=s.generator, device=s.generator.device)[: m // 2].to(rest.device)]
            # both halves in one call: on a few examples a pass costs per step, not per example
            attack_on(torch.cat([close, drawn]).sort().values, "closest and random")
            by_margin, at_random = int(broken[close].sum()), int(broken[drawn].sum())
            first = f"the {len(close)} closest to flipping broke {by_margin}, {len(drawn)} at random {at_random}"
            if at_random:
                others = (~done).nonzero().squeeze(1)
                if len(others):
                    attack_on(others, "all others")
                st["why"] = f"{first}: ran on the other {len(others)}"
            elif by_margin:
                ran = 0
                while True:  # the next closest, while a pass breaks one
                    nxt = order[~done[order]][:m]
                    if len(nxt) == 0 or not attack_on(nxt.sort().values, "next closest"):
                        ran += len(nxt)
                        break
                    ran += len(nxt)
                skipped = int((~done).sum())
                st["why"] = f"{first}: ran on {ran} more in order of margin, until a pass broke none; skipped {skipped}"
            else:
                st["why"] = f"{first}: skipped the other {int((~done).sum())}"
        self.outcome[STAGES[i]][left[~done]] = SKIPPED
        if earlier:
            st["why"] = f"{earlier}; then the others: {st['why']}"
        keep = ~broken
        return left[keep], margin[keep], None if scores is None else scores[keep]

    def close(self) -> None:
        """Write the per-example notes and the summary of the call into ``s.cost``."""
        s = self.s
        for name, outcome in self.outcome.items():
            s.cost.note(name, s.rows, outcome, fill=NOT_RUN)
        s.cost.note("broken_by", s.rows, self.broken_by, fill=-1)
        s.cost.summary = {"stages": self.stages, "outcomes": list(OUTCOMES), "broken_by": list(BROKEN_BY)}


def _concat(results: list[AttackResult]) -> AttackResult:
    """One result for the consecutive batches of one stage call (per-example notes kept where all have them)."""
    if len(results) == 1:
        return results[0]
    per_example = [r.grad_evals_per_example for r in results], [r.forwards_per_example for r in results]
    grads, fwds = (None if any(t is None for t in ts) else torch.cat(ts) for ts in per_example)
    keys = [k for k in results[0].notes if all(k in r.notes for r in results)]
    return AttackResult(torch.cat([r.x_adv for r in results]), torch.cat([r.success for r in results]),
                        grad_evals=sum(r.grad_evals for r in results), forwards=sum(r.forwards for r in results),
                        grad_evals_per_example=grads, forwards_per_example=fwds,
                        notes={k: torch.cat([r.notes[k] for r in results]) for k in keys})


def _merge(res: AttackResult, where: torch.Tensor, again: AttackResult) -> AttackResult:
    """``res`` with the rerun ``again`` on the examples at ``where``: its points (the whole budget pushes past
    the boundary where an early exit stopped on it) and the passes of both."""
    x_adv, success = res.x_adv.clone(), res.success.clone()
    x_adv[where], success[where] = again.x_adv, again.success
    grads, fwds = res.grad_evals_per_example.clone(), res.forwards_per_example.clone()
    grads[where] += again.grad_evals_per_example
    fwds[where] += again.forwards_per_example
    notes = dict(res.notes)
    notes["stop"] = notes["stop"].clone()
    notes["stop"][where] = torch.where(again.success, STOP_BROKEN, STOP_BUDGET).to(notes["stop"].dtype)
    return dataclasses.replace(res, x_adv=x_adv, success=success, grad_evals=res.grad_evals + again.grad_evals,
                               forwards=res.forwards + again.forwards, grad_evals_per_example=grads,
                               forwards_per_example=fwds, notes=notes)
