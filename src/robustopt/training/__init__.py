"""Adversarial training (Madry et al. 2018, Sec. 4): the ``fit`` loop and the training methods.

    import robustopt as ro
    res = ro.training.fit(model, (x, y), method="pgd", eps=0.3, epochs=90, out="runs/a")
    res.history[-1]["val_robust_acc"]

The modules: ``config`` (:class:`TrainConfig`, its checks and schedules), ``methods`` (the
contract of a method, what each weight update minimizes, and their registry), ``builtin_methods``
(the methods below), ``loop`` (:func:`fit`, read top to bottom) and ``state`` (checkpoints,
resume, RNG states, restore points). Methods ("natural", "pgd", "fgsm-rs", "n-fgsm", "trades",
"free") live in the registry ``METHODS``; add one with ``@register_method("name")``. A method
``method(ctx, x, y)`` gets a :class:`MethodContext` and a minibatch and yields :class:`Update` objects,
one optimizer step each (see :mod:`robustopt.training.methods`).
"""

from robustopt.training.methods import METHODS, Crafted, MethodContext, Update, get_method, register_method
from robustopt.training import builtin_methods  # noqa: F401  (registers the built-in methods)
from robustopt.training.config import TrainConfig
from robustopt.training.state import BEST_NAME, CHECKPOINT_NAME, CONFIG_NAME, LOG_NAME, PARTIAL_NAME
from robustopt.training.loop import TrainResult, fit

__all__ = ["fit", "TrainConfig", "TrainResult", "CHECKPOINT_NAME", "BEST_NAME", "PARTIAL_NAME", "CONFIG_NAME",
           "LOG_NAME", "METHODS", "Crafted", "MethodContext", "Update", "get_method", "register_method"]
