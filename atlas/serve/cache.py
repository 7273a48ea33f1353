"""Bounded, thread-safe memory of what never changes in an atlas: a complete run's scores and
a set's members (a new run or set gets a new id; the creation time in each key tells them from
those of a replaced file)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


class LRU:
    """Least-recently-used values up to ``max_bytes`` (``nbytes`` of each value)."""

    def __init__(self, max_bytes: int, nbytes: Callable[[Any], int]):
        self.max_bytes = max_bytes
        self._nbytes = nbytes
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Event] = {}

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value of ``key``, made by ``make()`` if absent: by one caller at a time, while
        other callers of the same key wait for it (a slow report is computed once)."""
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                pending = self._pending.get(key)
                mine = pending is None
                if mine:
                    pending = self._pending[key] = threading.Event()
            if not mine:
                pending.wait()  # then look again (made, or the maker failed: try ourselves)
                continue
            try:
                value = make()  # outside the lock: other keys are served meanwhile
                with self._lock:
                    self._items[key] = value
                    self._size += self._nbytes(value)
                    while self._size > self.max_bytes and len(self._items) > 1:
                        _, old = self._items.popitem(last=False)
                        self._size -= self._nbytes(old)
                return value
            finally:
                with self._lock:
                    del self._pending[key]
                pending.set()


def array_bytes(value: Any) -> int:
    arrays = value if isinstance(value, tuple) else (value,)
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


def counted(value: Any) -> int:
    return 1
