"""Threat models: the set S of allowed perturbations, and its geometry.

The modules: ``base`` (:class:`ThreatModel`, what every norm shares, and the registry
:data:`NORMS` of norm names) and ``lp`` (the l_inf, l_2 and l_1 balls: :class:`Linf`,
:class:`L2`, :class:`L1`, their steps and exact projections).

Each threat model is the intersection of an l_p ball of radius ``eps`` around
the clean input with the box ``bounds`` of valid pixel values. It provides the
two primitives every gradient attack needs (Madry et al. 2018, Sec. 2):

* ``step(grad)``: the steepest-ascent direction of unit norm,
  ``argmax_{||d||_p <= 1} <d, grad>``; an attack moves by ``step_size * step(grad)``.
* ``project(x_adv, x)``: the Euclidean projection onto ``S(x)``, the ball around
  ``x`` intersected with the box; ``projector(x)`` is the same map with what depends
  on ``x`` alone computed once, for an attack's iterates.

Result files store a threat model as ``to_dict()`` (``{"norm": "Linf", "eps": 0.3,
"bounds": [0.0, 1.0]}``); ``ThreatModel.from_dict`` reads it back. :data:`NORMS` is the one
table from norm names ("linf", "l2", "l1", any case) to classes (a
:class:`~robustopt._registry.Registry`; :func:`by_name` looks a name up in any case).

Example:
    >>> t = Linf(0.3)
    >>> x_adv = t.project(x + 0.5 * torch.randn_like(x), x)
    >>> ThreatModel.from_dict(t.to_dict()) == t
    True
"""

from robustopt.threat.base import (NORMS, ThreatModel, by_name, check_images, check_norm, names, random_signs,
                                   threat_from_name)
from robustopt.threat.lp import L1, L2, Linf

__all__ = ["ThreatModel", "Linf", "L2", "L1", "NORMS", "by_name", "names", "threat_from_name", "check_norm",
           "check_images", "random_signs"]
