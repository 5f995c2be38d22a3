"""Sanity checks of a request (robustopt._checks): a wrong request is an error, never a number.

The eps limits follow the geometry of the box of inputs: beyond its diameter eps is refused,
beyond half of it (or beyond the usual range on natural images) it is warned about. The library
entry points (``evaluate``, ``sweep``, ``fit`` and the functions behind the CLI) refuse the same
requests as the command line: no examples, a count below one, eps beyond the input range.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import robustopt as ro
from robustopt._checks import MAX_GRID, EpsWarning, check_eps, eps_warning
from robustopt.experiments import eval_run, sweep_run


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    return tiny_run


def test_eps_limits_state_the_geometry():
    # the diameter of the box [0, 1]^d: 1 (L-inf), sqrt(d) (L2), d (L1); beyond it: refused
    d = 1 * 28 * 28
    for norm, diameter in ((ro.Linf, 1.0), (ro.L2, math.sqrt(d)), (ro.L1, float(d))):
        check_eps(norm(diameter), (1, 28, 28))
        with pytest.raises(ValueError, match="exceeds"):
            check_eps(norm(diameter * 1.01), (1, 28, 28))
        assert eps_warning(norm(0.49 * diameter), (1, 28, 28)) is None
        assert "mid-gray" in eps_warning(norm(0.51 * diameter), (1, 28, 28))
        # the box is the threat model's: twice as wide, twice the diameter
        check_eps(norm(2 * diameter, bounds=(-1.0, 1.0)), (1, 28, 28))
        with pytest.raises(ValueError, match=r"inputs in \[-1, 1\]"):
            check_eps(norm(2.02 * diameter, bounds=(-1.0, 1.0)), (1, 28, 28))
    with pytest.raises(TypeError, match="threat model such as"):
        check_eps("linf", (1, 28, 28))
    # at half the diameter every image, even a corner of the box, reaches the mid-gray image
    corners = torch.randint(0, 2, (64, 1, 28, 28)).float()
    gray = torch.full_like(corners, 0.5)
    for threat in (ro.Linf(0.5), ro.L2(0.5 * math.sqrt(d)), ro.L1(0.5 * d)):
        assert threat.contains(gray, corners, atol=1e-4).all()
    # natural images: L-inf above 32/255 is unusual (the literature stops at 16/255)
    assert eps_warning(ro.Linf(8 / 255), (3, 32, 32)) is None
    assert "32/255" in eps_warning(ro.Linf(0.2), (3, 32, 32))
    assert eps_warning(ro.Linf(0.3), (1, 28, 28)) is None  # MNIST's standard radius


def test_library_entry_points_check_eps(trained_cnn):
    model, x, y = trained_cnn
    with pytest.raises(ValueError, match="exceeds"):
        ro.evaluate(model, (x[:4], y[:4]), [ro.attacks.FGSM(ro.Linf(1.5))])
    with pytest.raises(ValueError, match="exceeds"):
        ro.sweep(model, (x[:4], y[:4]), ro.L2, [0.0, 9.0])  # 1x8x8 inputs: diameter 8
    with pytest.raises(ValueError, match=f"at most {MAX_GRID:,}"):
        ro.sweep(model, (x[:4], y[:4]), ro.Linf, [i / 10_000 for i in range(MAX_GRID + 1)])
    with pytest.warns(EpsWarning, match="mid-gray"):
        ro.sweep(model, (x[:4], y[:4]), ro.Linf, [0.0, 0.6], attack=ro.attacks.FGSM(ro.Linf(0.0)), progress=False)
    with pytest.raises(ValueError, match="exceeds"):
        ro.training.fit(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)), (x[:40], y[:40]), eps=2.0,
                        epochs=1, progress=False)


def test_library_refuses_empty_data_and_limit_below_one(run, trained_cnn):
    model, x, y = trained_cnn
    attack = ro.attacks.PGD(ro.Linf(0.1), steps=2)
    with pytest.raises(ValueError, match="no examples"):
        ro.evaluate(model, (x[:0], y[:0]), [attack])
    with pytest.raises(ValueError, match="no examples"):
        ro.sweep(model, (x[:0], y[:0]), ro.Linf, [0.0, 0.1])
    for fn in (eval_run, lambda r, **kw: sweep_run(r, eps_values=[0.0], **kw)):
        with pytest.raises(ValueError, match="must be >= 1"):
            fn(run, limit=0, echo=lambda s: None, progress=False)
        with pytest.raises(TypeError, match="whole number"):
            fn(run, limit=2.5, echo=lambda s: None, progress=False)


def test_pipelines_take_the_norm_as_a_class(run):
    # the CLI turns --norm NAME into the class once; the Python entry points take the class only
    for call in (lambda: sweep_run(run, norm="linf", eps_values=[0.0], echo=lambda s: None),
                 lambda: eval_run(run, norm="l2", eps=0.5, echo=lambda s: None)):
        with pytest.raises(TypeError, match=r"ro.threat.by_name\('l"):
            call()
    curve = sweep_run(run, norm=ro.L2, eps_values=[0.0], limit=5, echo=lambda s: None, progress=False,
                      overwrite=True)
    assert curve.norm == "L2" and json.loads((run / "sweep-l2.json").read_text())["meta"]["request"]["norm"] == "l2"
