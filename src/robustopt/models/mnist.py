"""MNIST architectures: the two networks of Madry et al. (2018) and a fast CNN.

All take ``(N, C, 28, 28)`` images in [0, 1] and return ``(N, num_classes)``
logits from an ``nn.Sequential`` whose first layer is
:class:`~robustopt.models.layers.Normalize`. Every factory takes the keyword
arguments of :func:`robustopt.models.create`: ``num_classes`` (default 10),
``in_channels`` (1), ``mean`` and ``std`` (MNIST's statistics), and
``channels_last`` (default True, below).

Two CPU speed-ups that leave the function unchanged:

* max-pooling is applied before the ReLU. ReLU is monotone, so
  ``relu(maxpool(x)) == maxpool(relu(x))`` exactly, and the ReLU touches 4x
  fewer values.
* conv weights are stored channels-last (``channels_last=True``), which sends
  oneDNN down its fast NHWC path (its NCHW max-pool is much slower). Outputs,
  state_dict keys and shapes are unaffected; pass ``channels_last=False`` if
  some code needs ``param.view(-1)`` on conv weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from robustopt.models.layers import Normalize
from robustopt.models.registry import register_model

__all__ = ["MNIST_MEAN", "MNIST_STD", "madry_mnist", "tramer_b", "small_cnn"]

MNIST_MEAN: tuple[float, ...] = (0.1307,)
MNIST_STD: tuple[float, ...] = (0.3081,)

Stats = float | Sequence[float]


def _finish(layers: OrderedDict[str, nn.Module], channels_last: bool) -> nn.Sequential:
    model = nn.Sequential(layers)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _two_conv(num_classes: int, in_channels: int, mean: Stats, std: Stats, channels_last: bool, *,
              widths: tuple[int, int], kernel: int, hidden: int) -> nn.Sequential:
    """conv kxk (same) - maxpool 2 - ReLU, twice, then fc - ReLU - fc: madry-mnist and small-cnn."""
    return _finish(
        OrderedDict(
            normalize=Normalize(mean, std, in_channels),
            conv1=nn.Conv2d(in_channels, widths[0], kernel, padding=kernel // 2),
            pool1=nn.MaxPool2d(2),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(widths[0], widths[1], kernel, padding=kernel // 2),
            pool2=nn.MaxPool2d(2),
            relu2=nn.ReLU(),
            flatten=nn.Flatten(),
            fc1=nn.Linear(7 * 7 * widths[1], hidden),
            relu3=nn.ReLU(),
            fc2=nn.Linear(hidden, num_classes),
        ),
        channels_last,
    )


@register_model("madry-mnist", image_size=(28, 28), dataset="mnist")
def madry_mnist(*, num_classes: int = 10, in_channels: int = 1, mean: Stats = MNIST_MEAN, std: Stats = MNIST_STD,
                channels_last: bool = True) -> nn.Sequential:
    """Model A of Madry et al. (2018), the MNIST challenge network.

    conv 5x5x32 (same) - ReLU - maxpool 2 - conv 5x5x64 (same) - ReLU -
    maxpool 2 - fc 3136->1024 - ReLU - fc 1024->num_classes (3.27M
    parameters). Pools run before their ReLU (same function, see above).
    The arguments are described in the module docstring.
    """
    return _two_conv(num_classes, in_channels, mean, std, channels_last, widths=(32, 64), kernel=5, hidden=1024)


@register_model("tramer-b", image_size=(28, 28), dataset="mnist")
def tramer_b(*, num_classes: int = 10, in_channels: int = 1, mean: Stats = MNIST_MEAN, std: Stats = MNIST_STD,
             channels_last: bool = True) -> nn.Sequential:
    """Model B of Madry et al. (2018) Table 1, from Tramer et al. (2017).

    dropout 0.2 - conv 8x8x64 stride 2 pad 3 (28->14) - ReLU - conv 6x6x128
    stride 2 valid (14->5) - ReLU - conv 5x5x128 valid (5->1) - ReLU -
    dropout 0.5 - fc 128->num_classes. Dropout is active only in train mode.
    The arguments are described in the module docstring.
    """
    return _finish(
        OrderedDict(
            normalize=Normalize(mean, std, in_channels),
            drop1=nn.Dropout(0.2),
            conv1=nn.Conv2d(in_channels, 64, 8, stride=2, padding=3),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(64, 128, 6, stride=2),
            relu2=nn.ReLU(),
            conv3=nn.Conv2d(128, 128, 5),
            relu3=nn.ReLU(),
            drop2=nn.Dropout(0.5),
            flatten=nn.Flatten(),
            fc=nn.Linear(128, num_classes),
        ),
        channels_last,
    )


@register_model("small-cnn", image_size=(28, 28), dataset="mnist")
def small_cnn(*, num_classes: int = 10, in_channels: int = 1, mean: Stats = MNIST_MEAN, std: Stats = MNIST_STD,
              channels_last: bool = True) -> nn.Sequential:
    """A small, fast MNIST CNN for demos and tests (163k parameters).

    conv 3x3x16 (pad 1) - ReLU - maxpool 2 - conv 3x3x32 (pad 1) - ReLU -
    maxpool 2 - fc 1568->100 - ReLU - fc 100->num_classes. Pools run before
    their ReLU (same function, see above). The arguments are described in the
    module docstring.
    """
    return _two_conv(num_classes, in_channels, mean, std, channels_last, widths=(16, 32), kernel=3, hidden=100)
