"""Training augmentation: random crop of the zero-padded image and horizontal flip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustopt.training import TrainConfig, fit
from robustopt.training.augment import augment, crop_flip


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_crop_flip_equals_a_per_example_crop_of_the_padded_image():
    x = torch.rand(16, 3, 8, 8)
    out = crop_flip(x, _gen(1), padding=2)
    g = _gen(1)  # redraw the same offsets and flips
    dy, dx = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(16):
        want = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        torch.testing.assert_close(out[i], want.flip(-1) if flip[i] else want, rtol=0, atol=0)
    assert flip.any() and (~flip).any() and out.shape == x.shape and out.dtype == x.dtype


def test_crop_flip_without_padding_only_flips_and_is_deterministic():
    x = torch.rand(32, 1, 5, 5)
    out = crop_flip(x, _gen(3), padding=0)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | flipped).all() and flipped.any()
    torch.testing.assert_close(crop_flip(x, _gen(3)), crop_flip(x, _gen(3)), rtol=0, atol=0)


def test_augment_names():
    x = torch.rand(2, 1, 4, 4)
    assert augment("none", x, _gen()) is x
    with pytest.raises(ValueError, match="crop-flip"):
        augment("mixup", x, _gen())
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="mixup")


def test_fit_with_augmentation_trains_and_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(120, 1, 8, 8), torch.randint(0, 3, (120,))
    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    cfg = dict(method="natural", batch_size=40, lr=1e-2, augment="crop-flip", val_size=0)
    a = model()
    fit(a, (x, y), config=TrainConfig(epochs=2, **cfg), out=tmp_path / "a", progress=False)
    b = model()
    fit(b, (x, y), config=TrainConfig(epochs=1, **cfg), out=tmp_path / "b", progress=False)
    fit(b, (x, y), config=TrainConfig(epochs=2, **cfg), out=tmp_path / "b", resume=True, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    c = model()
    fit(c, (x, y), config=TrainConfig(epochs=2, **{**cfg, "augment": "none"}), progress=False)
    assert not torch.equal(a[1].weight, c[1].weight)  # the augmentation changed the training
