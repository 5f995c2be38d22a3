"""The pipelines: train into a run folder, evaluate and sweep a run, report on runs, the paper's experiment.

The CLI commands ``train``, ``eval``, ``sweep``, ``report``, ``reproduce`` and ``demo`` are thin
wrappers around these functions, one module per command, each with its presets beside it
(:mod:`~robustopt.experiments.train`: ``TRAIN_PRESETS``; :mod:`~robustopt.experiments.madry`:
``DEMO`` and ``REPRODUCE``). What a run folder holds, how a run is loaded and how results are
named and protected from silent replacement is :mod:`robustopt.runs`'s.
"""

from robustopt import data as datasets  # the data loader the pipelines call (tests replace datasets.load)
from robustopt.experiments.attack import eval_run, sweep_run
from robustopt.experiments.madry import DEMO, REPRODUCE, ExperimentPreset, reproduce, run_madry_experiment
from robustopt.experiments.report import AUDIT_SIZE, GALLERY_SIZE, GALLERY_STEPS, write_report
from robustopt.experiments.train import TRAIN_PRESETS, TrainPreset, train_run

__all__ = ["ExperimentPreset", "DEMO", "REPRODUCE", "TRAIN_PRESETS", "TrainPreset", "reproduce", "train_run",
           "eval_run", "sweep_run", "write_report", "run_madry_experiment", "AUDIT_SIZE", "GALLERY_SIZE",
           "GALLERY_STEPS"]
