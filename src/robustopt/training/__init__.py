"""Adversarial training (Madry et al. 2018, Sec. 4): the ``fit`` loop and the training methods.

    import robustopt as ro
    res = ro.training.fit(model, (x, y), method="pgd", eps=0.3, epochs=90, out="runs/a")
    res.history[-1]["val_robust_acc"]

Methods ("natural", "pgd", "fgsm-rs") live in the registry ``METHODS``; add one with
``@register_method("name")`` (see :mod:`robustopt.training.methods`).
"""

from robustopt.training.fit import CHECKPOINT_NAME, TrainConfig, TrainResult, fit
from robustopt.training.methods import METHODS, Crafted, get_method, register_method

__all__ = ["fit", "TrainConfig", "TrainResult", "CHECKPOINT_NAME", "METHODS", "Crafted", "get_method", "register_method"]
