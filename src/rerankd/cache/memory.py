"""The in-process tier: a bounded, thread-safe LRU of cached scores."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Mapping, Sequence

from rerankd.cache.entry import CachedScore


class MemoryCache:
    """At most ``max_entries`` scores; the least recently used goes first.

    One lock guards the map: a lookup of a whole request's keys takes it once, so concurrent requests
    cost a few microseconds of contention, not one lock round per pair.

    Example:
        >>> cache = MemoryCache(2)
        >>> cache.put_many({"a": CachedScore(1.0, False, 3), "b": CachedScore(2.0, False, 4)})
        >>> cache.get_many(["a", "c"])
        [CachedScore(raw=1.0, truncated=False, tokens=3), None]
        >>> cache.put_many({"c": CachedScore(3.0, True, 9)})  # evicts "b": "a" was used more recently
        >>> cache.get_many(["b"])
        [None]
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedScore] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        """The entry of each key, or ``None``; found keys become the most recently used."""
        out: list[CachedScore | None] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                out.append(entry)
            found = sum(entry is not None for entry in out)
            self.hits += found
            self.misses += len(out) - found
        return out

    def put_many(self, items: Mapping[str, CachedScore]) -> None:
        """Insert or refresh entries, evicting the least recently used beyond ``max_entries``."""
        with self._lock:
            for key, entry in items.items():
                self._entries[key] = entry
                self._entries.move_to_end(key)
            overflow = len(self._entries) - self.max_entries
            for _ in range(max(overflow, 0)):
                self._entries.popitem(last=False)
            self.evictions += max(overflow, 0)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        """Counters since start: hits, misses, evictions; and entries now and capacity."""
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "entries": len(self._entries), "capacity": self.max_entries}
