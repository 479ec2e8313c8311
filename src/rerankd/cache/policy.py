"""Per-request cache policy, from HTTP ``Cache-Control`` or from the Python API's arguments."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CachePolicy:
    """What one request allows the cache to do.

    Attributes:
        no_cache: do not read cached scores (score every pair afresh), but store the fresh scores.
        no_store: do not store this request's scores (cached ones may still be read).

    Example:
        >>> CachePolicy.from_cache_control("No-Cache, max-age=0")
        CachePolicy(no_cache=True, no_store=False)
        >>> CachePolicy.from_cache_control(None)
        CachePolicy(no_cache=False, no_store=False)
    """

    no_cache: bool = False
    no_store: bool = False

    @classmethod
    def from_cache_control(cls, header: str | None) -> "CachePolicy":
        """Read the ``no-cache`` and ``no-store`` directives (case-insensitive); others are ignored."""
        if not header:
            return cls()
        directives = {part.split("=", 1)[0].strip().lower() for part in header.split(",")}
        return cls(no_cache="no-cache" in directives, no_store="no-store" in directives)


#: The policy of a request that asks nothing special.
DEFAULT_POLICY = CachePolicy()
