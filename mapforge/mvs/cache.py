"""A least-recently-used cache of arrays with a fixed budget in bytes, so memory does not grow with the image count."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np


class ArrayCache:
    """Holds loaded arrays (numpy, or tuples of them) up to `max_bytes`, evicting the least recently used first.

    An item larger than the whole budget is still returned, just not kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self.bytes = 0
        self.peak_bytes = 0

    def get(self, key: Hashable, load: Callable[[], object]) -> object:
        """The item `key`, loaded with `load()` when it is not held."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        value = load()
        size = _nbytes(value)
        if size <= self.max_bytes:
            while self.bytes + size > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.bytes -= evicted
            self._items[key] = (value, size)
            self.bytes += size
            self.peak_bytes = max(self.peak_bytes, self.bytes)
        return value

    def drop(self, key: Hashable) -> None:
        """Forget `key` (after its file was rewritten)."""
        if key in self._items:
            self.bytes -= self._items.pop(key)[1]


def _nbytes(value: object) -> int:
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0)) or np.asarray(value).nbytes
