"""Tests for robustopt.models: registry, Normalize and the architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustopt.models import (
    ModelConfig,
    Normalize,
    count_parameters,
    create,
    default_config,
    from_config,
    names,
    register_model,
)
from robustopt.models import registry as registry_module

# Full-size WRN-34-10 costs ~13 GFLOP for two images; the tiny variant keeps
# the parametrized tests fast while the full one is checked once below.
SMALL_KWARGS = {"wrn-34-10": {"depth": 10, "widen_factor": 1}, "preact-resnet18": {"base_width": 8}}


def test_names_lists_the_paper_models() -> None:
    assert {"madry-mnist", "tramer-b", "small-cnn", "preact-resnet18", "wrn-34-10"} <= set(names())
    assert names() == sorted(names())


@pytest.mark.parametrize("name", names())
def test_logits_shape_on_unit_box_inputs(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, **SMALL_KWARGS.get(name, {})).eval()
    cfg = model.config
    assert isinstance(cfg, ModelConfig) and cfg.name == name
    x = torch.rand(3, *cfg.input_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, cfg.num_classes)
    assert out.dtype == x.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("name", names())
def test_normalize_is_first_child_with_config_stats(name: str) -> None:
    model = create(name, **SMALL_KWARGS.get(name, {}))
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    assert first.mean.flatten().tolist() == pytest.approx(model.config.mean)
    assert first.std.flatten().tolist() == pytest.approx(model.config.std)
    # Exactly one Normalize: normalization is never applied twice.
    assert sum(isinstance(m, Normalize) for m in model.modules()) == 1


@pytest.mark.parametrize("name", names())
def test_num_classes_and_stats_kwargs(name: str) -> None:
    c = create(name, **SMALL_KWARGS.get(name, {})).config.in_channels
    model = create(name, num_classes=7, mean=[0.5] * c, std=0.25, **SMALL_KWARGS.get(name, {}))
    assert model.config.num_classes == 7
    assert model.config.mean == (0.5,) * c and model.config.std == (0.25,) * c
    with torch.no_grad():
        assert model.eval()(torch.rand(2, *model.config.input_size)).shape == (2, 7)


def test_default_stats() -> None:
    assert create("madry-mnist").config.mean == (0.1307,)
    assert create("small-cnn").config.std == (0.3081,)
    cfg = default_config("preact-resnet18")
    assert cfg.mean == (0.4914, 0.4822, 0.4465) and cfg.std == (0.2470, 0.2435, 0.2616)
    assert cfg.input_size == (3, 32, 32) and cfg.dataset == "cifar10"
    fashion = create("small-cnn", mean=0.2860, std=0.3530)
    assert fashion.config.mean == (0.2860,) and fashion.config.std == (0.3530,)


# ----------------------------------------------------------------------------- Normalize


def test_normalize_math() -> None:
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    norm = Normalize(mean, std)
    x = torch.rand(4, 3, 5, 6)
    expected = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(norm(x), expected)
    # The per-channel mean maps to 0 and mean + std to 1.
    m = torch.tensor(mean).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(norm(m), torch.zeros(1, 3, 2, 2))
    torch.testing.assert_close(norm(m + torch.tensor(std).view(1, 3, 1, 1)), torch.ones(1, 3, 2, 2))


def test_normalize_follows_input_dtype_and_is_in_state_dict() -> None:
    norm = Normalize(0.5, 0.5)
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    out = norm(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, 2 * x - 1)
    assert set(norm.state_dict()) == {"mean", "std"}


def test_normalize_passes_gradients() -> None:
    norm = Normalize((0.5,), (0.25,))
    x = torch.rand(1, 1, 2, 2, requires_grad=True)
    (g,) = torch.autograd.grad(norm(x).sum(), x)
    torch.testing.assert_close(g, torch.full_like(x, 4.0))


@pytest.mark.parametrize(
    "mean, std, channels, match",
    [
        ((0.5,), (0.0,), None, "std must be > 0"),
        ((0.5,), (-1.0,), None, "std must be > 0"),
        ((0.5, 0.5), (0.5,), None, "std has 1 value"),
        ((0.5,), (0.5,), 3, "mean has 1 value"),
        ((float("nan"),), (0.5,), None, "finite"),
    ],
)
def test_normalize_rejects_bad_stats(mean, std, channels, match) -> None:
    with pytest.raises(ValueError, match=match):
        Normalize(mean, std, channels)


def test_normalize_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        Normalize(0.5, 0.5)(torch.rand(2, 3, 4, 4))


# ----------------------------------------------------------------------------- registry errors


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(ValueError, match="(?i)did you mean 'madry-mnist'") as info:
        create("madry_mnist")
    assert "small-cnn" in str(info.value)  # lists the registered names
    with pytest.raises(ValueError, match="unknown model 'resnet-9000'"):
        create("resnet-9000")


def test_bad_kwargs_name_valid_ones() -> None:
    with pytest.raises(TypeError, match="num_class") as info:
        create("small-cnn", num_class=10)
    assert "num_classes" in str(info.value) and "in_channels" in str(info.value)
    with pytest.raises(TypeError, match="widen_factor"):
        create("madry-mnist", widen_factor=2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0},
        {"num_classes": 2.5},
        {"in_channels": 0},
        {"std": 0.0},
        {"mean": (0.1, 0.2)},
    ],
)
def test_bad_kwarg_values(kwargs) -> None:
    with pytest.raises(ValueError):
        create("small-cnn", **kwargs)


def test_bad_wrn_depth() -> None:
    with pytest.raises(ValueError, match="6n \\+ 4"):
        create("wrn-34-10", depth=12)


def test_register_custom_model() -> None:
    try:
        _register_and_create_linear_test()
    finally:
        registry_module.MODELS.unregister("linear-test")
    assert "linear-test" not in names()


def _register_and_create_linear_test() -> None:
    @register_model("linear-test", image_size=(4, 4))
    def linear_test(*, num_classes=3, in_channels=1, mean=0.0, std=1.0, bias=True):
        linear = nn.Linear(16 * in_channels, num_classes, bias=bias)
        return nn.Sequential(Normalize(mean, std, in_channels), nn.Flatten(), linear)

    assert "linear-test" in names()
    m = create("linear-test", bias=False)
    assert m.config.kwargs == {"bias": False} and m.config.input_size == (1, 4, 4)
    assert from_config(m.config.to_dict()).config == m.config
    with pytest.raises(ValueError, match="already registered"):
        register_model("linear-test", image_size=(4, 4))(linear_test)
    with pytest.raises(TypeError, match="must accept"):
        register_model("no-stats", image_size=(4, 4))(lambda *, num_classes=2: nn.Identity())


def test_config_roundtrip() -> None:
    cfg = create("wrn-34-10", depth=10, widen_factor=1).config
    assert cfg.kwargs == {"depth": 10, "widen_factor": 1, "dropout": 0.0}
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    rebuilt = from_config(cfg)
    assert rebuilt.config == cfg
    fresh = create("wrn-34-10", depth=10, widen_factor=1)
    assert count_parameters(rebuilt) == count_parameters(fresh)
    with pytest.raises(ValueError, match="missing fields"):
        ModelConfig.from_dict({"name": "small-cnn"})


# ----------------------------------------------------------------------------- architectures


def _shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape of every named child of an nn.Sequential."""
    out = {}
    for name, layer in model.named_children():
        x = layer(x)
        out[name] = tuple(x.shape)
    return out


def test_madry_mnist_architecture() -> None:
    model = create("madry-mnist").eval()
    shapes = _shapes(model, torch.rand(2, 1, 28, 28))
    assert shapes["conv1"] == (2, 32, 28, 28)  # 5x5 'same'
    assert shapes["pool1"] == (2, 32, 14, 14)
    assert shapes["conv2"] == (2, 64, 14, 14)
    assert shapes["pool2"] == (2, 64, 7, 7)
    assert shapes["fc1"] == (2, 1024) and shapes["fc2"] == (2, 10)
    assert model.conv1.kernel_size == (5, 5) and model.conv2.kernel_size == (5, 5)
    # (5*5*1+1)*32 + (5*5*32+1)*64 + (3136+1)*1024 + (1024+1)*10
    assert count_parameters(model) == 832 + 51264 + 3212288 + 10250


@pytest.mark.parametrize("name", ["madry-mnist", "small-cnn"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_mnist_models_compute_conv_relu_pool(name: str, channels_last: bool) -> None:
    """Pool-before-ReLU and channels-last storage leave the paper's function unchanged."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = create(name, channels_last=channels_last).double().eval()

    def reference(x: torch.Tensor) -> torch.Tensor:  # conv - ReLU - maxpool, NCHW
        h = (x - model.config.mean[0]) / model.config.std[0]
        for conv in (model.conv1, model.conv2):
            h = F.conv2d(h, conv.weight.contiguous(), conv.bias, padding=conv.padding)
            h = F.max_pool2d(F.relu(h), 2)
        return model.fc2(F.relu(model.fc1(h.flatten(1))))

    x = torch.rand(3, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    out, ref = model(x), reference(x)
    torch.testing.assert_close(out, ref)
    v = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * v).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * v).sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_tramer_b_valid_convs() -> None:
    model = create("tramer-b").eval()
    shapes = _shapes(model, torch.rand(2, 1, 28, 28))
    assert shapes["conv1"] == (2, 64, 14, 14)  # 8x8 stride 2, 'same'-like
    assert shapes["conv2"] == (2, 128, 5, 5)  # 6x6 stride 2, valid
    assert shapes["conv3"] == (2, 128, 1, 1)  # 5x5 valid
    assert shapes["fc"] == (2, 10)
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.2, 0.5]


def test_tramer_b_dropout_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = create("tramer-b")
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_small_cnn_size() -> None:
    model = create("small-cnn")
    # (9+1)*16 + (9*16+1)*32 + (1568+1)*100 + (100+1)*10
    assert count_parameters(model) == 160 + 4640 + 156900 + 1010 == 162710
    assert count_parameters(model, trainable_only=True) == 162710


def test_cifar_parameter_counts() -> None:
    assert count_parameters(create("preact-resnet18")) == 11_172_170
    wrn = create("wrn-34-10")
    assert count_parameters(wrn) == 46_160_474  # WRN-34-10 of Madry / TRADES
    with torch.no_grad():
        assert wrn.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_models_produce_input_gradients() -> None:
    model = create("small-cnn").eval()
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    (g,) = torch.autograd.grad(model(x).sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0
