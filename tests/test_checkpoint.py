"""Tests for robustopt.checkpoint and robustopt._io: round trips, validation, crash safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from robustopt import _io, checkpoint
from robustopt.checkpoint import load, read_metadata, save
from robustopt.models import Normalize, create


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create("small-cnn")


def _outputs(model: nn.Module, seed: int = 1) -> torch.Tensor:
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


class CustomNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize(0.5, 0.5)
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.normalize(x).flatten(1))


def _dir_listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ----------------------------------------------------------------------------- round trips


def test_roundtrip_equal_outputs_and_metadata(tmp_path: Path) -> None:
    model = _model()
    cfg = {"method": "pgd", "eps": 0.3, "steps": 40, "seed": 0}
    meta_path = save(tmp_path / "ckpt", model, config=cfg, extra={"epoch": 3, "acc": 0.9})
    assert meta_path == tmp_path / "ckpt.json"
    assert _dir_listing(tmp_path) == ["ckpt.json", "ckpt.safetensors"]

    other = _model(seed=1)
    assert not torch.equal(_outputs(other), _outputs(model))
    loaded, meta = load(tmp_path / "ckpt", model=other)
    assert loaded is other and not loaded.training
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)

    assert meta == read_metadata(tmp_path / "ckpt.json")
    assert meta["format"] == "robustopt-checkpoint" and meta["version"] == 1
    assert meta["config"] == cfg and meta["extra"] == {"epoch": 3, "acc": 0.9}
    assert meta["model"]["name"] == "small-cnn"
    assert meta["model"]["config"] == model.config.to_dict()
    assert meta["torch_version"] == torch.__version__
    assert meta["files"]["weights"]["sha256"] == _io.sha256_file(tmp_path / "ckpt.safetensors")
    assert meta["files"]["optimizer"] is None


@pytest.mark.parametrize("suffix", ["", ".json", ".safetensors"])
def test_load_accepts_any_suffix(tmp_path: Path, suffix: str) -> None:
    model = _model()
    save(tmp_path / "m.safetensors", model)  # a suffix on save is stripped too
    loaded, _ = load(str(tmp_path / "m") + suffix)
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)


def test_load_without_model_rebuilds_from_registry(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create("wrn-34-10", depth=10, widen_factor=1, num_classes=5)
    # Give BatchNorm non-trivial running stats so buffers are checked too.
    model.train()(torch.rand(8, 3, 32, 32))
    save(tmp_path / "wrn", model)
    loaded, meta = load(tmp_path / "wrn")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert meta["model"]["config"]["kwargs"] == {"depth": 10, "widen_factor": 1, "dropout": 0.0}
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def test_custom_model_needs_model_argument(tmp_path: Path) -> None:
    model = CustomNet()
    save(tmp_path / "c", model)
    with pytest.raises(ValueError, match="custom model .*CustomNet.*pass model="):
        load(tmp_path / "c")
    loaded, meta = load(tmp_path / "c", model=CustomNet())
    assert meta["model"]["name"] is None
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)


def test_optimizer_state_roundtrip(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        model(torch.rand(4, 1, 28, 28)).logsumexp(1).mean().backward()
        opt.step()
    save(tmp_path / "o", model, optimizer=opt)
    assert (tmp_path / "o.optim.pt").is_file()

    model2 = _model(seed=3)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    load(tmp_path / "o", model2, optimizer=opt2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(s1["state"][k][name], s2["state"][k][name])

    # Saving again without an optimizer removes the now stale optimizer file.
    save(tmp_path / "o", model)
    assert not (tmp_path / "o.optim.pt").exists()
    with pytest.warns(RuntimeWarning, match="no optimizer state"):
        load(tmp_path / "o", _model(), optimizer=torch.optim.SGD(_model().parameters(), lr=0.1))


def test_config_dataclass_and_non_serializable(tmp_path: Path) -> None:
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        eps: float = 0.3
        out: Path = Path("runs/a")

    save(tmp_path / "d", _model(), config=Cfg())
    assert read_metadata(tmp_path / "d")["config"] == {"eps": 0.3, "out": "runs/a"}
    with pytest.raises(TypeError, match="JSON serializable"):
        save(tmp_path / "e", _model(), extra={"bad": object()})
    assert not list(tmp_path.glob("e*"))  # nothing written


def test_wrapped_model_is_saved_without_prefix(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = _model()
    save(tmp_path / "dp", nn.DataParallel(model))
    assert set(load_file(tmp_path / "dp.safetensors")) == set(model.state_dict())
    loaded, _ = load(tmp_path / "dp", model=nn.DataParallel(_model(seed=2)))
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)


# ----------------------------------------------------------------------------- validation


def test_corrupt_weights_raise(tmp_path: Path) -> None:
    save(tmp_path / "m", _model())
    f = tmp_path / "m.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a byte inside a tensor
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or partially written"):
        load(tmp_path / "m")


def test_truncated_weights_raise(tmp_path: Path) -> None:
    save(tmp_path / "m", _model())
    f = tmp_path / "m.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or partially written"):
        load(tmp_path / "m")


def test_unparseable_weights_with_matching_sha_raise_valueerror(tmp_path: Path) -> None:
    save(tmp_path / "m", _model())
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"this is not safetensors")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["files"]["weights"]["sha256"] = _io.sha256_file(f)
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cannot read weights"):
        load(tmp_path / "m")


def test_foreign_json_raises(tmp_path: Path) -> None:
    save(tmp_path / "m", _model())
    (tmp_path / "m.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ValueError, match="not a robustopt checkpoint"):
        load(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="not a robustopt checkpoint"):
        read_metadata(tmp_path / "m")


def test_truncated_json_raises(tmp_path: Path) -> None:
    save(tmp_path / "m", _model())
    text = (tmp_path / "m.json").read_text()
    (tmp_path / "m.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load(tmp_path / "m")


def test_newer_version_raises(tmp_path: Path) -> None:
    save(tmp_path / "m", _model())
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["version"] = 99
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="upgrade robustopt"):
        load(tmp_path / "m")


def test_missing_files_name_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors.*nope\.json"):
        load(tmp_path / "nope")
    save(tmp_path / "m", _model())
    (tmp_path / "m.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"m\.json.*save did not finish"):
        load(tmp_path / "m")
    save(tmp_path / "w", _model())
    (tmp_path / "w.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"w\.safetensors"):
        load(tmp_path / "w")


def test_directory_path_gives_hint(tmp_path: Path) -> None:
    save(tmp_path / "run" / "model", _model())
    with pytest.raises(FileNotFoundError, match="is a directory.*model"):
        load(tmp_path / "run")
    with pytest.raises(ValueError, match="is a directory"):
        save(tmp_path / "run", _model())


def test_key_mismatch_lists_keys(tmp_path: Path) -> None:
    save(tmp_path / "m", create("madry-mnist"))
    with pytest.raises(ValueError) as info:
        load(tmp_path / "m", model=create("small-cnn"))
    msg = str(info.value)
    assert "shape mismatches" in msg and "conv1.weight" in msg
    assert "(32, 1, 5, 5)" in msg and "(16, 1, 3, 3)" in msg
    assert "Traceback" not in msg and "Error(s) in loading state_dict" not in msg

    save(tmp_path / "c", CustomNet())
    with pytest.raises(ValueError, match="missing keys .*conv1.weight.*unexpected keys .*fc.weig"):
        load(tmp_path / "c", model=create("small-cnn"))


# ----------------------------------------------------------------------------- atomicity


def test_no_temp_files_left_after_saves(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i in range(3):
        save(tmp_path / "m", model, optimizer=opt, extra={"epoch": i})
    assert _dir_listing(tmp_path) == ["m.json", "m.optim.pt", "m.safetensors"]
    assert read_metadata(tmp_path / "m")["extra"] == {"epoch": 2}


def _crash_on_call(monkeypatch: pytest.MonkeyPatch, failing: set[int]) -> list[int]:
    """Make os.replace raise on the given (1-based) calls; return the call counter."""
    calls = [0]
    real = os.replace

    def flaky(src, dst, *args, **kwargs):
        calls[0] += 1
        if calls[0] in failing:
            raise OSError(f"simulated crash in os.replace call {calls[0]}")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", flaky)
    return calls


@pytest.mark.parametrize("with_optim, fail_at", [(False, 1), (False, 2), (True, 1), (True, 2), (True, 3)])
def test_crash_during_save_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_optim: bool, fail_at: int
) -> None:
    """os.replace calls: weights, [optimizer,] JSON; any of them failing keeps the old one."""
    old = _model(seed=0)
    opt = torch.optim.SGD(old.parameters(), lr=0.1, momentum=0.9) if with_optim else None
    save(tmp_path / "m", old, optimizer=opt, extra={"epoch": 1})
    before = _dir_listing(tmp_path)
    _crash_on_call(monkeypatch, failing={fail_at})
    with pytest.raises(OSError, match="simulated crash"):
        save(tmp_path / "m", _model(seed=1), optimizer=opt, extra={"epoch": 2})
    monkeypatch.undo()

    loaded, meta = load(tmp_path / "m", optimizer=opt)
    assert meta["extra"] == {"epoch": 1}
    torch.testing.assert_close(_outputs(loaded), _outputs(old), rtol=0, atol=0)
    assert _dir_listing(tmp_path) == before


def test_hard_crash_during_save_recovers_from_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rollback possible (every later os.replace fails, as if the process died)."""
    old = _model(seed=0)
    opt = torch.optim.SGD(old.parameters(), lr=0.1, momentum=0.9)
    old(torch.rand(2, 1, 28, 28)).sum().backward()
    opt.step()
    save(tmp_path / "m", old, optimizer=opt, extra={"epoch": 1})
    _crash_on_call(monkeypatch, failing=set(range(3, 100)))  # weights + optim replaced, JSON not
    with pytest.raises(OSError):
        save(tmp_path / "m", _model(seed=1), optimizer=opt, extra={"epoch": 2})
    monkeypatch.undo()

    # The payload files now hold the new, uncommitted data; the JSON still the old.
    meta_sha = read_metadata(tmp_path / "m")["files"]["weights"]["sha256"]
    assert _io.sha256_file(tmp_path / "m.safetensors") != meta_sha
    with pytest.warns(RuntimeWarning, match="interrupted save"):
        fresh_opt = torch.optim.SGD(_model().parameters(), lr=0.1)
        loaded, meta = load(tmp_path / "m", optimizer=fresh_opt)
    assert meta["extra"] == {"epoch": 1}
    torch.testing.assert_close(_outputs(loaded), _outputs(old), rtol=0, atol=0)

    # A second interrupted save must not overwrite the good backup.
    _crash_on_call(monkeypatch, failing=set(range(2, 100)))
    with pytest.raises(OSError):
        save(tmp_path / "m", _model(seed=2))
    monkeypatch.undo()
    with pytest.warns(RuntimeWarning):
        loaded, _ = load(tmp_path / "m")
    torch.testing.assert_close(_outputs(loaded), _outputs(old), rtol=0, atol=0)

    # The next successful save cleans up every backup and temp file.
    save(tmp_path / "m", _model(seed=4))
    assert _dir_listing(tmp_path) == ["m.json", "m.safetensors"]


def test_crash_during_first_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_on_call(monkeypatch, failing={2})
    with pytest.raises(OSError):
        save(tmp_path / "m", _model())
    monkeypatch.undo()
    assert _dir_listing(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "m")


# ----------------------------------------------------------------------------- _io


def test_atomic_writers(tmp_path: Path) -> None:
    p = _io.atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    assert p.read_text() == "hello"
    _io.atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    obj = {"acc": 0.5, "path": Path("x"), "t": torch.tensor(2.0)}
    _io.atomic_write_json(tmp_path / "r.json", obj)
    assert json.loads((tmp_path / "r.json").read_text()) == {"acc": 0.5, "path": "x", "t": 2.0}
    if os.name != "nt":  # usual permissions, not mkstemp's 0600
        assert p.stat().st_mode & 0o777 == 0o666 & ~_io._UMASK
    assert _dir_listing(tmp_path) == ["r.json", "sub"]
    assert _dir_listing(tmp_path / "sub") == ["a.txt"]


def test_atomic_write_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _io.atomic_write_text(tmp_path / "a.txt", "old")
    _crash_on_call(monkeypatch, failing={1})
    with pytest.raises(OSError):
        _io.atomic_write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old" and _dir_listing(tmp_path) == ["a.txt"]
    with pytest.raises(TypeError):
        _io.atomic_write_json(p, {"x": object()})
    assert p.read_text() == "old"


def test_checkpoint_paths() -> None:
    for s in ("a/m", "a/m.json", "a/m.safetensors", "a/m.optim.pt"):
        paths = checkpoint.checkpoint_paths(s)
        assert paths.base == Path("a/m") and paths.weights == Path("a/m.safetensors")
        assert paths.metadata == Path("a/m.json") and paths.optimizer == Path("a/m.optim.pt")
    assert checkpoint.checkpoint_paths("a/m.v2").weights == Path("a/m.v2.safetensors")


def test_extra_tensors_round_trip_verified_and_removed_when_absent(tmp_path: Path) -> None:
    model = CustomNet()
    delta = torch.rand(3, 1, 28, 28)
    save(tmp_path / "m", model, tensors={"0/delta": delta})
    assert checkpoint.checkpoint_paths(tmp_path / "m.tensors.safetensors").base == tmp_path / "m"
    assert torch.equal(checkpoint.load_tensors(tmp_path / "m")["0/delta"], delta)
    load(tmp_path / "m", CustomNet())  # the weights are unaffected
    with pytest.raises(TypeError, match="dict mapping str names to tensors"):
        save(tmp_path / "m", model, tensors={"delta": [1.0]})
    (tmp_path / "m.tensors.safetensors").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="sha256"):
        checkpoint.load_tensors(tmp_path / "m")
    save(tmp_path / "m", model)  # without tensors: the stale file goes
    assert checkpoint.load_tensors(tmp_path / "m") == {}
    assert _dir_listing(tmp_path) == ["m.json", "m.safetensors"]


# ----------------------------------------------------------------------------- reproducible bytes


class TwoOrders(nn.Module):
    """The same parameters, registered in the order given: state_dict() keeps that order."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        values = {"w": torch.randn(3, 2, generator=g), "b": torch.randn(3, generator=g),
                  "count": torch.arange(4), "f16": torch.ones(2, dtype=torch.float16)}
        for name in names:
            self.register_buffer(name, values[name])


def test_the_same_tensors_give_the_same_bytes(tmp_path: Path) -> None:
    # sha256sum of two runs that end with equal tensors agrees, whatever the order of the state dict
    # (and safetensors' metadata, which it writes in a hash-map order that changes from save to save).
    orders = [["w", "b", "count", "f16"], ["f16", "count", "b", "w"]]
    digests = set()
    for i in range(16):
        model = TwoOrders(orders[i % 2])
        save(tmp_path / f"m{i}", model, tensors={"z": torch.ones(2), "a": torch.zeros(3)})
        digests.add((_io.sha256_file(tmp_path / f"m{i}.safetensors"),
                     _io.sha256_file(tmp_path / f"m{i}.tensors.safetensors")))
        loaded, _ = load(tmp_path / f"m{i}", TwoOrders(orders[0]))
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                      TwoOrders(orders[0]).state_dict().values()))
    assert len(digests) == 1
    header = (tmp_path / "m0.safetensors").read_bytes()
    meta = json.loads(header[8 : 8 + int.from_bytes(header[:8], "little")])["__metadata__"]
    assert list(meta) == sorted(meta)


def _hostile_optimizer_file(base: Path) -> Path:
    """Replace the optimizer state of checkpoint ``base`` by a pickle that names a non-tensor global,
    and commit it in the .json (as someone handing over a run folder could)."""
    import fractions

    optim = checkpoint.checkpoint_paths(base).optimizer
    torch.save({"state": {}, "param_groups": [], "payload": fractions.Fraction(1, 3)}, optim)
    meta = json.loads(base.with_suffix(".json").read_text())
    meta["files"]["optimizer"]["sha256"] = _io.sha256_file(optim)
    base.with_suffix(".json").write_text(json.dumps(meta))
    return optim


def test_a_pickled_optimizer_file_is_refused_in_one_line(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save(tmp_path / "m", model, optimizer=opt)
    optim = _hostile_optimizer_file(tmp_path / "m")
    with pytest.raises(ValueError) as err:
        load(tmp_path / "m", _model(), optimizer=opt)
    message = str(err.value)
    assert message.startswith(f"refused to load the optimizer state {optim}") and "\n" not in message
    assert "fractions.Fraction" in message and "could run code" in message
    assert "weights_only=False" not in message  # never the advice to do the unsafe thing


def test_verify_checks_every_payload_file_without_loading(tmp_path: Path) -> None:
    model = _model()
    save(tmp_path / "m", model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), tensors={"d": torch.ones(2)})
    assert checkpoint.verify(tmp_path / "m")["format"] == checkpoint.FORMAT
    (tmp_path / "m.tensors.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="sha256 of .*m.tensors.safetensors does not match"):
        checkpoint.verify(tmp_path / "m")
    (tmp_path / "m.tensors.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="m.tensors.safetensors is missing"):
        checkpoint.verify(tmp_path / "m")


def test_a_payload_path_that_is_no_regular_file_is_named_so(tmp_path: Path) -> None:
    save(tmp_path / "m", _model())
    (tmp_path / "m.safetensors").unlink()
    (tmp_path / "m.safetensors").mkdir()  # e.g. a copy tool that made a folder of it
    with pytest.raises(FileNotFoundError, match=r"missing .*m\.safetensors \(there, but not a regular file\)"):
        load(tmp_path / "m")
