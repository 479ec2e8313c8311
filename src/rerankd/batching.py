"""Length-sorted batches bounded by a token budget that counts padding only where it is paid.

Padded backends pay for ``rows × longest row`` tokens, so for them the budget counts exactly that;
packed backends pay for real tokens only (text-embeddings-inference's ``is_padded``). Sorting by cost
keeps rows of a batch alike, and the budget keeps a batch of long rows small and a batch of short
rows large. A sequence's cost is its tokens, or more where it says so (image tokens, see
:attr:`rerankd.families.Encoded.cost`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rerankd.errors import InputError
from rerankd.families.base import Encoded, Padding


@dataclass(frozen=True)
class BatchLimits:
    """How big one forward pass may be.

    Attributes:
        max_tokens: tokens per batch (rows × longest row for padded backends, their sum for packed ones).
        max_rows: rows per batch, whatever their length.
    """

    max_tokens: int = 16384
    max_rows: int = 128

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.max_rows < 1:
            raise InputError(
                f"batch limits must be at least 1, got max_tokens={self.max_tokens} and max_rows={self.max_rows}")


@dataclass(frozen=True)
class PaddedBatch:
    """A batch as arrays: ``input_ids`` and ``attention_mask`` (rows × length), int64."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None = None


def batch_cost(costs: Sequence[int], padded: bool) -> int:
    """What a batch of sequences with these costs charges the budget.

    Example:
        >>> batch_cost([3, 5], padded=True), batch_cost([3, 5], padded=False)
        (10, 8)
    """
    return len(costs) * max(costs) if padded else sum(costs)


def plan_batches(costs: Sequence[int], limits: BatchLimits, padded: bool = True) -> list[list[int]]:
    """Group sequence indices into batches: sorted by cost, each within the token budget.

    ``padded``: the backend pads (a batch costs rows × its longest row) or packs (the sum).
    A sequence over the whole budget still gets a batch of its own.

    Example:
        >>> plan_batches([5, 100, 6, 99], BatchLimits(max_tokens=200, max_rows=8))
        [[0, 2], [3, 1]]
        >>> plan_batches([5, 100, 6, 99], BatchLimits(max_tokens=200, max_rows=8), padded=False)
        [[0, 2, 3], [1]]
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        # Sorted ascending, so the newest row is the longest: a padded batch costs (rows + 1) × its cost.
        grown = (len(current) + 1) * costs[i] if padded else total + costs[i]
        if current and (grown > limits.max_tokens or len(current) >= limits.max_rows):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += costs[i]
    if current:
        batches.append(current)
    return batches


def pad_batch(sequences: Sequence[Encoded], padding: Padding) -> PaddedBatch:
    """Pad sequences to the longest one (left padding for decoder LLMs, right for encoders)."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), padding.pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    types = np.zeros((len(sequences), width), dtype=np.int64) if padding.token_type_ids else None
    for row, seq in enumerate(sequences):
        n = len(seq)
        cols = slice(width - n, width) if padding.side == "left" else slice(0, n)
        ids[row, cols] = seq.input_ids
        mask[row, cols] = 1
        if types is not None and seq.token_type_ids is not None:
            types[row, cols] = seq.token_type_ids
    return PaddedBatch(ids, mask, types)
