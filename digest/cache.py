"""A bounded least-recently-used cache, for what a run keeps per paper, card or digest."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most `size` entries; the least recently used goes first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The entry of `key`, made (and kept) if missing."""
        if (value := self.lookup(key)) is not None:
            return value
        value = make()
        self.put(key, value)
        return value

    def get_many(self, keys: Iterable[K], load: Callable[[list[K]], Mapping[K, V]]) -> dict[K, V]:
        """The entries of `keys`, those missing loaded together by `load` (and kept); a
        key that `load` does not find is left out. All are returned even when they are
        more than the cache keeps."""
        found: dict[K, V] = {}
        missing: list[K] = []
        for key in keys:
            if (value := self.lookup(key)) is not None:
                found[key] = value
            else:
                missing.append(key)
        if missing:
            for key, value in load(missing).items():
                found[key] = value
                self.put(key, value)
        return found

    def lookup(self, key: K) -> V | None:
        """The entry of `key`, or None."""
        try:
            self._entries.move_to_end(key)
        except KeyError:
            return None
        return self._entries[key]

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
