"""Constructed defenses (robustopt.models.defenses): each wrapper does what it says to the base model."""

from __future__ import annotations

import pytest
import torch

from robustopt.models import defenses
from robustopt.models.defenses import GaussianNoise, JPEGLike, Quantize, Saturate, Softmax, wrap


@pytest.fixture
def base():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 10)).eval()


@pytest.fixture
def x():
    return torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def _input_grad(model, x):
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(x).logsumexp(dim=1).sum(), x)
    return grad


def test_quantization_gives_one_output_per_bin_and_no_gradient(base, x):
    model = Quantize(base, levels=4)  # bins of width 1/3 centred on 0, 1/3, 2/3, 1
    centre = torch.round(x * 3) / 3
    inside = (centre + 0.16 * (2 * torch.rand_like(x) - 1)).clamp(0, 1)  # the same bins
    assert torch.equal(model(x), model(inside))
    assert torch.equal(model(x), base(centre))
    assert torch.count_nonzero(_input_grad(model, x)) == 0


def test_jpeg_like_compression_keeps_the_image_and_shatters_the_gradient(base, x):
    model = JPEGLike(base, quality_step=0.1)
    compressed = model.compress(x)
    assert compressed.shape == x.shape and compressed.min() >= 0 and compressed.max() <= 1
    smooth = torch.nn.functional.interpolate(x[:, :, :4, :4], size=(16, 16), mode="bilinear")  # images, not noise
    assert (model.compress(smooth) - smooth).abs().mean() < 0.05
    flat = torch.full((1, 1, 16, 16), 0.5)  # a constant block has only a DC coefficient, 4.0: a multiple of the step
    assert torch.allclose(model.compress(flat), flat, atol=1e-5)
    odd = torch.rand(2, 3, 28, 30)  # sizes that are not multiples of the block are padded and cropped
    assert model.compress(odd).shape == odd.shape
    assert torch.count_nonzero(_input_grad(model, x)) == 0


def test_saturated_logits_are_the_base_logits_times_the_scale(base, x):
    assert torch.allclose(Saturate(base)(x), 1000 * base(x))
    assert torch.allclose(Saturate(base, scale=5.0)(x), 5 * base(x))


def test_probabilities_sum_to_one_with_the_base_prediction(base, x):
    p = Softmax(base)(x)
    assert torch.allclose(p.sum(dim=1), torch.ones(len(x))) and (p >= 0).all()
    assert torch.equal(p.argmax(dim=1), base(x).argmax(dim=1))


def test_the_noisy_model_draws_fresh_noise_at_every_call(base, x):
    model = GaussianNoise(base, sigma=0.2)
    assert not torch.equal(model(x), model(x))
    seeded = [GaussianNoise(base, sigma=0.2, generator=torch.Generator().manual_seed(1))(x) for _ in range(2)]
    assert torch.equal(*seeded)
    assert torch.allclose(GaussianNoise(base, sigma=1e-9)(x), base(x), atol=1e-5)


def test_a_spec_rebuilds_its_defense_and_bad_specs_are_refused(base):
    for defense in (Quantize(base, levels=2), JPEGLike(base, 0.2), Saturate(base), GaussianNoise(base), Softmax(base)):
        rebuilt = wrap(base, defense.spec())
        assert type(rebuilt) is type(defense) and rebuilt.spec() == defense.spec() and rebuilt.model is base
    assert set(defenses.DEFENSES) == {"quantize", "jpeg", "saturate", "noise", "softmax"}
    with pytest.raises(ValueError, match="unknown defense kind 'blur'"):
        wrap(base, {"kind": "blur"})
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        wrap(base, {"kind": "quantize", "levels": 1})
    with pytest.raises(ValueError, match="bad parameters for the saturate defense"):
        wrap(base, {"kind": "saturate", "factor": 3})
    with pytest.raises(TypeError, match="wraps a torch.nn.Module"):
        Softmax("model")


def test_a_defense_keeps_the_base_config():
    from robustopt import models

    base = models.create("small-cnn")
    assert Quantize(base).config is base.config
