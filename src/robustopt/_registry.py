"""One small registry type for everything robustopt looks up by name.

Attacks, models, training methods, losses, norms, audit checks, suites and datasets are each a
:class:`Registry`: ``register`` adds an entry under a key (a second entry under a taken key is
refused), ``get`` returns it (an unknown key raises ValueError naming the close match, if any,
and the known keys), ``names`` lists the keys in registration order. A registry is also a
read-only mapping, so ``name in registry`` and ``registry.items()`` work.

Example:
    >>> LOSSES: Registry[Callable[..., Tensor]] = Registry("loss")
    >>> @LOSSES.register("ce")
    ... def ce(logits, y): ...
    >>> LOSSES.get("ce") is ce
    True
    >>> LOSSES.get("cee")
    ValueError: unknown loss 'cee' (did you mean 'ce'?); choose one of: ce.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")
E = TypeVar("E")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one kind by key.

    Args:
        kind: what an entry is, for messages ("attack", "training method", "dataset", ...).
        aliases: other spellings of keys (alias -> key), accepted by ``get``.
    """

    def __init__(self, kind: str, aliases: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases = dict(aliases or {})

    def register(self, key: str, entry: E | None = None) -> Callable[[E], E] | E:
        """Add ``entry`` under ``key``: ``registry.register(key, entry)``, or ``@registry.register(key)``.

        Registering the same object twice under one key is allowed (a reloaded module).

        Raises:
            TypeError: ``key`` is not a non-empty string.
            ValueError: ``key`` holds another entry.
        """
        if not isinstance(key, str) or not key:
            raise TypeError(f"a {self.kind} key must be a non-empty string, got {key!r}.")

        def add(value: E) -> E:
            if key in self._entries and self._entries[key] is not value:
                raise ValueError(f"the {self.kind} name {key!r} is already taken by {self._entries[key]!r}.")
            self._entries[key] = value  # type: ignore[assignment]
            return value

        return add if entry is None else add(entry)

    def unregister(self, key: str) -> None:
        """Remove ``key`` (tests register temporary entries); an absent key is fine."""
        self._entries.pop(key, None)

    def get(self, key: str) -> T:  # type: ignore[override]
        """The entry under ``key`` (or under the key an alias names).

        Raises:
            ValueError: no such key; the message names a close match and the known keys.
        """
        if isinstance(key, str):
            found = self._entries.get(self._aliases.get(key, key))
            if found is not None:
                return found
        raise ValueError(self.unknown_message(key))

    def unknown_message(self, key: object) -> str:
        """The error message for an unknown ``key``."""
        close = difflib.get_close_matches(str(key), [*self._entries, *self._aliases], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {key!r}{hint}; choose one of: {', '.join(self._entries)}."

    def names(self) -> list[str]:
        """The keys, in registration order."""
        return list(self._entries)

    def __getitem__(self, key: str) -> T:
        return self._entries[self._aliases.get(key, key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._aliases.get(key, key) in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
