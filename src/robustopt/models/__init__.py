"""Model zoo: a registry, the architectures of the paper, and the Normalize layer.

Every model maps ``(N, C, H, W)`` images in [0, 1] to ``(N, num_classes)``
logits and begins with :class:`Normalize`; none of the library requires the
registry, any such ``nn.Module`` works.

    import robustopt as ro
    ro.models.names()  # madry-mnist, preact-resnet18, small-cnn, tramer-b, wrn-34-10
    model = ro.models.create("madry-mnist")
    tiny = ro.models.create("wrn-34-10", depth=10, widen_factor=1)
    net = ro.models.wrap(my_model, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # [0, 1] in
"""

from robustopt.models import cifar, mnist  # noqa: F401  (registers the models)
from robustopt.models.layers import Normalize
from robustopt.models.registry import (ModelConfig, count_parameters, create, default_config, description,
                                       from_config, names, register_model)
from robustopt.models.specs import Wrapped, wrap
from robustopt.models.weights import load_weights

__all__ = ["Normalize", "ModelConfig", "register_model", "create", "from_config", "names", "default_config",
           "count_parameters", "description", "load_weights", "wrap", "Wrapped"]
