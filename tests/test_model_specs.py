"""Your own model: model SPECs, weights that cannot run code, archives, wrap() and the normalization check."""

from __future__ import annotations

import warnings

import pytest
import torch
from own_data import archives, make_model, malicious_pt, model_file
from safetensors.torch import save_file
from torch import nn

import robustopt as ro
from robustopt.models import specs

X = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_wrap_feeds_the_model_normalized_pixels():
    inner = make_model()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    wrapped = ro.models.wrap(inner, mean=mean, std=std)
    expected = inner((X - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(wrapped(X), expected) and not wrapped.training
    x_adv = ro.attacks.PGD(ro.Linf(0.03), steps=2, step_size=0.01)(wrapped, X, torch.zeros(5, dtype=torch.long))
    assert (x_adv - X).abs().max() <= 0.03 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1  # pixel space
    with pytest.raises(TypeError, match="nn.Module"):
        ro.models.wrap(lambda x: x, mean=0.5, std=0.5)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_file_factory_with_weights_and_its_description(tmp_path, suffix):
    path = model_file(tmp_path)
    trained = make_model()
    with torch.no_grad():
        trained[-1].bias.add_(1.0)  # weights that differ from the factory's initialization
    weights = tmp_path / f"w{suffix}"
    torch.save(trained.state_dict(), weights) if suffix == ".pt" else save_file(trained.state_dict(), str(weights))
    model, description = specs.build(f"{path}:make", weights=weights)
    assert torch.allclose(model(X), trained(X)) and not model.training
    assert description["file"] == str(path.resolve()) and len(description["weights_sha256"]) == 64
    assert torch.allclose(specs.rebuild(description)(X), trained(X))
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="changed since the run was made"):
        specs.rebuild(description)


def test_package_module_factory(tmp_path, monkeypatch):
    pkg = tmp_path / "mynets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    model_file(pkg)
    monkeypatch.syspath_prepend(str(tmp_path))
    model, description = specs.build("mynets.net:make", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert isinstance(model, specs.Wrapped) and description["mean"] == [0.5, 0.5, 0.5]
    assert torch.allclose(model(X), make_model()((X - 0.5) / 0.25), atol=1e-6)


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_torchscript_and_export_archives(tmp_path, kind):
    reference = make_model()
    path = dict(zip(("torchscript", "export"), archives(tmp_path, reference)))[kind]
    model, description = specs.build(f"{kind}:{path}")
    assert torch.allclose(model(X), reference(X), atol=1e-6)
    assert torch.allclose(model(X[:3]), reference(X[:3]), atol=1e-6)  # any batch size
    model.train()  # an exported graph has no modes: only the flag changes, nothing raises
    assert model.eval() is model and len(description["sha256"]) == 64
    with pytest.raises(ValueError, match="hold their own weights"):
        specs.build(f"{kind}:{path}", weights=tmp_path / "net.ts")


@pytest.mark.parametrize("spec, message", [
    ("{dir}/net.py:broken", r"factory .*net\.py:broken raised RuntimeError: needs a GPU"),
    ("{dir}/net.py:absent", "has no function 'absent'"),
    ("{dir}/none.py:make", "no model file"),
    ("no_such_package_xyz.mod:make", "cannot import module"),
    ("madry-mnst", "unknown model 'madry-mnst'"),
    ("torchscript:{dir}/net.py", "not a torchscript archive"),
])
def test_bad_specs_get_one_line_errors(tmp_path, spec, message):
    model_file(tmp_path)
    with pytest.raises(ValueError, match=message) as err:
        specs.build(spec.format(dir=tmp_path))
    assert "\n" not in str(err.value)


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    evil = malicious_pt(tmp_path / "evil.pt", marker)
    with pytest.raises(ValueError, match="could run code: refused"):
        specs.build(f"{model_file(tmp_path)}:make", weights=evil)
    for kind in ("torchscript", "export"):
        with pytest.raises(ValueError, match=f"not a {kind} archive"):
            specs.build(f"{kind}:{evil}")
    assert not marker.exists()


def test_mean_without_std_is_refused(tmp_path):
    with pytest.raises(ValueError, match="both --mean and --std"):
        specs.build(f"{model_file(tmp_path)}:make", mean=(0.5,))


def _normalizing_model() -> nn.Module:
    return nn.Sequential(ro.models.Normalize((0.5,) * 3, (0.25,) * 3), make_model())


def test_normalization_twice_is_flagged():
    y = make_model()(X).argmax(1)
    with pytest.warns(specs.NormalizationWarning, match="normalized twice"):
        found = specs.check_normalization(ro.models.wrap(_normalizing_model(), (0.5,) * 3, (0.25,) * 3), X, y)
    assert len(found) == 1
    with pytest.warns(specs.NormalizationWarning, match="normalized twice"):  # seen in the values alone
        specs.check_normalization(ro.models.wrap(make_model(), (0.5,) * 3, (0.01,) * 3), X, y)


def test_normalization_missing_is_flagged_only_when_accuracy_is_low():
    model = make_model()
    right = model(X).argmax(1)
    with pytest.warns(specs.NormalizationWarning, match="not normalized at all"):
        specs.check_normalization(model, X, (right + 1) % 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert specs.check_normalization(model, X, right) == []  # a [0, 1] model that works
        assert specs.check_normalization(_normalizing_model(), X, (right + 1) % 4) == []
        assert specs.check_normalization(ro.models.wrap(model, (0.5,) * 3, (0.25,) * 3), X, right) == []
