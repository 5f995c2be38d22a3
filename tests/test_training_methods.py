"""Tests of the training methods TRADES and Free, the generalized method interface, the
catastrophic-overfitting guard, early stopping, the new learning-rate schedules and AMP.

Tiny models (a linear classifier, a small MLP) on synthetic data, on CPU.
"""

from __future__ import annotations

import importlib
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import robustopt as ro
from robustopt import checkpoint
from robustopt.cli import main
from robustopt.training import METHODS, Crafted, MethodContext, TrainConfig, Update, fit, get_method, register_method
from robustopt.training import builtin_methods
from robustopt.training.config import guard_enabled
from robustopt.training.methods import crafting_method, cross_entropy_update, grad_evals_per_example, updates_per_batch
from tiny_problem import mlp, separable

loop_module = importlib.import_module("robustopt.training.loop")  # the module of fit()

FAST = dict(batch_size=32, lr=1e-2, eps=0.1, attack_steps=3, attack_step_size=0.05, val_attack_steps=3, progress=False)


def linear(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, classes))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def batch(n: int = 8, seed: int = 0, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, classes, (n,), generator=g)


# --- TRADES -------------------------------------------------------------------------------------


def test_trades_loss_is_ce_plus_beta_kl_and_x_adv_follows_the_official_attack():
    model, (x, y) = linear(), batch()
    eps, steps, alpha, beta = 0.1, 5, 0.03, 3.0
    cfg = TrainConfig(method="trades", eps=eps, attack_steps=steps, attack_step_size=alpha, beta=beta)
    (update,) = get_method("trades")(MethodContext(model, threat=ro.Linf(eps), config=cfg,
                                                   generator=torch.Generator().manual_seed(7)), x, y)
    assert isinstance(update, Update)

    # The inner maximization by hand, as in Zhang et al.'s code: start at x + 0.001 N(0, 1), ascend the KL
    # to the clean prediction with signed steps, clip to the ball and the box, keep the last iterate.
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    x_adv = torch.min(torch.max(x + 0.001 * noise, x - eps), x + eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        log_q = F.log_softmax(model(x_adv), dim=1)
        kl = (p * (p.log() - log_q)).sum()
        (g,) = torch.autograd.grad(kl, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(update.x, x_adv, atol=1e-6)
    assert ro.Linf(eps).contains(update.x, x).all()

    # The loss: CE on the clean batch + beta * KL(clean || adversarial), averaged over the batch.
    logits, logits_adv = model(x), model(update.x)
    p, log_p, log_q = F.softmax(logits, 1), F.log_softmax(logits, 1), F.log_softmax(logits_adv, 1)
    expected = F.cross_entropy(logits, y) + beta * (p * (log_p - log_q)).sum(1).mean()
    assert update.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(update.logits, logits_adv)  # training accuracy is measured on x_adv
    assert update.grad_evals == len(y) * (steps + 2)  # attack + backward through both forward passes
    # Both terms are differentiated (TRADES backpropagates through the clean prediction too).
    (g_lib,) = torch.autograd.grad(update.loss, model[1].weight)
    (g_hand,) = torch.autograd.grad(expected, model[1].weight)
    assert torch.allclose(g_lib, g_hand, atol=1e-6)


def test_trades_with_beta_zero_is_natural_cross_entropy():
    model, (x, y) = linear(), batch()
    cfg = TrainConfig(method="trades", eps=0.1, attack_steps=2, beta=0.0)
    (update,) = get_method("trades")(MethodContext(model, threat=ro.Linf(0.1), config=cfg,
                                                   generator=torch.Generator()), x, y)
    assert update.loss.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)


# --- Free -----------------------------------------------------------------------------------------


def test_free_replays_the_batch_and_steps_delta_with_the_update_gradient():
    model, (x, y) = linear(), batch()
    eps, m = 0.05, 3
    cfg = TrainConfig(method="free", eps=eps, replay=m)
    threat, state = ro.Linf(eps), {}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ctx = MethodContext(model, threat=threat, config=cfg, generator=torch.Generator(), state=state)
    updates = get_method("free")(ctx, x, y)
    delta = torch.zeros_like(x)  # Free starts from delta = 0
    count = 0
    for update in updates:  # what the fit loop does: backward, then one optimizer step, per replay
        count += 1
        assert torch.allclose(update.x, x + delta, atol=1e-7)
        assert update.loss.item() == pytest.approx(F.cross_entropy(model(x + delta), y).item(), rel=1e-6)
        assert update.grad_evals == len(y)
        # The input gradient of the mean CE of a linear model, by hand, at the weights before the step.
        with torch.no_grad():
            w = model[1].weight.clone()
            probs = F.softmax(model(x + delta), dim=1)
            g = ((probs - F.one_hot(y, 3)) @ w / len(y)).view_as(x)
        opt.zero_grad()
        update.loss.backward()
        opt.step()
        delta = (torch.min(torch.max(x + delta + eps * g.sign(), x - eps), x + eps).clamp(0, 1)) - x
    assert count == m == updates_per_batch("free", cfg)
    assert torch.allclose(state["delta"], delta, atol=1e-7)  # kept for the next minibatch

    # The next minibatch starts from the stored delta; a smaller one takes its first rows and keeps the rest.
    x2, y2 = batch(n=5, seed=1)
    stored = state["delta"].clone()
    first = next(get_method("free")(ctx, x2, y2))
    assert torch.allclose(first.x, threat.project(x2 + stored[:5], x2))
    # A larger batch pads with zeros.
    x3, y3 = batch(n=10, seed=2)
    gen = get_method("free")(ctx, x3, y3)
    first = next(gen)
    assert torch.equal(first.x[8:], x3[8:])
    assert torch.allclose(first.x[:5], threat.project(x3[:5] + stored[:5], x3[:5]))


def test_free_fit_counts_steps_and_grad_evals_and_resumes_exactly(tmp_path):
    x, y = separable(160)  # 144 training examples -> 5 batches of 32 (the last has 16)
    kw = dict(FAST, method="free", replay=3, seed=2, lr=5e-3)
    res = fit(mlp(), (x, y), epochs=2, **kw)
    assert [r["step"] for r in res.history] == [5 * 3, 2 * 5 * 3]  # one optimizer step per replay
    assert all(r["grad_evals"] == 144 * 3 for r in res.history)  # one backward per example and replay
    assert res.history[-1]["val_robust_acc"] >= 0.8

    # delta is part of the training state: a resumed run equals the uninterrupted one bit for bit.
    fit(mlp(), (x, y), epochs=1, out=tmp_path, **kw)
    assert set(checkpoint.load_tensors(tmp_path / "model")) == {"0/delta"}
    resumed = fit(mlp(seed=9), (x, y), epochs=2, out=tmp_path, resume=True, **kw)
    assert same(weights(resumed.model), weights(res.model))


def test_a_finish_method_trains_the_last_epochs(tmp_path):
    """N-FGSM with a PGD-2 finish: the first epochs are N-FGSM's, bit for bit; the last ones PGD's, at PGD's cost."""
    x, y = separable(160)  # 144 training examples
    kw = dict(FAST, method="n-fgsm", attack_steps=2, seed=2, epochs=3)
    finished = fit(mlp(), (x, y), finish_method="pgd", finish_epochs=2, **kw)
    assert [r["method"] for r in finished.history] == ["n-fgsm", "pgd", "pgd"]
    assert [r["grad_evals"] for r in finished.history] == [144 * 2, 144 * 3, 144 * 3]
    plain = fit(mlp(), (x, y), **kw)
    assert "method" not in plain.history[0]
    assert finished.history[0]["train_loss"] == plain.history[0]["train_loss"]
    assert finished.history[1]["train_loss"] != plain.history[1]["train_loss"]

    assert TrainConfig(method="n-fgsm", epochs=5, finish_method="pgd", finish_epochs=2).method_at(2) == "n-fgsm"
    for bad, match in (({"finish_method": "pgd"}, "go together"), ({"finish_epochs": 1}, "go together"),
                       ({"finish_method": "pgd", "finish_epochs": 6}, "more than epochs"),
                       ({"finish_method": "free", "finish_epochs": 1}, "updates per batch"),
                       ({"finish_method": "pdg", "finish_epochs": 1}, "pgd")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(method="n-fgsm", epochs=5, **bad)


def test_the_train_plan_counts_the_finish(tmp_path):
    from robustopt.experiments.train import _train_plan

    cfg = TrainConfig(method="n-fgsm", epochs=2, attack_steps=2, finish_method="pgd", finish_epochs=1, val_size=16)
    plan = _train_plan("mlp", "tiny", cfg, 160, tmp_path)
    assert "n-fgsm training of mlp on tiny" in plan and "its last 1 epoch pgd" in plan, plan
    assert "(1 x 144 x 2 + 1 x 144 x 3 for training" in plan, plan


# --- the generalized interface -------------------------------------------------------------------


def test_crafted_batches_become_one_cross_entropy_update():
    model, (x, y) = linear(), batch()
    method = crafting_method(lambda ctx, xb, yb: Crafted(xb, grad_evals=40))
    (update,) = list(method(MethodContext(model, threat=ro.Linf(0.1), config=TrainConfig(),
                                                   generator=torch.Generator()), x, y))
    assert model.training
    assert update.loss.item() == pytest.approx(F.cross_entropy(model(x), y).item())
    assert update.grad_evals == 40 + len(y) and update.x is x


@pytest.mark.parametrize("yielded, error, match", [
    (1, RuntimeError, "fewer than 2 updates"), (3, RuntimeError, "more than 2 updates"),
    ("loss", TypeError, "yielded Tensor; a method yields Update objects"),
])
def test_a_method_yielding_the_wrong_number_of_updates_is_an_error(yielded, error, match):
    steps = []

    @register_method("short-test", updates_per_batch=lambda cfg: 2)
    def short(ctx, x, y):
        for _ in range(1 if yielded == "loss" else yielded):
            loss = F.cross_entropy(ctx.forward(x), y)
            yield loss if yielded == "loss" else Update(loss, ctx.forward(x), len(y))
            steps.append(1)

    try:
        with pytest.raises(error, match=match):
            fit(mlp(), separable(64), method="short-test", epochs=1, **FAST)
    finally:
        METHODS.unregister("short-test")
    assert len(steps) == (0 if yielded == "loss" else min(yielded, 2))  # never a step on a third update


def test_the_loop_resumes_a_method_after_its_last_update_and_passes_one_context_per_epoch():
    seen = []

    @register_method("trace-test", updates_per_batch=lambda cfg: 2)
    def trace(ctx, x, y):
        for k in range(2):
            update = cross_entropy_update(ctx.forward, Crafted(x), y)
            yield update
            seen.append((k, ctx.model.training, ctx.threat.eps, "count" in ctx.state))
        ctx.state["count"] = ctx.state.get("count", torch.zeros(())) + 1

    try:
        res = fit(mlp(), separable(80), method="trace-test", epochs=2, eps_warmup_epochs=2, **FAST)
    finally:
        METHODS.unregister("trace-test")
    assert [r["step"] for r in res.history] == [6, 12]  # 3 batches, 2 updates each
    assert len(seen) == 12 and [k for k, *_ in seen] == [0, 1] * 6  # resumed after the second update too
    assert sorted({eps for *_, eps, _ in seen}) == [pytest.approx(0.05), pytest.approx(0.1)]  # the warm-up
    assert [has for *_, has in seen][2:] == [True] * 10  # the state dict lives across batches


@pytest.mark.parametrize(
    "method, per_example, steps_per_batch",
    [("natural", 1, 1), ("pgd", 3 + 1, 1), ("fgsm-rs", 1 + 1, 1), ("trades", 3 + 2, 1), ("free", 2, 2)],
)
def test_grad_evals_and_steps_per_method(method, per_example, steps_per_batch):
    x, y = separable(80)  # 72 training examples -> 3 batches
    res = fit(mlp(), (x, y), method=method, epochs=1, replay=2, **{**FAST, "val_attack_steps": 0})
    assert res.history[0]["grad_evals"] == 72 * per_example
    assert res.history[0]["step"] == 3 * steps_per_batch


def test_registered_costs_are_what_training_spends():
    x, y = separable(120)
    for method in METHODS:
        cfg = TrainConfig(method=method, epochs=1, batch_size=25, attack_steps=3, attack_step_size=0.05, eps=0.1,
                          val_size=20, lr=1e-2, replay=2)
        spent = ro.training.fit(mlp(), (x, y), config=cfg, progress=False).history[-1]["grad_evals"]
        assert spent == 100 * grad_evals_per_example(method, cfg), method


def test_fgsm_rs_results_do_not_depend_on_the_guard_when_nothing_collapses():
    x, y = separable(160)
    on = fit(mlp(), (x, y), method="fgsm-rs", epochs=2, **FAST)
    off = fit(mlp(), (x, y), method="fgsm-rs", epochs=2, guard=False, **FAST)
    assert same(weights(on.model), weights(off.model))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in on.history] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in off.history]
    assert guard_enabled(TrainConfig(method="fgsm-rs"), True)
    assert not guard_enabled(TrainConfig(method="pgd"), True)
    assert not guard_enabled(TrainConfig(method="fgsm-rs"), False)  # no validation: off, warned


# --- catastrophic-overfitting guard ----------------------------------------------------------------


@pytest.fixture
def wrecker():
    """A method that trains naturally but flips the model's output layer in epoch 3 (a constructed collapse)."""
    calls = {"n": 0}

    @register_method("wreck-test")
    @crafting_method
    def wreck(ctx, x, y):
        model = ctx.model
        calls["n"] += 1
        if calls["n"] == 3 * 5:  # the last batch of epoch 3 (5 batches per epoch): predictions turn around
            with torch.no_grad():
                for p in model[-1].parameters():
                    p.neg_()
        return Crafted(x)

    yield calls
    METHODS.unregister("wreck-test")


def _optim_state(path) -> dict:
    return torch.load(checkpoint.checkpoint_paths(path).optimizer, weights_only=True)


def test_guard_restores_the_last_good_epoch_exactly_and_stops(tmp_path, wrecker):
    x, y = separable(160)
    kw = dict(FAST, method="wreck-test", guard=True, optimizer="sgd")
    ref = fit(mlp(), (x, y), epochs=2, out=tmp_path / "ref", **kw)  # epochs 1-2 are the same in both runs
    wrecker["n"] = 0
    res = fit(mlp(), (x, y), epochs=4, out=tmp_path / "run", **kw)

    assert res.stopped == "catastrophic_overfitting" and len(res.history) == 3
    (event,) = res.history[2]["events"]
    assert event["type"] == "catastrophic_overfitting" and event["restored_epoch"] == 2
    assert event["val_robust_acc"] < event["best_val_robust_acc"] - 0.2
    assert same(weights(res.model), weights(ref.model))  # the last good weights, bit for bit
    ckpt_ref, ckpt = _optim_state(tmp_path / "ref" / "model"), _optim_state(tmp_path / "run" / "model")
    assert all(torch.equal(ckpt_ref["state"][k]["momentum_buffer"], ckpt["state"][k]["momentum_buffer"])
               for k in ckpt_ref["state"])  # and the optimizer state
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logged[2]["events"] == [event]
    loaded, meta = checkpoint.load(tmp_path / "run" / "model", mlp(seed=5))
    assert same(weights(loaded), weights(ref.model)) and meta["extra"]["stopped"] == "catastrophic_overfitting"
    # resuming a stopped run does nothing
    again = fit(mlp(seed=5), (x, y), epochs=4, out=tmp_path / "run", resume=True, **kw)
    assert len(again.history) == 3 and same(weights(again.model), weights(ref.model))


def test_guard_can_continue_from_the_restored_weights(wrecker):
    x, y = separable(160)
    kw = dict(FAST, method="wreck-test", guard=True, guard_action="continue")
    ref = fit(mlp(), (x, y), epochs=2, **kw)
    wrecker["n"] = 0
    res = fit(mlp(), (x, y), epochs=3, **kw)  # restored at the end of epoch 3: no step after that
    assert res.stopped is None and res.history[2]["events"][0]["action"] == "continue"
    assert same(weights(res.model), weights(ref.model))
    wrecker["n"] = 0
    longer = fit(mlp(), (x, y), epochs=4, **kw)
    assert len(longer.history) == 4 and "events" not in longer.history[3]
    assert longer.history[3]["val_clean_acc"] >= 0.9  # trained on from the good weights


# --- early stopping ----------------------------------------------------------------------------------


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path, monkeypatch):
    x, y = separable(160)
    kw = dict(FAST, method="natural", seed=1)
    ref = fit(mlp(), (x, y), epochs=2, **kw)  # the weights after epoch 2

    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])  # the validation robust accuracy of epochs 1, 2, ...
    monkeypatch.setattr(loop_module, "_validate", lambda *args: (1.0, next(scores)))
    res = fit(mlp(), (x, y), epochs=6, early_stopping_patience=2, out=tmp_path, **kw)

    assert res.stopped == "early_stopping" and len(res.history) == 4  # epochs 3 and 4 did not beat epoch 2
    assert res.history[3]["events"] == [{"type": "early_stopping", "best_epoch": 2, "best_val_robust_acc": 0.7,
                                         "patience": 2, "restored_epoch": 2}]
    assert same(weights(res.model), weights(ref.model))  # the best epoch's weights are restored
    best, meta = checkpoint.load(tmp_path / "best", mlp(seed=3))
    assert meta["extra"]["epoch"] == 2 and same(weights(best), weights(ref.model))
    again = fit(mlp(seed=4), (x, y), epochs=6, early_stopping_patience=2, out=tmp_path, resume=True, **kw)
    assert len(again.history) == 4  # a stopped run stays stopped


def test_early_stopping_resumes_with_its_best_epoch(tmp_path, monkeypatch):
    x, y = separable(120)
    kw = dict(FAST, method="natural", early_stopping_patience=2)
    values, epoch = [0.5, 0.8, 0.6, 0.7], [0]

    def validate(*args):
        epoch[0] += 1
        return 1.0, values[epoch[0] - 1]

    monkeypatch.setattr(loop_module, "_validate", validate)
    full = fit(mlp(), (x, y), epochs=4, **kw)
    epoch[0] = 0
    fit(mlp(), (x, y), epochs=3, out=tmp_path, **kw)  # interrupted after epoch 3 (best: epoch 2, in best.*)
    res = fit(mlp(seed=1), (x, y), epochs=4, out=tmp_path, resume=True, **kw)
    assert full.stopped == res.stopped == "early_stopping"
    assert same(weights(res.model), weights(full.model))


# --- learning-rate schedules ----------------------------------------------------------------------


def test_cyclic_and_piecewise_schedules():
    cfg = TrainConfig(lr=0.2, lr_schedule="cyclic")
    assert [cfg.lr_at(s, 100) for s in (0, 25, 50, 75, 99)] == pytest.approx([0, 0.1, 0.2, 0.1, 0.004])
    # default piecewise: the piecewise-linear one-cycle, 0 -> lr at 40% of the epochs -> 0
    cfg = TrainConfig(lr=1.0, lr_schedule="piecewise", epochs=10)
    assert [cfg.lr_at(s, 1000) for s in (0, 200, 400, 700, 1000)] == pytest.approx([0, 0.5, 1, 0.5, 0])
    # user milestones (epochs) and values (multipliers of lr); a repeated milestone is a jump
    cfg = TrainConfig(lr=0.1, lr_schedule="piecewise", epochs=200, lr_milestones=(0, 100, 100, 150, 150),
                      lr_values=(1, 1, 0.1, 0.1, 0.01))
    steps = [0, 99 * 10 + 9, 100 * 10, 149 * 10 + 9, 150 * 10, 1999]  # 10 steps per epoch
    assert [cfg.lr_at(s, 2000) for s in steps] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    cfg = TrainConfig(lr=1.0, lr_schedule="piecewise", epochs=4, lr_milestones=(1, 3), lr_values=(0.5, 1.5))
    assert [cfg.lr_at(s, 40) for s in (0, 10, 20, 30, 39)] == pytest.approx([0.5, 0.5, 1.0, 1.5, 1.5])


def test_schedules_count_every_replay_as_a_step():
    x, y = separable(80)  # 3 batches per epoch
    res = fit(mlp(), (x, y), method="free", replay=2, epochs=2, lr_schedule="cyclic", **FAST)
    cfg = res.config
    assert res.history[-1]["step"] == 12
    assert res.history[0]["lr"] == pytest.approx(cfg.lr_at(5, 12)) and res.history[-1]["lr"] == pytest.approx(
        cfg.lr_at(11, 12))


# --- AMP, configuration and CLI -----------------------------------------------------------------------


def test_amp_needs_cuda():
    x, y = separable(64)
    with pytest.raises(ValueError, match="amp=True needs a CUDA device"):
        fit(mlp(), (x, y), method="pgd", epochs=1, amp=True, device="cpu", **FAST)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["pgd", "trades", "free"])
def test_amp_trains_on_cuda(method):
    x, y = separable(400)
    res = fit(mlp(), (x, y), method=method, epochs=3, amp=True, device="cuda", **FAST)
    assert res.history[-1]["val_clean_acc"] >= 0.9
    assert next(res.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"beta": -1.0}, ValueError, "beta must be >= 0"),
        ({"replay": 0}, ValueError, "replay must be >= 1"),
        ({"lr_schedule": "triangle"}, ValueError, "lr_schedule must be one of"),
        ({"lr_schedule": "piecewise", "lr_milestones": (0, 5)}, ValueError, "go together"),
        ({"lr_schedule": "piecewise", "lr_milestones": (5, 0), "lr_values": (1, 0)}, ValueError, "non-decreasing"),
        ({"lr_schedule": "piecewise", "lr_milestones": (0, 5), "lr_values": (1,)}, ValueError, "same length"),
        ({"lr_milestones": (0, 5), "lr_values": (1, 0)}, ValueError, "only apply to lr_schedule='piecewise'"),
        ({"guard_drop": 0.0}, ValueError, "guard_drop"),
        ({"guard_action": "pause"}, ValueError, "guard_action"),
        ({"guard": "yes"}, TypeError, "guard must be True or False"),
        ({"amp": 1}, TypeError, "amp must be True or False"),
        ({"early_stopping_patience": -1}, ValueError, "early_stopping_patience"),
        ({"early_stopping_patience": 2, "val_size": 0}, ValueError, "early_stopping_patience > 0 needs"),
        ({"guard": True, "val_attack_steps": 0}, ValueError, "guard=True needs"),
    ],
)
def test_bad_config_raises_clear_errors(kwargs, error, match):
    x, y = separable(64)
    with pytest.raises(error, match=match):
        fit(mlp(), (x, y), **{**FAST, "epochs": 1, **kwargs})


def test_new_fields_round_trip_and_are_checked_on_resume(tmp_path):
    cfg = TrainConfig(method="trades", beta=3.0, lr_schedule="piecewise", lr_milestones=(0, 2), lr_values=(1, 0))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    x, y = separable(64)
    fit(mlp(), (x, y), method="trades", epochs=1, out=tmp_path, **FAST)
    with pytest.raises(ValueError, match="beta: checkpoint 6.0 vs requested 1.0"):
        fit(mlp(), (x, y), method="trades", epochs=2, beta=1.0, out=tmp_path, resume=True, **FAST)


def test_cli_train_with_the_new_options(tmp_path):
    out = tmp_path / "free"
    res = CliRunner().invoke(main, [
        "train", "--data", "mnist-mini", "--model", "small-cnn", "--train-size", "120", "--epochs", "1",
        "--batch-size", "60", "--method", "free", "--replay", "2", "--eps", "0.1", "--lr-schedule", "piecewise",
        "--lr-milestones", "0,0.5,1", "--lr-values", "0,1,0", "--early-stopping-patience", "1", "--no-guard",
        "--fold-bn", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] == "free" and cfg["replay"] == 2 and cfg["lr_milestones"] == [0, 0.5, 1]
    assert cfg["early_stopping_patience"] == 1 and cfg["guard"] is False and cfg["amp"] is False
    assert cfg["fold_bn"] is True
    assert (out / "best.json").is_file()
    res = CliRunner().invoke(main, ["train", "--data", "mnist-mini", "--beta", "-1", "--method", "trades",
                                    "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "beta must be >= 0" in res.output


# --- single-step methods: the engine's points without its scoring pass -------------------------------


def _bn_net(seed: int = 0) -> nn.Module:
    """A conv net with batch norm (eval and train mode differ), its running statistics warmed up."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    with torch.no_grad():
        model.train()(torch.rand(32, 1, 6, 6))
    return model.train()


@pytest.mark.parametrize("method", ["n-fgsm", "fgsm-rs"])
def test_single_step_methods_give_the_engine_points_with_one_forward_pass(method):
    import dataclasses

    from robustopt.attacks import GradientAttack

    model, (x, y), threat = _bn_net(), batch(16), ro.Linf(0.1)
    calls = []
    hook = model.register_forward_hook(lambda m, i, o: calls.append(m.training))
    craft = {"n-fgsm": builtin_methods.n_fgsm, "fgsm-rs": builtin_methods.fgsm_rs}[method]
    crafted = craft(MethodContext(model, threat=threat, config=TrainConfig(), generator=torch.Generator().manual_seed(3)),
                    x, y)
    hook.remove()
    assert calls == [False] and model.training  # one eval-mode pass; the mode is restored
    g = torch.Generator().manual_seed(3)  # the same draws through the attack engine (which also scores its point)
    if method == "n-fgsm":
        start = ro.Linf(0.2).random_init(x, g)
        engine = GradientAttack(dataclasses.replace(threat, eps=0.3), steps=1, step_size=0.1, random_start=False,
                                keep="last").run(model, x, y, generator=g, start=start)
    else:
        engine = GradientAttack(threat, steps=1, step_size=0.125, random_start=True).run(model, x, y, generator=g)
    assert torch.equal(crafted.x, engine.x_adv)
    assert crafted.grad_evals == engine.grad_evals == len(x)
