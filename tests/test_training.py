"""Tests of robustopt.training: the fit loop, its methods, logging, checkpoints and resume.

Everything runs on tiny MLPs and a synthetic, linearly separable dataset, on CPU.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import robustopt as ro
from robustopt import _progress, checkpoint
from robustopt.training import METHODS, Crafted, MethodContext, TrainConfig, fit, get_method, register_method
from robustopt.training import builtin_methods, methods
from tiny_problem import separable

LOG_KEYS = {
    "epoch", "step", "train_loss", "train_acc", "val_clean_acc", "val_robust_acc",
    "lr", "eps", "seconds", "grad_evals",
}


def mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(36, 32), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(32, 2))


FAST = dict(batch_size=32, lr=1e-2, eps=0.1, attack_steps=3, attack_step_size=0.05, val_attack_steps=3, progress=False)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


# --- the loop -------------------------------------------------------------------------------


def test_natural_training_learns_separable_data():
    x, y = separable(400)
    model = mlp()
    res = fit(model, (x, y), method="natural", epochs=4, **FAST)
    assert len(res.history) == 4
    assert res.history[-1]["val_clean_acc"] >= 0.95
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.95
    # natural training spends one backward per example and epoch, nothing on attacks
    assert res.history[0]["grad_evals"] == 400 - 40


def robust_vs_shortcut(n: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes with a robust but noisy feature and a clean but non-robust one.

    Left half: +-0.2 with noise 0.3 per pixel (survives an l_inf eps=0.1 attack).
    Right half: +-0.08 without noise (perfectly predictive, but eps=0.1 flips it).
    A naturally trained model leans on the right half; PGD training cannot.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    sign = 2 * y.view(-1, 1, 1, 1).float() - 1
    x = torch.full((n, 1, 6, 6), 0.5)
    x[:, :, :, :3] += 0.2 * sign + 0.3 * torch.randn(n, 1, 6, 3, generator=g)
    x[:, :, :, 3:] += 0.08 * sign
    return x.clamp(0, 1), y


def test_pgd_training_buys_robustness_that_natural_training_lacks():
    x, y = robust_vs_shortcut()
    kw = dict(FAST, epochs=5, attack_steps=5, attack_step_size=0.04, val_attack_steps=10)
    nat = fit(mlp(), (x, y), method="natural", **kw).history[-1]
    adv = fit(mlp(), (x, y), method="pgd", **kw).history[-1]
    assert nat["val_clean_acc"] >= 0.9 and adv["val_clean_acc"] >= 0.9
    assert nat["val_robust_acc"] <= 0.45  # PGD-10 at eps=0.1 breaks the natural model
    assert adv["val_robust_acc"] >= 0.6
    assert adv["val_robust_acc"] - nat["val_robust_acc"] >= 0.25


def test_pgd_training_writes_log_checkpoint_and_config(tmp_path):
    x, y = separable(200)
    out = tmp_path / "run"
    model = mlp()
    res = fit(model, (x, y), method="pgd", epochs=2, out=out, **FAST)

    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for epoch, r in enumerate(records, start=1):
        assert set(r) == LOG_KEYS
        assert r["epoch"] == epoch
        assert r["step"] == epoch * 6  # 180 training examples / 32 per batch -> 6 steps
        assert 0 <= r["val_robust_acc"] <= r["val_clean_acc"] <= 1
        assert r["eps"] == 0.1 and r["lr"] == 1e-2
        # 3 attack steps + 1 weight-update backward per training example
        assert r["grad_evals"] == 180 * (3 + 1)
    assert records == res.history
    assert res.history[-1]["val_robust_acc"] >= 0.9  # separable with margin 0.3 > eps

    config = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert config == res.config and config.method == "pgd" and config.epochs == 2
    for name in ("model.safetensors", "model.json", "model.optim.pt"):
        assert (out / name).is_file()
    loaded, meta = checkpoint.load(out / "model", mlp(seed=1))
    assert_same_weights(loaded, model)
    assert meta["config"] == config.to_dict()
    assert meta["extra"]["epoch"] == 2 and meta["extra"]["metrics"] == records[-1]


def test_fgsm_rs_training_runs():
    x, y = separable(160)
    res = fit(mlp(), (x, y), method="fgsm-rs", epochs=2, **FAST)
    # one attack gradient + one weight-update backward per example
    assert res.history[-1]["grad_evals"] == 144 * 2
    assert res.history[-1]["val_robust_acc"] >= 0.8


def test_same_seed_same_weights_and_other_seed_differs():
    x, y = separable(160)
    runs = []
    for seed in (3, 3, 4):
        model = mlp(dropout=0.3)
        fit(model, (x, y), method="pgd", epochs=2, seed=seed, **FAST)
        runs.append(model)
    assert_same_weights(runs[0], runs[1])
    assert not torch.equal(runs[0][-1].weight, runs[2][-1].weight)


def test_resume_equals_uninterrupted_bit_for_bit(tmp_path):
    x, y = separable(160)
    kw = dict(method="pgd", seed=7, **FAST)
    full = mlp(dropout=0.3)
    res_full = fit(full, (x, y), epochs=3, out=tmp_path / "full", **kw)

    fit(mlp(dropout=0.3), (x, y), epochs=1, out=tmp_path / "cut", **kw)  # "interrupted" after epoch 1
    resumed = mlp(seed=99, dropout=0.3)  # different init: the checkpoint's weights must win
    res = fit(resumed, (x, y), epochs=3, out=tmp_path / "cut", resume=True, **kw)

    assert_same_weights(full, resumed)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(res.history) == strip(res_full.history)
    assert len((tmp_path / "cut" / "log.jsonl").read_text().splitlines()) == 3
    # resuming a finished run is a no-op
    again = fit(mlp(seed=5, dropout=0.3), (x, y), epochs=3, out=tmp_path / "cut", resume=True, **kw)
    assert_same_weights(full, again.model)


def test_resume_true_without_checkpoint_starts_fresh(tmp_path):
    x, y = separable(120)
    a, b = mlp(), mlp()
    fit(a, (x, y), method="natural", epochs=1, out=tmp_path / "a", resume=True, **FAST)
    fit(b, (x, y), method="natural", epochs=1, **FAST)
    assert_same_weights(a, b)


def test_existing_checkpoint_without_resume_raises(tmp_path):
    x, y = separable(120)
    fit(mlp(), (x, y), method="natural", epochs=1, out=tmp_path, **FAST)
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(mlp(seed=1), (x, y), method="natural", epochs=2, out=tmp_path, **FAST)
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_resume_with_different_config_or_data_raises(tmp_path):
    x, y = separable(120)
    fit(mlp(), (x, y), method="pgd", epochs=1, out=tmp_path, **FAST)
    model = mlp(seed=3)
    before = weights(model)
    with pytest.raises(ValueError, match="eps: checkpoint 0.1 vs requested 0.2"):
        fit(model, (x, y), method="pgd", epochs=2, out=tmp_path, resume=True, **{**FAST, "eps": 0.2})
    assert all(torch.equal(before[k], v) for k, v in weights(model).items())  # refused before loading
    with pytest.raises(ValueError, match="method"):
        fit(mlp(), (x, y), method="natural", epochs=2, out=tmp_path, resume=True, **FAST)
    with pytest.raises(ValueError, match="data"):
        fit(mlp(), (x.flip(0), y.flip(0)), method="pgd", epochs=2, out=tmp_path, resume=True, **FAST)
    with pytest.raises(ValueError, match="epochs"):
        fit(mlp(), (x, y), method="pgd", epochs=0, out=tmp_path, resume=True, **FAST)


def test_model_left_in_eval_mode_without_grads_and_frozen_params_untouched():
    x, y = separable(120)
    model = mlp(dropout=0.2)
    model[1].weight.requires_grad_(False)
    frozen = model[1].weight.detach().clone()
    fit(model, (x, y), method="pgd", epochs=1, **FAST)
    assert not any(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert not model[1].weight.requires_grad and model[1].bias.requires_grad
    assert torch.equal(model[1].weight, frozen)


def test_validation_split_is_the_end_of_the_data_and_never_trained_on():
    x, y = separable(100)
    x[-20:] = 1.0  # mark the last 20 examples
    seen: list[torch.Tensor] = []

    @register_method("spy-test")
    @methods.crafting_method
    def spy(ctx, xb, yb):
        seen.append(xb.clone())
        return Crafted(xb)

    try:
        res = fit(mlp(), (x, y), method="spy-test", epochs=2, val_size=20, **FAST)
    finally:
        METHODS.unregister("spy-test")
    batches = torch.cat(seen)
    assert len(batches) == 2 * 80
    assert not (batches == 1.0).flatten(1).all(1).any()
    assert res.history[-1]["val_clean_acc"] is not None


def test_eps_warmup_and_lr_schedules():
    x, y = separable(96)
    res = fit(mlp(), (x, y), method="pgd", epochs=3, eps_warmup_epochs=2, val_size=0, **FAST)
    assert [r["eps"] for r in res.history] == pytest.approx([0.05, 0.1, 0.1])
    assert res.history[0]["val_clean_acc"] is None and res.history[0]["val_robust_acc"] is None

    cfg = TrainConfig(lr=1.0, lr_schedule="cosine")
    assert cfg.lr_at(0, 100) == 1.0 and cfg.lr_at(50, 100) == pytest.approx(0.5)
    cfg = TrainConfig(lr=1.0, lr_schedule="step")
    assert [cfg.lr_at(s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_registry_model_checkpoint_loads_without_the_model(tmp_path):
    models = pytest.importorskip("robustopt.models")
    torch.manual_seed(0)
    model = models.create("small-cnn")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g)
    fit(model, (x, y), method="pgd", epochs=1, out=tmp_path, **{**FAST, "attack_steps": 1, "val_size": 8})
    rebuilt, meta = checkpoint.load(tmp_path / "model")  # architecture from the registry
    assert meta["model"]["name"] == "small-cnn"
    assert_same_weights(rebuilt, model)


def test_mnist_mini_smoke():
    data = pytest.importorskip("robustopt.data")
    try:
        x, y = data.load("mnist-mini", split="train")
    except (FileNotFoundError, ValueError) as err:  # the shipped subset is not there yet
        pytest.skip(f"mnist-mini unavailable: {err}")
    models = pytest.importorskip("robustopt.models")
    torch.manual_seed(0)
    n = min(len(x), 1000)
    res = fit(models.create("small-cnn"), (x[:n], y[:n]), method="natural", epochs=3, batch_size=50,
              lr=2e-3, val_size=n // 5, val_attack_steps=0, progress=False)
    assert res.history[-1]["val_clean_acc"] >= 0.75  # chance is 0.1; ~0.89 with 800 training digits


# --- methods: what they craft ------------------------------------------------------------------


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 2))


def test_pgd_method_reaches_the_optimal_linf_attack_of_a_linear_model():
    # For logits Wx + b with 2 classes, CE of the true class increases along
    # sign(w_other - w_true): the optimal l_inf attack is the corner x + eps * that sign.
    model = _linear()
    x = 0.3 + 0.4 * torch.rand(8, 1, 6, 6)  # far from the box bounds: no clipping
    y = torch.randint(0, 2, (8,))
    w = model[1].weight.detach()
    direction = (w[1 - y] - w[y]).sign().view_as(x)
    cfg = TrainConfig(eps=0.1, attack_steps=10, attack_step_size=0.05)
    batch = builtin_methods.pgd(MethodContext(model, threat=ro.Linf(0.1), config=cfg, generator=torch.Generator().manual_seed(0)),
                        x, y)
    assert torch.allclose(batch.x, x + 0.1 * direction, atol=1e-6)
    assert batch.grad_evals == 8 * 10


def test_fgsm_rs_is_one_step_of_1_25_eps_from_a_uniform_start():
    model = _linear()
    x = torch.rand(8, 1, 6, 6)
    y = torch.randint(0, 2, (8,))
    threat = ro.Linf(0.1)
    w = model[1].weight.detach()
    grad_sign = (w[1 - y] - w[y]).sign().view_as(x)
    start = threat.random_init(x, generator=torch.Generator().manual_seed(5))
    expected = threat.project(start + 1.25 * 0.1 * grad_sign, x)
    cfg = TrainConfig(method="fgsm-rs", eps=0.1)
    batch = builtin_methods.fgsm_rs(MethodContext(model, threat=threat, config=cfg, generator=torch.Generator().manual_seed(5)),
                            x, y)
    assert torch.allclose(batch.x, expected, atol=1e-6)
    assert threat.contains(batch.x, x).all()
    assert batch.grad_evals == 8


def test_natural_method_returns_the_clean_batch():
    x, y = separable(4)
    model = _linear()
    ctx = MethodContext(model, threat=ro.Linf(0.3), config=TrainConfig(), generator=torch.Generator())
    batch = builtin_methods.natural(ctx, x, y)
    assert batch.x is x and batch.grad_evals == 0
    (update,) = get_method("natural")(ctx, x, y)  # the method: one update, the batch's cross-entropy
    assert update.x is x and update.grad_evals == len(y)
    assert update.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(model(x), y).item())


# --- configuration and input errors --------------------------------------------------------


def test_config_round_trips_through_json():
    cfg = TrainConfig(method="fgsm-rs", eps=8 / 255, norm="l2", attack_step_size=None, lr_schedule="cosine")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(TypeError, match="valid ones"):
        TrainConfig.from_dict({"epsilon": 0.3})
    # config.json of runs made while TrainConfig had attack_mode, whose only accepted value was "eval"
    assert TrainConfig.from_dict({**cfg.to_dict(), "attack_mode": "eval"}) == cfg
    with pytest.raises(ValueError, match="eval mode"):
        TrainConfig.from_dict({"attack_mode": "train"})


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "trades-typo"}, ValueError, "unknown training method"),
        ({"eps": -0.1}, ValueError, "eps must be >= 0"),
        ({"epochs": 1.5}, TypeError, "epochs must be an int"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"norm": "linfinity"}, ValueError, "norm"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
        ({"attack_mode": "eval"}, TypeError, "valid ones are"),  # a removed field (only config.json has it)
        ({"lr": 0.0}, ValueError, "lr"),
        ({"attack_step_size": -1.0}, ValueError, "attack_step_size"),
        ({"epsilon": 0.3}, TypeError, "valid ones are"),
        ({"val_size": 120}, ValueError, "val_size"),
    ],
)
def test_bad_config_raises_clear_errors(kwargs, error, match):
    x, y = separable(120)
    with pytest.raises(error, match=match):
        fit(mlp(), (x, y), **{**FAST, "epochs": 1, **kwargs})


def test_bad_data_raises_clear_errors():
    x, y = separable(60)
    model = mlp()
    kw = dict(FAST, epochs=1, method="natural")
    with pytest.raises(ValueError, match="labels and inputs do not match"):
        fit(model, (x, y[:-1]), **kw)
    with pytest.raises(ValueError, match="outside the bounds"):
        fit(model, (x * 255, y), **kw)
    with pytest.raises(ValueError, match="NaN"):
        fit(model, (x.masked_fill(x > 0.9, float("nan")), y), **kw)
    with pytest.raises(TypeError, match="floating"):
        fit(model, ((x * 255).to(torch.uint8), y), **kw)
    with pytest.raises(TypeError, match="integer class indices"):
        fit(model, (x, y.float()), **kw)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        fit(model, (x, y + 1), **kw)  # class 2 for a 2-class model
    with pytest.raises(TypeError, match="pair"):
        fit(model, x, **kw)
    with pytest.raises(TypeError, match="nn.Module"):
        fit(lambda t: t, (x, y), **kw)
    with pytest.raises(ValueError, match="shape"):
        fit(model, (x[:, :, :5], y), **kw)  # 1x5x6 images for a 36-input model


# --- speed levers leave the results unchanged -----------------------------------------------------


def _bn_convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))


@pytest.mark.parametrize("method", ["n-fgsm", "pgd"])
def test_fold_bn_trains_the_same_model_up_to_float_rounding(method, monkeypatch):
    from robustopt.models.folding import FoldedConvBN

    folded_calls = []
    forward = FoldedConvBN.forward
    monkeypatch.setattr(FoldedConvBN, "forward", lambda self, x: folded_calls.append(self.bn.training) or forward(self, x))
    x, y = separable(160)
    runs = [fit(_bn_convnet(), (x, y), method=method, epochs=2, fold_bn=fold, **FAST) for fold in (False, True)]
    assert folded_calls and not any(folded_calls)  # the attacks ran through the fold, in eval mode only
    plain, folded = ([r["train_loss"] for r in res.history] for res in runs)
    assert folded == pytest.approx(plain, rel=1e-4)
    for k, w in weights(runs[0].model).items():
        torch.testing.assert_close(weights(runs[1].model)[k], w, rtol=1e-4, atol=1e-5)
    assert runs[1].config.fold_bn and not runs[1].model.training
    with pytest.raises(TypeError, match="fold_bn must be True or False"):
        TrainConfig(fold_bn="yes")


def test_weight_average_follows_the_warmed_up_decay():
    from robustopt.training.averaging import WeightAverage

    model = _bn_convnet()
    average = WeightAverage(model, decay=0.5)
    start = weights(model)
    expected = {k: v.clone() for k, v in start.items()}
    for n in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model[1].running_mean.add_(2.0)
        model[1].num_batches_tracked.add_(1)
        average.update(model)
        d = min(0.5, n / (n + 9))  # 0.1, 0.18, 0.25: the warm-up, below the decay
        for k, v in weights(model).items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v
    for k, v in expected.items():
        torch.testing.assert_close(average.model.state_dict()[k], v)
    assert average.updates == 3 and not average.model.training
    assert not any(p.requires_grad for p in average.model.parameters())
    assert weights(model)["1.num_batches_tracked"] == 3  # the trained model is not touched
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        WeightAverage(model, decay=1.0)


def test_ema_is_the_model_that_is_validated_saved_and_returned(tmp_path):
    from robustopt import checkpoint
    from robustopt.attacks.passes import predict

    x, y = separable(160)
    kw = dict(method="n-fgsm", epochs=3, optimizer="sgd", **FAST)
    plain = fit(_bn_convnet(), (x, y), **kw)
    res = fit(_bn_convnet(), (x, y), ema_decay=0.9, out=tmp_path / "run", **kw)
    # the same training trajectory (the average does not feed back), but the average is returned
    assert [r["train_loss"] for r in res.history] == [r["train_loss"] for r in plain.history]
    trained = {k[len("train/"):]: v for k, v in checkpoint.load_tensors(tmp_path / "run" / "model").items()}
    assert_same_weights_dict(trained, weights(plain.model))
    saved, _ = checkpoint.load(tmp_path / "run" / "model", _bn_convnet())
    assert_same_weights(saved, res.model)
    assert any(not torch.equal(v, trained[k]) for k, v in weights(res.model).items() if v.is_floating_point())
    # the log's validation accuracy is the average's
    x_val, y_val = x[-16:], y[-16:]
    with torch.no_grad():
        clean = (predict(res.model, x_val).argmax(1) == y_val).float().mean().item()
    assert res.history[-1]["val_clean_acc"] == pytest.approx(clean)
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        TrainConfig(ema_decay=1.5)


def assert_same_weights_dict(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_label_smoothing_smooths_the_update_loss_only():
    import torch.nn.functional as F
    from robustopt.training.methods import Crafted, cross_entropy_update

    model = _bn_convnet()
    x, y = separable(32)
    update = cross_entropy_update(model, Crafted(x), y, label_smoothing=0.2)
    torch.testing.assert_close(update.loss, F.cross_entropy(model(x), y, label_smoothing=0.2))
    runs = [fit(_bn_convnet(), separable(160), method="trades", epochs=1, label_smoothing=s, **FAST) for s in (0.0, 0.2)]
    assert runs[0].history[0]["train_loss"] != runs[1].history[0]["train_loss"]
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        TrainConfig(label_smoothing=1.0)


@pytest.mark.parametrize("kind", ["folder", "npz"])
def test_a_dataset_trains_streamed_to_the_same_weights_as_its_tensors(tmp_path, kind, monkeypatch):
    from own_data import image_folder, make_model, npz_file

    from robustopt.data import formats

    if kind == "folder":
        dataset = formats.ImageFolder(image_folder(tmp_path / "imgs", per_class=12))
    else:
        npz_file(tmp_path / "d.npz", n=48)
        dataset = formats.ArrayFile(tmp_path / "d.npz")
    x, y = formats.first(dataset)
    kw = dict(method="pgd", epochs=2, augment="crop-flip", val_size=8, out=None, **FAST)
    tensors = fit(make_model(), (x, y), **kw)
    reads = []
    read = type(dataset).__getitem__
    monkeypatch.setattr(type(dataset), "__getitem__", lambda self, i: reads.append(i) or read(self, i))
    stream = fit(make_model(), dataset, **kw)
    assert_same_weights(tensors.model, stream.model)
    assert stream.history == [{**r, "seconds": s["seconds"]} for r, s in zip(tensors.history, stream.history)]
    assert max(reads) == len(dataset) - 1 and len(reads) >= 2 * len(dataset)  # read item by item, every epoch
    with pytest.raises(TypeError, match="map-style dataset"):
        fit(make_model(), [x], **kw)


def test_a_streamed_image_outside_the_box_is_refused_when_read(tmp_path):
    from own_data import make_model

    class Bad(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return torch.full((3, 8, 8), 2.0 if i == 30 else 0.5), i % 4

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit(make_model(), Bad(), method="natural", epochs=1, val_size=4, **FAST)


# --- progress output -----------------------------------------------------------------------------


def test_natural_training_bar_shows_no_eps(capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTOPT_PROGRESS", "plain")
    monkeypatch.setattr(_progress, "PLAIN_EVERY", 0.0)  # a line at every step
    x, y = separable(120)
    for method, shows_eps in (("natural", False), ("pgd", True)):
        ro.training.fit(mlp(), (x, y), method=method, epochs=1, batch_size=25, attack_steps=2, eps=0.1, val_size=20,
                        log_every=1, progress=True)
        err = capsys.readouterr().err
        assert ("eps=" in err) == shows_eps, err
