"""robustopt._device: a device name is checked once, where it is resolved, with a one-line reason."""

from __future__ import annotations

import pytest
import torch

from robustopt._device import check_device_name, resolve_device
from robustopt.training import TrainConfig


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name, present", [
    ("mps", lambda: torch.backends.mps.is_available()),
    ("xpu", lambda: torch.xpu.is_available()),
    ("vulkan", lambda: False),
])
def test_a_device_this_machine_lacks_is_refused_in_one_line(name, present):
    if present():
        pytest.skip(f"this machine has {name}")
    with pytest.raises(ValueError, match=f"device '{name}' was requested but .*; use cpu, or auto") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_a_cuda_index_beyond_the_devices_is_refused():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"device 'cuda:{count}' was requested but"):
        resolve_device(f"cuda:{count}")


@pytest.mark.parametrize("name, message", [
    ("meta", "holds shapes without data"),
    ("nonsense", "unknown device 'nonsense'"),
    ("", "unknown device ''"),
])
def test_names_that_are_no_compute_device(name, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)
    with pytest.raises(ValueError, match=message):
        TrainConfig(device=name)


def test_a_config_checks_the_spelling_only():
    # A config may name a GPU it will be trained on elsewhere (a preset, a run folder's config.json).
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    assert check_device_name("auto") is None
    with pytest.raises(TypeError, match="device must be a string"):
        TrainConfig(device=0)  # type: ignore[arg-type]
