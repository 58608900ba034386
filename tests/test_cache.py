"""The bounded least-recently-used cache that a run keeps its papers, cards and digests in."""

from __future__ import annotations

from digest.cache import BoundedCache


def test_least_recently_used_goes_first() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.lookup("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert (cache.lookup("a"), cache.lookup("b"), cache.lookup("c"), len(cache)) == (1, None, 3, 2)
    assert cache.get("d", lambda: 4) == 4 and cache.lookup("a") is None


def test_get_many_loads_only_the_missing_together_and_returns_all() -> None:
    cache: BoundedCache[int, str] = BoundedCache(3)
    cache.put(1, "one")
    loads: list[list[int]] = []

    def load(keys: list[int]) -> dict[int, str]:
        loads.append(keys)
        return {key: f"#{key}" for key in keys if key != 4}  # 4 does not exist

    found = cache.get_many([1, 2, 3, 4, 5, 6], load)
    assert loads == [[2, 3, 4, 5, 6]]
    # Everything found is returned, although the cache keeps only the last three.
    assert found == {1: "one", 2: "#2", 3: "#3", 5: "#5", 6: "#6"}
    assert len(cache) == 3 and cache.lookup(6) == "#6" and cache.lookup(2) is None
    assert cache.get_many([6], load) == {6: "#6"} and len(loads) == 1
