"""Evaluation: the cascade, suites of attacks, the gradient-masking audit and epsilon sweeps."""

from robustopt.evaluation import card, report, suites
from robustopt.evaluation.audit import Finding, audit, findings_table
from robustopt.evaluation.evaluate import evaluate
from robustopt.evaluation.progress import ProgressFileError
from robustopt.evaluation.results import DrawAccuracy, Evaluation, Row, row_key
from robustopt.evaluation.sweep import SweepCurve, sweep

__all__ = ["evaluate", "Evaluation", "Row", "DrawAccuracy", "row_key", "ProgressFileError", "suites", "audit", "Finding",
           "findings_table", "sweep", "SweepCurve"]
