"""The contract every attack keeps, checked on every attack in the registry (``ro.attacks.ATTACKS``).

Same shape/dtype/device; inside the ball and the bounds; truthful success flags; the model's
mode restored and no parameter gradient written; deterministic under a seed; restarts per
example; broken examples not attacked again; clear errors on bad input. A newly registered
attack is covered with its default configuration; an entry in ``VARIANTS`` makes it cheaper
and covers its modes. An attack that holds a model of its own (a transfer source) gets one from
``models_for``. What is specific to one attack (closed forms, budgets, strength) lives
in test_attacks.py, test_apgd_square.py and test_fab.py.
"""

from __future__ import annotations

import dataclasses
import json
import typing
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import NUM_CLASSES, make_convnet, make_data, make_linear
from torch import nn

import robustopt as ro
from robustopt.attacks import ATTACKS, Attack, create

# Cheap configurations that cover each attack's modes; the first one stands for the attack.
VARIANTS: dict[str, dict[str, dict]] = {
    "fgsm": {"default": {}},
    "pgd": {
        "default": {"steps": 5},
        "clean-start": {"steps": 5, "random_start": False},
        "restarts": {"steps": 3, "restarts": 3},
        "step-size": {"steps": 3, "step_size": 0.1, "restarts": 2},
        "cw": {"steps": 5, "loss": "cw"},
        "cw+": {"steps": 5, "loss": "cw", "kappa": 50.0},
        "least-likely": {"steps": 5, "targeted": "least-likely"},
        "random-target": {"steps": 5, "targeted": "random"},
        "dlr": {"steps": 5, "loss": "dlr"},
        "dlr-random-target": {"steps": 5, "loss": "dlr", "targeted": "random"},
        "keep-last": {"steps": 3, "keep": "last", "restarts": 2},
    },
    "apgd": {
        "ce": {"steps": 5},
        "dlr": {"steps": 5, "loss": "dlr"},
        "cw-restarts": {"steps": 4, "loss": "cw", "restarts": 2},
        "t": {"steps": 4, "loss": "dlr", "targeted": True, "n_target_classes": 2},
        "t-ce": {"steps": 4, "loss": "ce", "targeted": True, "n_target_classes": 2},
        "early-exit": {"steps": 6, "early_exit": True},
        "t-early-exit": {"steps": 6, "loss": "dlr", "targeted": True, "n_target_classes": 2, "early_exit": True},
    },
    "fab": {
        "default": {"steps": 8},
        "restarts": {"steps": 5, "restarts": 2, "early_stop": False},
        "t": {"steps": 5, "targeted": True, "n_target_classes": 2},
    },
    "square": {"margin": {"queries": 40}, "ce": {"queries": 40, "loss": "ce"},
               "early-exit": {"queries": 40, "early_exit": True}},
    "adaptive": {"default": {"steps": 6, "fab_steps": 3, "queries": 30, "n_target_classes": 2, "min_sample": 2},
                 "malt": {"steps": 4, "fab_steps": 2, "queries": 20, "target_score": "malt", "min_sample": 2}},
    "transfer": {"pgd": {"attack": "pgd", "steps": 5}, "fgsm": {"attack": "fgsm"},
                 "apgd-t": {"attack": "apgd", "steps": 4, "loss": "dlr", "targeted": True, "n_target_classes": 2}},
}

THREATS = {
    "Linf": lambda eps=0.3, bounds=(0.0, 1.0): ro.Linf(eps, bounds=bounds),
    "L2": lambda eps=1.0, bounds=(0.0, 1.0): ro.L2(eps, bounds=bounds),
    "L1": lambda eps=2.0, bounds=(0.0, 1.0): ro.L1(eps, bounds=bounds),
}
WIDE = {"Linf": 3.0, "L2": 10.0, "L1": 30.0}  # with bounds (-10, 10): every example breaks at once


def _variants(name: str) -> dict[str, dict]:
    return VARIANTS.get(name, {"default": {}})


class AnySource(nn.Module):
    """A transfer source for every input of these tests: the image average-pooled to 4x4, then a fixed
    linear map, computed in the input's dtype and on its device."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(NUM_CLASSES, 16, generator=g))
        self.bias = nn.Parameter(0.1 * torch.randn(NUM_CLASSES, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.adaptive_avg_pool2d(x, 4).mean(1).flatten(1)
        return F.linear(z, self.weight.to(x), self.bias.to(x))


def models_for(name: str) -> dict[str, nn.Module]:
    """The models the attack ``name`` holds besides its configuration (its ``nn.Module`` fields), made here."""
    hints = typing.get_type_hints(ATTACKS[name])
    return {f.name: AnySource() for f in dataclasses.fields(ATTACKS[name])
            if isinstance(hints.get(f.name), type) and issubclass(hints[f.name], nn.Module)}


def reseeded(atk: Attack, seed: int) -> Attack:
    """``atk`` with another seed (a transfer attack's seed is its inner attack's)."""
    if isinstance(atk, ro.attacks.Transfer):
        return dataclasses.replace(atk, attack=reseeded(atk.attack, seed))
    return dataclasses.replace(atk, seed=seed)


ALL = [pytest.param(name, kw, id=f"{name}-{v}") for name in ATTACKS for v, kw in _variants(name).items()]
FIRST = [pytest.param(name, next(iter(_variants(name).values())), id=name) for name in ATTACKS]


def make(name: str, kwargs: dict, norm: str, **threat_kw) -> Attack:
    """The attack ``name`` configured by ``kwargs`` on a ``norm`` threat; skips norms it does not support."""
    norms = ATTACKS[name].norms
    if norms is not None and norm not in norms:
        pytest.skip(f"{name} is not defined for {norm}")
    return create(name, THREATS[norm](**threat_kw), **kwargs, **models_for(name))


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def assert_truthful(atk: Attack, model: nn.Module, x, y, res, targets=None) -> None:
    """The success flags say what the returned points do: hit the target, or are misclassified."""
    pred = predictions(model, res.x_adv)
    drawn = getattr(atk, "targeted", None)
    if targets is not None:
        assert torch.equal(res.success, pred == targets)
    elif drawn == "least-likely":
        assert torch.equal(res.success, pred == predictions(lambda v: -model(v), x))
    elif drawn == "random":  # targets drawn among the wrong classes: a hit is a misclassification
        assert not (res.success & (pred == y)).any()
    else:  # untargeted, or AutoAttack-style targeted (APGD-T, FAB-T): success means misclassified
        assert torch.equal(res.success, pred != y)


def results_equal(a, b) -> bool:
    """Every field of two results is the same (x_adv, success, counts, notes, and e.g. FAB's x_min)."""

    def same(u, v) -> bool:
        if isinstance(u, torch.Tensor):
            return isinstance(v, torch.Tensor) and torch.equal(u, v)
        if isinstance(u, dict):
            return isinstance(v, dict) and u.keys() == v.keys() and all(same(u[k], v[k]) for k in u)
        if isinstance(u, (list, tuple)):
            return isinstance(v, (list, tuple)) and len(u) == len(v) and all(same(p, q) for p, q in zip(u, v))
        return u == v

    fields = [f.name for f in dataclasses.fields(a)]
    # the seconds a schedule records per stage are not part of its result
    strip = lambda r: {k: (_no_seconds(getattr(r, k)) if k == "summary" else getattr(r, k)) for k in fields}  # noqa: E731
    return type(a) is type(b) and same(strip(a), strip(b))


def _no_seconds(summary):
    if not isinstance(summary, dict):
        return summary
    return {**summary, "stages": [{k: v for k, v in st.items() if k != "seconds"} for st in summary.get("stages", [])]}


# --- the output -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", ALL)
@pytest.mark.parametrize("norm", THREATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_is_inside_ball_and_bounds_with_truthful_flags(name, kwargs, norm, dtype):
    atk = make(name, kwargs, norm)
    model = make_convnet(dtype=dtype)
    x, y = make_data(n=12, shape=(1, 8, 8), dtype=dtype)
    x_clean = x.clone()
    res = atk.run(model, x, y)
    x_adv = res.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == dtype and x_adv.device == x.device
    assert atk.threat.contains(x_adv, x, atol=1e-5 if dtype == torch.float32 else 1e-9).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    assert x_adv.grad_fn is None and not x_adv.requires_grad
    assert torch.equal(x, x_clean)  # the input is not mutated
    assert res.success.dtype == torch.bool and res.success.shape == y.shape
    assert isinstance(res.grad_evals, int) and isinstance(res.forwards, int) and res.grad_evals + res.forwards > 0
    assert_truthful(atk, model, x, y, res)


@pytest.mark.parametrize("name, kwargs", ALL)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_explicit_targets_are_aimed_at_and_reported_truthfully(name, kwargs, norm):
    atk = make(name, kwargs, norm)
    model = make_convnet()
    x, y = make_data(n=12, shape=(1, 8, 8))
    targets = (y + 1 + torch.arange(12) % (NUM_CLASSES - 1)) % NUM_CLASSES
    res = atk.run(model, x, y, targets=targets)
    assert atk.threat.contains(res.x_adv, x).all()
    assert_truthful(atk, model, x, y, res, targets=targets)


@pytest.mark.parametrize("name, kwargs", ALL)
@pytest.mark.parametrize("norm", THREATS)
def test_other_bounds_are_respected(name, kwargs, norm):
    bounds = (-1.0, 2.0)
    atk = make(name, kwargs, norm, eps={"Linf": 1.0, "L2": 3.0, "L1": 6.0}[norm], bounds=bounds)
    model = make_linear(scale=0.3)
    x, _ = make_data(n=12, bounds=bounds)
    x[:3], x[3:6] = 2.0, -1.0  # examples on the bounds
    y = predictions(model, x)  # correctly classified: every attack has to move
    x_adv = atk(model, x, y)
    assert atk.threat.contains(x_adv, x).all()
    assert (x_adv >= -1).all() and (x_adv <= 2).all()
    assert (x_adv != x).any()


@pytest.mark.parametrize("name, kwargs", ALL)
@pytest.mark.parametrize("norm", THREATS)
def test_eps_zero_returns_x_exactly(name, kwargs, norm):
    atk = make(name, kwargs, norm, eps=0.0)
    model = make_convnet()
    x, y = make_data(n=8, shape=(1, 8, 8))
    res = atk.run(model, x, y)
    assert torch.equal(res.x_adv, x)
    assert_truthful(atk, model, x, y, res)
    if atk.clean_success_counts:  # nothing to search in a ball of radius 0: the clean pass is all it costs
        assert (res.grad_evals, res.forwards) == (0, len(x))


# --- randomness --------------------------------------------------------------------------------------
def _searching(name: str, kwargs: dict, norm: str):
    """The attack, a model and examples it classifies correctly: every attack has to search."""
    model = make_convnet()
    x, _ = make_data(n=8, shape=(1, 8, 8))
    return make(name, kwargs, norm), model, x, predictions(model, x)


@pytest.mark.parametrize("name, kwargs", ALL)
@pytest.mark.parametrize("norm", THREATS)
def test_deterministic_under_a_seed_and_the_global_rng_untouched(name, kwargs, norm):
    atk, model, x, y = _searching(name, kwargs, norm)
    torch.manual_seed(0)
    expected_global = torch.rand(3)
    torch.manual_seed(0)
    a = atk.run(model, x, y)
    assert torch.equal(torch.rand(3), expected_global)  # no draw from the global generator
    assert results_equal(a, atk.run(model, x, y))  # same seed, same numbers
    g = torch.Generator().manual_seed(atk.seed)
    assert results_equal(a, atk.run(model, x, y, generator=g))  # the seed is a generator seeded with it


@pytest.mark.parametrize("name, kwargs", FIRST)
@pytest.mark.parametrize("norm", THREATS)
def test_a_randomized_attack_depends_on_its_seed(name, kwargs, norm):
    atk, model, x, y = _searching(name, kwargs, norm)
    g = torch.Generator().manual_seed(atk.seed)
    state = g.get_state().clone()
    a = atk.run(model, x, y, generator=g)
    if torch.equal(g.get_state(), state):
        pytest.skip(f"{name} draws no random numbers in this configuration")
    assert not results_equal(a, reseeded(atk, atk.seed + 1).run(model, x, y))


# --- restarts per example, no second attack on what is broken ------------------------------------------
def _with_restarts(name: str) -> None:
    if "restarts" not in {f.name for f in dataclasses.fields(ATTACKS[name])}:
        pytest.skip(f"{name} has no restarts")


@pytest.mark.parametrize("name, kwargs", FIRST)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_restarts_run_per_example_on_what_is_still_robust(name, kwargs, norm, trained_cnn):
    _with_restarts(name)
    model, x, y = trained_cnn
    x, y = x[:60], y[:60]
    atk = make(name, kwargs, norm, eps={"Linf": 0.08, "L2": 0.5}[norm])
    one = dataclasses.replace(atk, restarts=1).run(model, x, y)
    three = dataclasses.replace(atk, restarts=3).run(model, x, y)
    assert 0 < one.success.sum() < len(y)  # the eps is interesting: some but not all break
    assert not (one.success & ~three.success).any()  # restarts never lose an example
    # the first restart is the same run in both; what it broke is never attacked again
    assert torch.equal(three.x_adv[one.success], one.x_adv[one.success])
    assert three.grad_evals + three.forwards > one.grad_evals + one.forwards  # the others were attacked again


@pytest.mark.parametrize("name, kwargs", FIRST)
@pytest.mark.parametrize("norm", THREATS)
def test_what_the_first_run_breaks_is_not_attacked_again(name, kwargs, norm):
    _with_restarts(name)
    atk = make(name, kwargs, norm, eps=WIDE[norm], bounds=(-10.0, 10.0))
    model = make_linear(dtype=torch.float64)
    x, y = make_data(n=16, dtype=torch.float64)
    one = dataclasses.replace(atk, restarts=1).run(model, x, y)
    assert one.success.all()
    assert results_equal(dataclasses.replace(atk, restarts=3).run(model, x, y), one)


@pytest.mark.parametrize("name, kwargs", FIRST)
def test_clean_errors_are_returned_as_they_are_where_the_clean_pass_counts(name, kwargs):
    atk = make(name, kwargs, "Linf")
    if not atk.clean_success_counts:
        pytest.skip(f"{name} attacks every example it is given")
    model = make_convnet()
    x, y = make_data(n=12, shape=(1, 8, 8))
    wrong = predictions(model, x) != y
    assert wrong.any() and (~wrong).any()
    res = atk.run(model, x, y)
    assert torch.equal(res.x_adv[wrong], x[wrong]) and res.success[wrong].all()
    alone = atk.run(model, x[wrong], y[wrong])  # only wrong ones: the clean pass is all they cost
    assert (alone.grad_evals, alone.forwards) == (0, int(wrong.sum()))


# --- model hygiene ---------------------------------------------------------------------------------------
class ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def _mixed_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), ModeRecorder(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, NUM_CLASSES))


@pytest.mark.parametrize("name, kwargs", ALL)
def test_model_mode_restored_eval_used_and_no_parameter_gradient(name, kwargs):
    atk = make(name, kwargs, "Linf", eps=0.1)
    model = _mixed_model()
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    model[0].bias.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    stats = model[1].running_mean.clone()
    x, y = make_data(n=6, shape=(1, 8, 8))
    x_req = x.clone().requires_grad_(True)
    a = atk(model, x_req, y)
    assert [m.training for m in model.modules()] == modes
    assert model[3].seen and not any(model[3].seen)  # every forward pass saw eval mode
    assert all(p.grad is None for p in model.parameters()) and x_req.grad is None
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert torch.equal(model[1].running_mean, stats)  # BN statistics untouched
    assert a.grad_fn is None and not a.requires_grad
    with torch.no_grad():  # gradient attacks need gradients even when called under no_grad
        b = atk(model, x, y)
    assert torch.is_grad_enabled()
    with torch.inference_mode():
        c = atk(model, x, y)
    assert torch.equal(a, b) and torch.equal(a, c)  # dropout was off, grad mode does not matter


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name, kwargs", FIRST)
def test_follows_the_input_device(name, kwargs):
    atk = make(name, kwargs, "Linf", eps=0.1)
    model = make_convnet().cuda()
    x, y = make_data(n=8, shape=(1, 8, 8))
    res = atk.run(model, x.cuda(), y.cuda())
    assert res.x_adv.device == x.cuda().device and res.x_adv.dtype == x.dtype
    assert res.success.device == x.cuda().device


# --- bad input ------------------------------------------------------------------------------------------
BAD_INPUT = [
    pytest.param(lambda x, y: (torch.where(torch.arange(16).view(-1, 1, 1, 1) == 3, float("nan"), x), y), ValueError,
                 "NaN", id="nan"),
    pytest.param(lambda x, y: (x * 255, y), ValueError, "outside the bounds", id="0-255"),
    pytest.param(lambda x, y: (x - 0.5, y), ValueError, "Normalize", id="normalized"),
    pytest.param(lambda x, y: ((x * 255).to(torch.uint8), y), TypeError, "uint8", id="uint8"),
    pytest.param(lambda x, y: (x.numpy(), y), TypeError, "torch.Tensor", id="numpy"),
    pytest.param(lambda x, y: (x, y[:-1]), ValueError, "do not match", id="short-y"),
    pytest.param(lambda x, y: (x, y[:, None]), ValueError, "do not match", id="2d-y"),
    pytest.param(lambda x, y: (x, y.float()), TypeError, "integer", id="float-y"),
    pytest.param(lambda x, y: (x, y.bool()), TypeError, "integer", id="bool-y"),
    pytest.param(lambda x, y: (x, y.tolist()), TypeError, "torch.Tensor", id="list-y"),
    pytest.param(lambda x, y: (x, y + NUM_CLASSES), ValueError, r"labels must be in \[0, 4\]", id="y-too-large"),
    pytest.param(lambda x, y: (x, y - NUM_CLASSES), ValueError, "labels must be in", id="y-negative"),
    pytest.param(lambda x, y: (x[0, 0, 0], y[:4]), ValueError, "batch", id="not-a-batch"),
]


@pytest.mark.parametrize("name, kwargs", FIRST)
@pytest.mark.parametrize("mutate, error, phrase", BAD_INPUT)
def test_bad_input_raises_a_helpful_error(name, kwargs, mutate, error, phrase, linear_model, data):
    atk = make(name, kwargs, "Linf", eps=0.1)
    x, y = mutate(*data)
    with pytest.raises(error, match=phrase):
        atk(linear_model, x, y)


@pytest.mark.parametrize("name, kwargs", FIRST)
def test_bad_targets_and_options_raise(name, kwargs, linear_model, data):
    atk = make(name, kwargs, "Linf", eps=0.1)
    x, y = data
    with pytest.raises(ValueError, match="targets must be"):
        atk(linear_model, x, y, targets=y[:3])
    with pytest.raises(ValueError, match="targets must be in"):
        atk(linear_model, x, y, targets=torch.full_like(y, NUM_CLASSES))
    for dtype in (torch.float32, torch.bool):
        with pytest.raises(TypeError, match="integer"):
            atk(linear_model, x, y, targets=torch.ones(len(y), dtype=dtype))
    with pytest.raises(TypeError, match="unexpected"):
        atk(linear_model, x, y, no_such_option=1)


@pytest.mark.parametrize("name, kwargs", FIRST)
def test_model_errors_are_explained(name, kwargs, data):
    atk = make(name, kwargs, "Linf", eps=0.1)
    x, y = data
    for fn in (lambda z: z[:, 0], lambda z: z[:, :, None], lambda z: z[:1], lambda z: (z, z)):
        with pytest.raises(ValueError, match="logits of shape"):
            atk(_Reshaped(fn), x, y)
    with pytest.raises(ValueError, match="the model failed"):
        atk(nn.Sequential(nn.Flatten(), nn.Linear(17, NUM_CLASSES)), x, y)


class _Reshaped(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.inner = make_linear()
        self.fn = fn

    def forward(self, x):
        return self.fn(self.inner(x))


# Kept alive for the whole session: the library remembers warned models by id(), and a freed model's
# id could be reused by a later one, which would then not warn.
_SOFTMAX_MODELS = {name: nn.Sequential(make_linear(), nn.Softmax(dim=1)) for name in ATTACKS}


@pytest.mark.parametrize("name, kwargs", FIRST)
def test_empty_batch_and_integer_label_widths(name, kwargs, data):
    atk = make(name, kwargs, "Linf", eps=0.1)
    x, y = data
    res = atk.run(make_linear(), x[:0], y[:0])
    assert res.x_adv.shape == (0, *x.shape[1:]) and res.success.shape == (0,)
    assert (res.grad_evals, res.forwards) == (0, 0)
    for dtype in (torch.int32, torch.uint8):
        assert atk.threat.contains(atk(make_linear(), x, y.to(dtype)), x).all()


@pytest.mark.parametrize("name, kwargs", FIRST)
def test_probabilities_warn_once_and_logits_never(name, kwargs, data):
    atk = make(name, kwargs, "Linf", eps=0.1)
    if atk.source != "A":
        pytest.skip(f"{name} differentiates another model than the one it is given")
    x, y = data
    softmax = _SOFTMAX_MODELS[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atk(softmax, x[:0], y[:0])  # an empty batch neither warns nor silences the warning
        atk(make_linear(), x, y)
    assert not [w for w in caught if issubclass(w.category, UserWarning)]
    with pytest.warns(UserWarning, match="probabilities"):
        atk(softmax, x, y)


# --- attacks are values, found by name -------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", ALL)
def test_attacks_are_frozen_values_with_a_json_description(name, kwargs):
    atk = make(name, kwargs, "Linf")
    assert isinstance(atk, ATTACKS[name]) and atk == create(name, ro.Linf(0.3), **kwargs, **models_for(name))
    field = dataclasses.fields(atk)[-1].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(atk, field, getattr(atk, field))
    desc = json.loads(json.dumps(atk.describe()))
    assert desc["key"] == name and desc["type"] == type(atk).__name__
    threat = desc["threat"] if "threat" in desc else desc["attack"]["threat"]  # a transfer attack: its inner one's
    assert threat == {"norm": "Linf", "eps": 0.3, "bounds": [0.0, 1.0]}
    assert isinstance(atk.name, str) and atk.name and type(atk).__name__ in repr(atk)
    assert atk.steps is None or isinstance(atk.steps, int)
    assert atk.restarts is None or isinstance(atk.restarts, int)


@pytest.mark.parametrize("name, kwargs", ALL)
@pytest.mark.parametrize("norm", THREATS)
def test_describe_and_from_dict_round_trip(name, kwargs, norm):
    atk = make(name, kwargs, norm, bounds=(-1.0, 2.0))
    back = Attack.from_dict(json.loads(json.dumps(atk.describe())), **models_for(name))  # as read from a file
    assert back == atk and type(back) is type(atk) and back.describe() == atk.describe()
    assert ATTACKS[name].from_dict(atk.describe(), **models_for(name)) == atk
    assert ro.attacks.attack_key(atk.describe()) == name
    legacy = {k: v for k, v in atk.describe().items() if k != "key"}  # files written before the key was stored
    assert ro.attacks.attack_key(legacy) == name and Attack.from_dict(legacy, **models_for(name)) == atk


def test_from_dict_refuses_what_it_cannot_rebuild():
    pgd = ro.attacks.PGD(ro.Linf(0.3), steps=3).describe()
    with pytest.raises(ValueError, match="'pgd'"):
        Attack.from_dict({**pgd, "key": "pdg", "type": "PDG"})
    with pytest.raises(ValueError, match="no field"):
        Attack.from_dict({**pgd, "queries": 10})
    with pytest.raises(ValueError, match="not of a FGSM"):
        ro.attacks.FGSM.from_dict(pgd)
    with pytest.raises(TypeError, match="dict"):
        Attack.from_dict("PGD")
    transfer = ro.attacks.Transfer(AnySource(), ro.attacks.FGSM(ro.Linf(0.3)), source_name="B")
    with pytest.raises(TypeError, match="source_model="):
        Attack.from_dict(transfer.describe())


def test_a_transfer_source_is_not_part_of_the_configuration():
    a, b = AnySource(seed=1), AnySource(seed=2)
    fgsm = ro.attacks.FGSM(ro.Linf(0.3))
    t = ro.attacks.Transfer(a, fgsm, source_name="B")
    assert t == ro.attacks.Transfer(b, fgsm, source_name="B") and "source_model" not in repr(t)
    assert t != ro.attacks.Transfer(a, fgsm, source_name="C")
    assert create("transfer", ro.Linf(0.3), source_model=a, attack=fgsm, source_name="B") == t
    assert create("transfer", ro.Linf(0.3), source_model=a, attack=fgsm.describe(), source_name="B") == t
    with pytest.raises(ValueError, match="threat model"):
        create("transfer", ro.L2(1.0), source_model=a, attack=fgsm)
    with pytest.raises(ValueError, match="options"):
        create("transfer", ro.Linf(0.3), source_model=a, attack=fgsm, steps=3)


@pytest.mark.parametrize("name", ATTACKS)
def test_configuration_errors(name):
    for threat in (0.3, "linf", None):
        with pytest.raises(TypeError, match="threat"):
            create(name, threat, **models_for(name))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        create(name, ro.Linf(0.3), seed="0", **models_for(name))
    norms = ATTACKS[name].norms
    for norm, threat in THREATS.items():
        if norms is not None and norm not in norms:
            with pytest.raises(NotImplementedError, match=norm):  # also a ValueError
                create(name, threat(), **models_for(name))


def test_the_registry_names_the_attacks_and_refuses_bad_entries():
    assert {"fgsm", "pgd", "apgd", "fab", "square", "adaptive", "transfer"} <= set(ATTACKS)
    with pytest.raises(ValueError, match="'pgd'"):
        create("pdg", ro.Linf(0.3))
    with pytest.raises(ValueError, match="already taken"):
        ro.attacks.register_attack("pgd")(ro.attacks.FGSM)
    with pytest.raises(TypeError, match="Attack subclass"):
        ro.attacks.register_attack("not-an-attack")(int)
    assert [type(a).__name__ for a in ro.suites.standard(ro.Linf(0.3))] == ["APGD", "APGD", "FAB", "Square"]
