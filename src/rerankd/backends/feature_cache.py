"""The vision tower's output per image (or video), kept by content hash in a byte-bounded LRU.

Reranking the same image documents for many queries runs the vision tower once per image: the
merged visual tokens and the deepstack features are what the language model reads, and they do not
depend on the query. Keys are :attr:`rerankd.families.vision_language.Visual.key` (a hash of the
preprocessed pixels and grid), so the same picture sent as a path, bytes or data URI is one entry.

Example:
    >>> cache = FeatureCache(max_bytes=1 << 20)
    >>> cache.get(b"k") is None
    True
    >>> cache.stats()["misses"]
    1
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Sequence

#: Default size: about 200 COCO-sized images' features on the 2B model (bf16), a few MiB on tiny ones.
DEFAULT_FEATURE_CACHE_BYTES = 512 * 2**20


def _nbytes(tensors: Sequence[Any]) -> int:
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


class FeatureCache:
    """A thread-safe LRU of ``key → (tensors...)`` bounded by the tensors' bytes.

    An entry larger than the whole cache is not kept. ``max_bytes=0`` turns the cache off (every
    lookup misses, nothing is stored).
    """

    def __init__(self, max_bytes: int = DEFAULT_FEATURE_CACHE_BYTES) -> None:
        if max_bytes < 0:
            from rerankd.errors import InputError

            raise InputError(f"the feature cache size must be 0 or more bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[bytes, tuple[Any, ...]] = OrderedDict()
        self._sizes: dict[bytes, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: bytes) -> tuple[Any, ...] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: bytes, tensors: tuple[Any, ...]) -> None:
        size = _nbytes(tensors)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._bytes -= self._sizes[key]
            self._entries[key] = tensors
            self._entries.move_to_end(key)
            self._sizes[key] = size
            self._bytes += size
            while self._bytes > self.max_bytes:
                old, _ = self._entries.popitem(last=False)
                self._bytes -= self._sizes.pop(old)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        """Counters for ``/metrics``: hits, misses, evictions, entries, bytes held and the byte cap."""
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes}
