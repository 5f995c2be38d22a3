"""Batch norm folded into the convolution before it, for eval-mode passes (attacks).

In eval mode a ``BatchNorm2d`` after a convolution is a per-channel affine map with the running
statistics, ``bn(conv(x)) = conv_{w * s}(x) + (beta - mean * s + bias * s)`` with
``s = gamma / sqrt(var + eps)``: one convolution with scaled weights computes both, and the
forward and backward passes skip the batch-norm layer's pass over the activations. Training
attacks run the model in eval mode every step, with weights that change every step, so the fold
is recomputed from the live parameters and running statistics at each call (a per-channel
scaling of the weights, small next to the convolution itself).

Example:
    >>> fast = fold_batchnorm(model)          # shares model's parameters and buffers
    >>> with eval_mode(fast):
    ...     logits = fast(x)                  # model(x) in eval mode, up to float rounding
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["FoldedConvBN", "fold_batchnorm"]


class FoldedConvBN(nn.Module):
    """``bn(conv(x))`` as one convolution in eval mode; the two layers unchanged in train mode.

    Holds the original layers (shared, not copied), so the folded weights follow every update of
    the model. Differentiable with respect to the input and to every parameter.

    Args:
        conv: a ``Conv2d``.
        bn: the ``BatchNorm2d`` applied to its output, with ``num_features == conv.out_channels``.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"FoldedConvBN takes a Conv2d and a BatchNorm2d, got {type(conv).__name__} and "
                            f"{type(bn).__name__}.")
        if bn.num_features != conv.out_channels:
            raise ValueError(f"the BatchNorm2d has {bn.num_features} features but the Conv2d {conv.out_channels} "
                             "output channels; fold only a batch norm that follows its convolution.")
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.conv, self.bn
        if bn.training or bn.running_mean is None or bn.running_var is None:  # batch statistics: no fold
            return bn(conv(x))
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = bn.weight * scale
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        return conv._conv_forward(x, conv.weight * scale.reshape(-1, 1, 1, 1), shift)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A view of ``model`` in which every ``Conv2d`` directly followed by a ``BatchNorm2d`` is one layer.

    Pairs are found inside ``nn.Sequential`` containers (conv, then its batch norm, as in
    resnet9's conv-BN-ReLU blocks); everything else is kept as it is. The view shares the model's
    parameters and buffers and calls its ``forward`` methods, so it always computes the model's
    current function: in eval mode the folded convolution (equal up to float rounding), in train
    mode exactly the original layers. Use it in eval mode; training goes through ``model`` itself.

    Args:
        model: any module.

    Returns:
        ``model`` itself when it has no such pair, else a new module sharing its parameters.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batchnorm takes an nn.Module, got {type(model).__name__}.")
    return _fold(model)


def _fold(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.Sequential):
        layers, out, i = list(module), [], 0
        while i < len(layers):
            conv, bn = layers[i], layers[i + 1] if i + 1 < len(layers) else None
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d
                    and bn.num_features == conv.out_channels):
                out.append(FoldedConvBN(conv, bn))
                i += 2
            else:
                out.append(_fold(conv))
                i += 1
        if all(a is b for a, b in zip(out, layers)) and len(out) == len(layers):
            return module
        folded = nn.Sequential(*out)
        folded.training = module.training
        return folded
    children = {name: _fold(child) if child is not None else None for name, child in module._modules.items()}
    if all(children[name] is child for name, child in module._modules.items()):
        return module
    view = copy.copy(module)  # shares parameters, buffers and hooks; only the children differ
    view._modules = children
    return view
