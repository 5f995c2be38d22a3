"""robustopt: robust optimization of deep networks (Madry et al., ICLR 2018).

    import robustopt as ro
    t = ro.Linf(0.3)
    atk = ro.attacks.PGD(t, steps=40, step_size=0.01)
    ev = ro.evaluate(model, (x, y), ro.suites.madry(t), mode="independent")
"""

from robustopt import attacks, checkpoint, data, losses, models, runs, threat, training, zoo
from robustopt.evaluation import Evaluation, Finding, SweepCurve, audit, evaluate, findings_table, suites, sweep
from robustopt.threat import L1, L2, Linf, ThreatModel
from robustopt.runs import load_run
from robustopt.malloc import tune_malloc

__version__ = "0.1.0"
__all__ = [
    "attacks", "checkpoint", "data", "losses", "models", "runs", "threat", "training", "suites",
    "evaluate", "Evaluation", "audit", "Finding", "findings_table", "sweep", "SweepCurve", "Linf", "L2", "L1", "ThreatModel",
    "load_run", "tune_malloc", "zoo",
]
