"""Evaluation: the cascade, the suites of attacks, and (later) audit, sweep and report."""

from robustopt.evaluation import suites
from robustopt.evaluation.evaluate import Evaluation, Row, evaluate, row_key

__all__ = ["evaluate", "Evaluation", "Row", "row_key", "suites"]
