"""Backends: a padded batch in, one output per row out. Heavy imports stay inside each backend."""

from rerankd.backends.base import Backend

__all__ = ["Backend"]
