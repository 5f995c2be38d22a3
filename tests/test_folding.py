"""Tests of robustopt.models.folding: batch norm folded into the convolution before it (eval mode)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustopt as ro
from robustopt.attacks.passes import eval_mode
from robustopt.models.folding import FoldedConvBN, fold_batchnorm


class Block(nn.Module):
    """conv-BN-ReLU twice inside a Sequential, a residual sum, a head: the shapes of resnet9, tiny."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h + h.mean())


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = Block()
    with torch.no_grad():  # running statistics away from their initial 0 and 1
        for _ in range(3):
            model.train()(torch.rand(16, 2, 6, 6) * 3)
    return model


def _input_and_param_grads(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return loss, torch.autograd.grad(loss, [x, *params])


def test_folded_model_computes_the_same_loss_and_gradients_in_eval_mode():
    model = _model()
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, FoldedConvBN) for m in folded.modules()) == 2
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 2, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    params = list(model.parameters())
    with eval_mode(model), eval_mode(folded):
        loss, grads = _input_and_param_grads(model, params, x, y)
        folded_loss, folded_grads = _input_and_param_grads(folded, params, x, y)
    torch.testing.assert_close(folded_loss, loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(folded_grads, grads):  # the input gradient and every parameter's
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_folded_model_shares_the_parameters_and_is_the_model_itself_in_train_mode():
    model = _model()
    folded = fold_batchnorm(model)
    assert {id(p) for p in folded.parameters()} == {id(p) for p in model.parameters()}
    x = torch.rand(8, 2, 6, 6)
    stats = model.body[1].running_mean.clone()
    assert torch.equal(folded.train()(x), model.train()(x))  # batch statistics: no fold, the same layers
    assert not torch.equal(model.body[1].running_mean, stats)  # updated once per call, like the model
    with torch.no_grad():  # an update of the model is an update of the view
        model.body[0].weight.mul_(2.0)
    with eval_mode(model), eval_mode(folded), torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-6)
    assert folded.training and model.training  # eval_mode restored both


def test_resnet9_folds_every_conv_bn_pair():
    model = ro.models.create("resnet9", base_width=4)
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 32, 32))
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, FoldedConvBN) for m in folded.modules()) == 8
    assert not any(isinstance(m, nn.BatchNorm2d) and not isinstance(p, FoldedConvBN)
                   for p in folded.modules() for m in p.children())
    x = torch.rand(4, 3, 32, 32)
    with eval_mode(model), eval_mode(folded), torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_model_without_conv_bn_pairs_is_returned_as_it_is():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3), nn.ReLU())
    assert fold_batchnorm(model) is model
    with pytest.raises(TypeError, match="nn.Module"):
        fold_batchnorm(lambda x: x)
    with pytest.raises(ValueError, match="follows its convolution"):
        FoldedConvBN(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(4))
