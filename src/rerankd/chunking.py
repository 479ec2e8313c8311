"""Long documents as token windows: each window is scored with the whole query, then aggregated.

A document longer than the model's input is normally truncated (its start is kept). With chunking,
it is cut into windows of the tokens a sequence has room for after the query (and, for an LLM
reranker, after its whole prompt template, which is rebuilt around every window), ``overlap``
tokens shared between neighbours, at most ``max_chunks`` windows (a document longer than that is
truncated after the last one, and flagged). The document's raw score aggregates its windows' raw
scores (max, first or mean); the activation is applied after. Cohere's ``max_chunks_per_doc``
means exactly this with ``max``.

Example:
    >>> windows(10, window=4, overlap=1, max_chunks=10)
    [(0, 4), (3, 7), (6, 10)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rerankd.errors import InputError

Aggregation = Literal["max", "first", "mean"]
AGGREGATIONS: tuple[str, ...] = ("max", "first", "mean")
#: Cohere's default for ``max_chunks_per_doc``.
DEFAULT_MAX_CHUNKS = 10


@dataclass(frozen=True)
class ChunkSettings:
    """How long documents are split.

    Attributes:
        max_chunks: windows per document at most.
        overlap: tokens shared by neighbouring windows (smaller than a window).
        aggregation: how windows' raw scores become the document's: ``max``, ``first`` or ``mean``.
    """

    max_chunks: int = DEFAULT_MAX_CHUNKS
    overlap: int = 0
    aggregation: Aggregation = "max"

    def __post_init__(self) -> None:
        if not 1 <= self.max_chunks <= 1000:
            raise InputError(f"max_chunks must be in 1..1000, got {self.max_chunks}")
        if self.overlap < 0:
            raise InputError(f"overlap must be 0 or more tokens, got {self.overlap}")
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")

    def settings(self) -> dict[str, object]:
        """What of this changes a score (part of a result-cache key)."""
        return {"max_chunks": self.max_chunks, "overlap": self.overlap, "aggregation": self.aggregation}


def parse_chunking(spec: str) -> ChunkSettings:
    """``"on"`` or ``"max_chunks=10,overlap=32,aggregation=max"`` (any subset) → settings.

    Example:
        >>> parse_chunking("max_chunks=4,aggregation=mean")
        ChunkSettings(max_chunks=4, overlap=0, aggregation='mean')
    """
    fields: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if item in ("on", "true", "yes"):
            continue
        key, sep, value = item.partition("=")
        if not sep or key not in ("max_chunks", "overlap", "aggregation"):
            raise InputError(f"chunking setting {item!r} is not max_chunks=N, overlap=N or aggregation=max|first|mean")
        try:
            fields[key] = value if key == "aggregation" else int(value)
        except ValueError:
            raise InputError(f"chunking setting {key} must be a whole number, got {value!r}") from None
    return ChunkSettings(**fields)  # type: ignore[arg-type]


def windows(length: int, window: int, overlap: int, max_chunks: int) -> list[tuple[int, int]]:
    """Token ranges [start, end) of the windows over ``length`` tokens, in order, covering them all
    (unless ``max_chunks`` stops first)."""
    if window < 1:
        raise InputError(f"no room for a document window ({window} tokens); shorten the query or raise max_length")
    if overlap >= window:
        raise InputError(f"overlap ({overlap} tokens) must be smaller than the window ({window} tokens)")
    if length <= window:
        return [(0, length)]
    stride = window - overlap
    spans = []
    start = 0
    while len(spans) < max_chunks:
        spans.append((start, min(start + window, length)))
        if start + window >= length:
            break
        start += stride
    return spans


def aggregate(raw: np.ndarray, how: str) -> tuple[float, int]:
    """(the document's raw score, the index of the window that decided it)."""
    if how == "first":
        return float(raw[0]), 0
    if how == "mean":
        return float(np.mean(raw)), int(np.argmax(raw))
    best = int(np.argmax(raw))
    return float(raw[best]), best
