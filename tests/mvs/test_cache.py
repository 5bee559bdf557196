from __future__ import annotations

import numpy as np

from mapforge.mvs.cache import ArrayCache


def test_least_recently_used_is_evicted_within_the_budget() -> None:
    cache = ArrayCache(max_bytes=3 * 800)
    loads = []

    def loader(key: str):
        def load():
            loads.append(key)
            return np.zeros(100)  # 800 bytes

        return load

    for key in "abc":
        cache.get(key, loader(key))
    cache.get("a", loader("a"))  # a is now the most recent
    cache.get("d", loader("d"))  # evicts b
    cache.get("a", loader("a"))
    cache.get("b", loader("b"))
    assert loads == ["a", "b", "c", "d", "b"]
    assert cache.bytes <= cache.max_bytes and cache.peak_bytes == 3 * 800


def test_items_larger_than_the_budget_are_returned_not_kept() -> None:
    cache = ArrayCache(max_bytes=100)
    value = cache.get("big", lambda: (np.zeros(50), np.zeros(50)))
    assert len(value) == 2 and cache.bytes == 0
