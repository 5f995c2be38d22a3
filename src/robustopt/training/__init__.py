"""Adversarial training (Madry et al. 2018, Sec. 4): the ``fit`` loop and the training methods.

    import robustopt as ro
    res = ro.training.fit(model, (x, y), method="pgd", eps=0.3, epochs=90, out="runs/a")
    res.history[-1]["val_robust_acc"]

Methods ("natural", "pgd", "fgsm-rs", "trades", "free") live in the registry ``METHODS``;
add one with ``@register_method("name")``. A method returns a :class:`Crafted` batch, an
:class:`Update` (its own loss) or an iterator of Updates (see :mod:`robustopt.training.methods`).
"""

from robustopt.training.fit import BEST_NAME, CHECKPOINT_NAME, TrainConfig, TrainResult, fit
from robustopt.training.methods import METHODS, Crafted, Update, get_method, register_method

__all__ = ["fit", "TrainConfig", "TrainResult", "CHECKPOINT_NAME", "BEST_NAME", "METHODS", "Crafted", "Update",
           "get_method", "register_method"]
