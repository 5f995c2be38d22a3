"""Audit a robustness claim for the signs of gradient masking and of a broken evaluation.

Gradient masking (Papernot et al. 2017; Athalye et al. 2018, "Obfuscated
Gradients Give a False Sense of Security") makes gradient attacks fail without
making the model robust. ``audit`` runs a registry of small checks, each a
function ``(AuditContext) -> list[Finding]`` registered with ``@register_check``:

* on the model, with cheap probes on at most ``probe`` (200) examples:
  ``randomized-output``, ``probability-output``, ``zero-gradient``, ``nonfinite``,
  ``shattered-gradient``, ``single-step-gap`` (FGSM against PGD-10: catastrophic overfitting);
* on an :class:`~robustopt.evaluation.Evaluation` (its rows):
  ``transfer-beats-whitebox``, ``gradient-free-beats-whitebox``, ``fgsm-beats-pgd``,
  ``more-steps-worse``; and on the stages of a cascade (its rows in cascade mode, or the
  stages a scheduled suite records, e.g. ``suites.standard(version="adaptive")``):
  ``ce-stage-weak``, ``black-box-breaks-survivors``;
* on a :class:`~robustopt.evaluation.sweep.SweepCurve`: ``non-monotone-eps``,
  ``no-collapse-at-large-eps``;
* on adversarial examples with their threat model: ``outside-threat``.

A check runs only when what it needs was passed. Levels: "error" means the
reported robustness is very likely wrong; "warning" means it is suspicious; "info"
is context that explains a pattern which looks odd but is expected.

Example:
    >>> findings = audit(model, (x, y), ev)
    >>> print(findings_table(findings))

The package, one module per job: ``findings`` (the result type and how findings read),
``context`` (the probes of the model), ``registry`` (``register_check``, ``CHECKS``), the checks
(``model_checks``, ``row_checks``, ``stage_checks``, ``sweep_checks``, with ``rows``: how they
read results) and ``run`` (``audit``, the entry point).
"""

from robustopt.evaluation.audit.context import AuditContext
from robustopt.evaluation.audit.findings import LEVELS, Finding, Level, findings_summary, findings_table
from robustopt.evaluation.audit.registry import CHECKS, Check, register_check

# the checks: importing a file registers them, in this order
from robustopt.evaluation.audit import model_checks, row_checks, stage_checks, sweep_checks  # noqa: F401

from robustopt.evaluation.audit.run import audit

__all__ = ["Finding", "Level", "LEVELS", "AuditContext", "Check", "audit", "findings_table", "findings_summary",
           "register_check", "CHECKS"]
