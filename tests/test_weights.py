"""Plain PyTorch state dicts (e.g. RobustBench weights) loaded into registry models
(robustopt.models.weights, ``ro.models.create(name, weights=path)``): layouts, key checks, no code run."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

import robustopt as ro
from planted import Planted


def reference() -> torch.nn.Module:
    torch.manual_seed(1)
    return ro.models.create("small-cnn")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix, layout", [(suffix, layout) for suffix in (".pt", ".pth", ".safetensors")
                                            for layout in ("plain", "module.", "model.", "module.model.", "wrapped")
                                            if (suffix, layout) != (".safetensors", "wrapped")])  # a flat dict only
def test_create_loads_a_plain_state_dict(tmp_path, suffix, layout):
    source = reference()
    state = {k: v.contiguous().clone() for k, v in source.state_dict().items()}  # (channels-last weights)
    if layout != "plain" and layout != "wrapped":
        state = {layout + k: v for k, v in state.items()}  # DataParallel and wrapper prefixes
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3} if layout == "wrapped"
                   else state, path)
    model = ro.models.create("small-cnn", weights=path)
    assert same_weights(model, source) and not model.training
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), source.eval()(x))


def test_weights_without_the_normalize_layer_keep_the_models_own(tmp_path):
    source = reference()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("normalize.")}  # trained elsewhere
    torch.save(state, tmp_path / "w.pt")
    model = ro.models.create("small-cnn", weights=tmp_path / "w.pt", mean=0.5, std=0.25)
    assert model.normalize.mean.flatten().tolist() == [0.5] and same_weights(model.conv1, source.conv1)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    state = reference().state_dict()
    torch.save({**{k: v for k, v in state.items() if k != "conv1.weight"}, "head.weight": torch.zeros(2)},
               tmp_path / "keys.pt")
    with pytest.raises(ValueError, match=r"missing keys \[conv1\.weight\] \(1\); unexpected keys \[head\.weight\]"):
        ro.models.create("small-cnn", weights=tmp_path / "keys.pt")
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        ro.models.create("small-cnn", num_classes=4, weights=tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        ro.models.create("small-cnn", weights=tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        ro.models.create("small-cnn", weights=tmp_path / "missing.pt")


def test_weights_file_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": Planted(marker)}, path)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        ro.models.create("small-cnn", weights=path)
    path.write_bytes(pickle.dumps(Planted(marker), protocol=2))  # a bare pickle, not even a torch file
    with pytest.raises(ValueError, match="state dict of tensors"):
        ro.models.create("small-cnn", weights=path)
    assert not marker.exists()
