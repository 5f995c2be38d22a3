"""The one registry type (robustopt._registry.Registry)."""

from __future__ import annotations

import pytest

from robustopt._registry import Registry


def test_register_get_names_and_mapping():
    reg: Registry[int] = Registry("widget", aliases={"w1": "one"})
    reg.register("one", 1)

    @reg.register("two")
    def two():  # the decorator form returns the entry itself
        return 2

    assert reg.get("one") == 1 and reg.get("w1") == 1 and reg.get("two") is two
    assert reg.names() == ["one", "two"] and list(reg) == ["one", "two"] and len(reg) == 2
    assert "one" in reg and "w1" in reg and "three" not in reg and 3 not in reg
    assert dict(reg.items()) == {"one": 1, "two": two}
    reg.register("one", 1)  # the same entry again: fine
    with pytest.raises(ValueError, match="widget name 'one' is already taken"):
        reg.register("one", 11)
    reg.unregister("two")
    assert reg.names() == ["one"]


def test_unknown_key_names_the_close_match_and_the_choices():
    reg: Registry[int] = Registry("dataset")
    reg.register("cifar10", 1)
    reg.register("mnist", 2)
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar1' \(did you mean 'cifar10'\?\); choose one of: "
                                         r"cifar10, mnist\."):
        reg.get("cifar1")
    with pytest.raises(ValueError, match=r"unknown dataset 'zzz'; choose one of"):
        reg.get("zzz")
    with pytest.raises(ValueError, match="unknown dataset None"):
        reg.get(None)
    with pytest.raises(TypeError, match="key must be a non-empty string"):
        reg.register("", 3)
