"""CIFAR-10 architectures: PreAct ResNet-18, WideResNet-34-10 and a CPU-sized ResNet-9.

All take ``(N, 3, 32, 32)`` images in [0, 1] (any spatial size works thanks to
global pooling) and return ``(N, num_classes)`` logits; the first child module is
:class:`~robustopt.models.layers.Normalize`. Every network class and factory takes
the keyword arguments of :func:`robustopt.models.create`: ``num_classes`` (number
of logits, default 10), ``in_channels`` (default 3), ``mean`` and ``std`` (the
normalization statistics, default CIFAR-10's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustopt.models.layers import Normalize
from robustopt.models.registry import register_model

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "PreActBlock",
    "PreActResNet",
    "WideBasicBlock",
    "WideResNet",
    "ResNet9",
    "preact_resnet18",
    "resnet9",
    "wrn_34_10",
]

CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2470, 0.2435, 0.2616)

Stats = float | Sequence[float]


def _init_weights(module: nn.Module) -> None:
    """He init for convs, unit BN, zero biases (as in the reference ResNets)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings").

    BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus identity, or a 1x1 projection of
    the pre-activated input when the shape changes.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first conv.
        dropout: Dropout probability between the two convs (0: none, as in PreAct ResNets).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + shortcut


class WideBasicBlock(PreActBlock):
    """Wide ResNet basic block (Zagoruyko & Komodakis 2016): the pre-activation block, with dropout.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first conv.
        dropout: Dropout probability between the two convs.
    """


class _PreActNet(nn.Module):
    """Normalize - conv3x3 stem - stages of pre-activation blocks - BN-ReLU - global average pool - fc.

    Stage i has ``depths[i]`` blocks of width ``widths[i]``; the first block of every stage
    after the first has stride 2. Weights: He init for convs, unit BN, zero biases.
    """

    def __init__(self, block: type[PreActBlock], stem: int, widths: Sequence[int], depths: Sequence[int],
                 dropout: float, num_classes: int, in_channels: int, mean: Stats, std: Stats) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std, in_channels)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_planes = stem
        for i, (planes, n) in enumerate(zip(widths, depths)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(block(in_planes, planes, stride, dropout))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)  # final BN-ReLU of the pre-activation design
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images in [0, 1] to ``(N, num_classes)`` logits."""
        out = self.conv1(self.normalize(x))
        out = F.relu(self.bn(self.layers(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class PreActResNet(_PreActNet):
    """Pre-activation ResNet for 32x32 inputs (He et al. 2016).

    Args:
        num_blocks: Blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes, in_channels, mean, std: see the module docstring.
        base_width: Channels of the first stage; stages use 1x, 2x, 4x, 8x.
    """

    def __init__(self, num_blocks: Sequence[int], *, num_classes: int = 10, in_channels: int = 3,
                 mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD, base_width: int = 64) -> None:
        if not isinstance(base_width, int) or base_width < 1:
            raise ValueError(f"base_width must be a positive int, got {base_width!r}")
        widths = [base_width * 2**i for i in range(len(num_blocks))]
        super().__init__(PreActBlock, base_width, widths, num_blocks, 0.0, num_classes, in_channels, mean, std)


class WideResNet(_PreActNet):
    """WideResNet-depth-k (Zagoruyko & Komodakis 2016), as in Madry's CIFAR model.

    Three stages of ``(depth - 4) / 6`` blocks with widths 16k, 32k, 64k after
    a 16-channel stem; WRN-34-10 has 46.2M parameters.

    Args:
        depth: Total depth; ``depth - 4`` must be divisible by 6.
        widen_factor: Width multiplier k.
        num_classes, in_channels, mean, std: see the module docstring.
        dropout: Dropout probability inside blocks.
    """

    def __init__(self, depth: int = 34, widen_factor: int = 10, *, num_classes: int = 10, in_channels: int = 3,
                 mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD, dropout: float = 0.0) -> None:
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth!r}"
            )
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ValueError(f"widen_factor must be a positive int, got {widen_factor!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        super().__init__(WideBasicBlock, 16, widths, [(depth - 4) // 6] * 3, dropout, num_classes, in_channels,
                         mean, std)


@register_model("preact-resnet18", image_size=(32, 32), dataset="cifar10")
def preact_resnet18(*, num_classes: int = 10, in_channels: int = 3, mean: Stats = CIFAR10_MEAN,
                    std: Stats = CIFAR10_STD, base_width: int = 64) -> PreActResNet:
    """PreAct ResNet-18 (He et al. 2016), stages 64-128-256-512, 11.2M parameters.

    Args:
        num_classes, in_channels, mean, std: see the module docstring.
        base_width: First-stage width (64 is the standard network; smaller
            values give cheap variants for tests).
    """
    return PreActResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                        base_width=base_width)


@register_model("wrn-34-10", image_size=(32, 32), dataset="cifar10")
def wrn_34_10(*, num_classes: int = 10, in_channels: int = 3, mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD,
              depth: int = 34, widen_factor: int = 10, dropout: float = 0.0) -> WideResNet:
    """WideResNet-34-10, the architecture of Madry et al.'s CIFAR-10 model.

    Args:
        num_classes, in_channels, mean, std: see the module docstring.
        depth: Network depth (6n + 4); change only for small test variants.
        widen_factor: Width multiplier.
        dropout: Dropout probability inside blocks.
    """
    return WideResNet(depth, widen_factor, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std,
                      dropout=dropout)


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    """conv3x3 - BN - ReLU, with a 2x2 max-pool (before the ReLU: the same function) if ``pool``."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """``x + f(x)`` with f two conv-BN-ReLU layers of the same width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """The DAWNBench ResNet-9 (Page 2018, "How to train your ResNet"), at any width.

    prep conv(w) - conv(2w)+pool + residual(2w) - conv(4w)+pool - conv(8w)+pool +
    residual(8w) - global max-pool - fc, the logits scaled by ``logit_scale``
    (0.125 in the original). Eight 3x3 convs plus the fc layer.

    Args:
        num_classes, in_channels, mean, std: see the module docstring.
        base_width: Width w of the prep layer (64 in the original network).
        logit_scale: Factor applied to the logits.
    """

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, mean: Stats = CIFAR10_MEAN,
                 std: Stats = CIFAR10_STD, base_width: int = 64, logit_scale: float = 0.125) -> None:
        super().__init__()
        if not isinstance(base_width, int) or base_width < 1:
            raise ValueError(f"base_width must be a positive int, got {base_width!r}")
        w = base_width
        self.normalize = Normalize(mean, std, in_channels)
        self.features = nn.Sequential(
            _conv_bn(in_channels, w),
            _conv_bn(w, 2 * w, pool=True),
            _Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True),
            _conv_bn(4 * w, 8 * w, pool=True),
            _Residual(8 * w),
        )
        self.fc = nn.Linear(8 * w, num_classes)
        self.logit_scale = float(logit_scale)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images in [0, 1] to ``(N, num_classes)`` logits."""
        out = self.features(self.normalize(x))
        out = F.adaptive_max_pool2d(out, 1).flatten(1)
        return self.fc(out) * self.logit_scale


@register_model("resnet9", image_size=(32, 32), dataset="cifar10")
def resnet9(*, num_classes: int = 10, in_channels: int = 3, mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD,
            base_width: int = 32, logit_scale: float = 0.125, channels_last: bool = True) -> ResNet9:
    """ResNet-9 at half the DAWNBench width (32-64-128-256, 1.64M parameters): robustopt's CPU CIFAR-10 network.

    A quarter of the original's (``base_width=64``) multiply-adds, and much cheaper per image
    gradient than preact-resnet18 on a CPU (costs in docs/models.md).

    Args:
        num_classes, in_channels, mean, std: see the module docstring.
        base_width: Width of the prep layer; the stages use 2x, 4x and 8x.
        logit_scale: Factor applied to the logits (0.125 as in the original).
        channels_last: store the conv weights channels-last (oneDNN's fast NHWC path on a
            CPU; outputs and state_dict are unaffected).
    """
    model = ResNet9(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, base_width=base_width,
                    logit_scale=logit_scale)
    return model.to(memory_format=torch.channels_last) if channels_last else model
