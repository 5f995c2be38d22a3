"""Per-example attack objectives: values checked by hand and by their invariances."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import robustopt as ro
from robustopt import losses

HYP = settings(max_examples=30, deadline=None, derandomize=True)

# All logits negative: masking the true class by multiplying with zero would make 0 the "best
# other logit" and give wrong margins here (the classic CW bug).
NEG = torch.tensor([[-5.0, -1.0, -3.0]])


def random_logits(seed: int, n: int = 8, classes: int = 10, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, classes, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    target = (y + torch.randint(1, classes, (n,), generator=g)) % classes
    return logits, y, target


# --- cross-entropy --------------------------------------------------------------------------
@HYP
@given(st.integers(0, 2**16))
def test_ce_is_per_example_cross_entropy(seed):
    logits, y, target = random_logits(seed)
    out = losses.ce(logits, y)
    assert out.shape == (8,) and out.dtype == torch.float64
    torch.testing.assert_close(out, F.cross_entropy(logits, y, reduction="none"))
    torch.testing.assert_close(losses.ce(logits, y, target), -F.cross_entropy(logits, target, reduction="none"))


def test_ce_hand_value():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    assert losses.ce(logits, torch.tensor([2])).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())


# --- CW margin ------------------------------------------------------------------------------
def test_cw_margin_with_all_logits_negative():
    # y = 1: z_y = -1, best other = -3, margin 2 -> loss -2 (a multiply-by-zero mask would give 0 - (-1) ...)
    assert losses.cw(NEG, torch.tensor([1])).item() == pytest.approx(-2.0)
    # y = 0: z_y = -5, best other = -1: already misclassified by 4 -> loss 0
    assert losses.cw(NEG, torch.tensor([0])).item() == 0.0
    # y = 2: z_y = -3, best other = -1 -> 0
    assert losses.cw(NEG, torch.tensor([2])).item() == 0.0
    # all-negative logits with the true class on top but a small margin
    logits = torch.tensor([[-10.0, -10.5, -30.0]])
    assert losses.cw(logits, torch.tensor([0])).item() == pytest.approx(-0.5)


def test_cw_kappa_caps_the_margin():
    y = torch.tensor([0])
    assert losses.cw(NEG, y, kappa=50.0).item() == pytest.approx(-46.0)  # -relu(-4 + 50)
    assert losses.cw(NEG, y, kappa=3.0).item() == 0.0  # -relu(-4 + 3): beaten by more than kappa
    assert losses.cw(NEG, torch.tensor([1]), kappa=50.0).item() == pytest.approx(-52.0)


def test_cw_targeted_hand_values():
    # target 2: -relu(max_{j != 2} z_j - z_2) = -relu(-1 - (-3)) = -2
    assert losses.cw(NEG, torch.tensor([0]), torch.tensor([2])).item() == pytest.approx(-2.0)
    # target 1 is already the top class by 2
    assert losses.cw(NEG, torch.tensor([0]), torch.tensor([1])).item() == 0.0
    assert losses.cw(NEG, torch.tensor([0]), torch.tensor([1]), kappa=5.0).item() == pytest.approx(-3.0)


@HYP
@given(st.integers(0, 2**16), st.sampled_from([0.0, 1.0, 50.0]))
def test_cw_matches_its_definition(seed, kappa):
    logits, y, target = random_logits(seed)
    for i in range(len(y)):
        z = logits[i].tolist()
        others = max(v for j, v in enumerate(z) if j != y[i])
        expected = -max(z[y[i]] - others + kappa, 0.0)
        assert losses.cw(logits[i : i + 1], y[i : i + 1], kappa=kappa).item() == pytest.approx(expected)
        t = int(target[i])
        others_t = max(v for j, v in enumerate(z) if j != t)
        expected_t = -max(others_t - z[t] + kappa, 0.0)
        got = losses.cw(logits[i : i + 1], y[i : i + 1], target[i : i + 1], kappa=kappa).item()
        assert got == pytest.approx(expected_t)


@HYP
@given(st.integers(0, 2**16))
def test_cw_is_zero_exactly_when_misclassified(seed):
    logits, y, _ = random_logits(seed)
    out = losses.cw(logits, y)
    assert (out <= 0).all()
    assert torch.equal(out == 0, logits.argmax(1) != y)


def test_cw_gradient_is_finite_despite_the_inf_mask():
    logits = NEG.clone().requires_grad_(True)
    losses.cw(logits, torch.tensor([1]), kappa=50.0).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.equal(logits.grad, torch.tensor([[0.0, -1.0, 1.0]]))


# --- DLR ------------------------------------------------------------------------------------
def test_dlr_hand_values():
    logits = torch.tensor([[3.0, 1.0, 0.0, -2.0]])  # sorted: 3, 1, 0, -2; z_pi1 - z_pi3 = 3
    assert losses.dlr(logits, torch.tensor([0])).item() == pytest.approx(-2.0 / 3.0)  # -(3 - 1) / 3
    assert losses.dlr(logits, torch.tensor([2])).item() == pytest.approx(1.0)  # -(0 - 3) / 3
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(3 - (-2)) / (3 - (0 - 2) / 2) = -5 / 4
    assert losses.dlr(logits, torch.tensor([0]), torch.tensor([3])).item() == pytest.approx(-1.25)
    # all logits negative
    neg = torch.tensor([[-4.0, -1.0, -2.0, -8.0]])  # sorted -1, -2, -4, -8
    assert losses.dlr(neg, torch.tensor([2])).item() == pytest.approx(-(-2.0 - -1.0) / (-1.0 - -4.0))


@HYP
@given(st.integers(0, 2**16), st.floats(0.01, 100.0), st.floats(-50.0, 50.0), st.booleans())
def test_dlr_is_invariant_to_shift_and_positive_scale(seed, scale, shift, targeted):
    logits, y, target = random_logits(seed)
    t = target if targeted else None
    base = losses.dlr(logits, y, t)
    per_example_shift = shift + torch.arange(len(y), dtype=logits.dtype)[:, None]
    torch.testing.assert_close(losses.dlr(scale * logits + per_example_shift, y, t), base, rtol=1e-6, atol=1e-9)


@HYP
@given(st.integers(0, 2**16))
def test_dlr_sign_tells_misclassification(seed):
    logits, y, _ = random_logits(seed)
    out = losses.dlr(logits, y)
    assert torch.equal(out > 0, logits.argmax(1) != y)


def test_dlr_class_count_requirements():
    with pytest.raises(ValueError, match="4 classes"):
        losses.dlr(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="3 classes"):
        losses.dlr(torch.randn(2, 2), torch.tensor([0, 1]))
    losses.dlr(torch.randn(2, 4), torch.tensor([0, 1]), torch.tensor([1, 2]))  # 4 is enough
    losses.dlr(torch.randn(2, 3), torch.tensor([0, 1]))


# --- registry -------------------------------------------------------------------------------
def test_get_returns_the_functions():
    assert losses.get("ce") is losses.ce
    assert losses.get("cw") is losses.cw
    assert losses.get("dlr") is losses.dlr
    assert set(losses.LOSSES) == {"ce", "cw", "dlr"}


def test_the_registry_says_which_loss_takes_kappa_and_attacks_pass_it():
    assert [name for name, loss in losses.LOSSES.items() if loss.takes_kappa] == ["cw"]
    assert losses.LOSSES["cw"](NEG, torch.tensor([0]), kappa=50.0) == losses.cw(NEG, torch.tensor([0]), kappa=50.0)
    seen = []

    @losses.register_loss("capped-test", takes_kappa=True)
    def capped(logits, y, target=None, kappa=0.0):
        seen.append(kappa)
        return losses.cw(logits, y, target, kappa=kappa)

    @losses.register_loss("plain-test")
    def plain(logits, y, target=None):
        return losses.ce(logits, y, target)

    try:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
        ro.attacks.PGD(ro.Linf(0.1), steps=1, loss="capped-test", kappa=7.0)(model, x, y)
        assert seen and set(seen) == {7.0}  # a user's loss that takes kappa gets the attack's
        with pytest.raises(ValueError, match=r"kappa only applies to a loss that takes one \(cw, capped-test\)"):
            ro.attacks.PGD(ro.Linf(0.1), loss="plain-test", kappa=1.0)
        with pytest.raises(ValueError, match="already taken"):
            losses.register_loss("cw")(plain)
    finally:
        losses.LOSSES.unregister("capped-test")
        losses.LOSSES.unregister("plain-test")


@pytest.mark.parametrize("name", ["CE", "xent", "", "margin"])
def test_unknown_loss_name(name):
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get(name)


@pytest.mark.parametrize("fn", [losses.ce, losses.cw, losses.dlr])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_are_per_example_and_keep_dtype(fn, dtype):
    logits, y, target = random_logits(0, dtype=dtype)
    for t in (None, target):
        out = fn(logits, y, t)
        assert out.shape == (8,) and out.dtype == dtype and torch.isfinite(out).all()
