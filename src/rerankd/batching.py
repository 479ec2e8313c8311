"""Length-sorted, padding-aware batches bounded by a budget of padded tokens.

Padded backends pay for ``rows × longest row`` tokens, so the budget counts exactly that: sorting by
length keeps rows of a batch alike, and the budget keeps a batch of long rows small and a batch of
short rows large.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from rerankd.families.base import Encoded


@dataclass(frozen=True)
class BatchLimits:
    """How big one forward pass may be.

    Attributes:
        max_tokens: padded tokens (rows × longest row) per batch.
        max_rows: rows per batch, whatever their length.
    """

    max_tokens: int = 16384
    max_rows: int = 128

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.max_rows < 1:
            raise ValueError("batch limits must be positive")


@dataclass(frozen=True)
class PaddedBatch:
    """A batch as arrays: ``input_ids`` and ``attention_mask`` (rows × length), int64."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None = None

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.size)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def plan_batches(lengths: Sequence[int], limits: BatchLimits) -> list[list[int]]:
    """Group sequence indices into batches: sorted by length, each within the padded-token budget.

    A sequence longer than the whole budget still gets a batch of its own.

    Example:
        >>> plan_batches([5, 100, 6, 99], BatchLimits(max_tokens=200, max_rows=8))
        [[0, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so the newest row is the longest: the batch costs (rows + 1) × its length.
        if current and ((len(current) + 1) * lengths[i] > limits.max_tokens or len(current) >= limits.max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(
    sequences: Sequence[Encoded],
    pad_id: int,
    side: Literal["left", "right"] = "right",
    with_token_types: bool = False,
) -> PaddedBatch:
    """Pad sequences to the longest one (left padding for decoder LLMs, right for encoders)."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    types = np.zeros((len(sequences), width), dtype=np.int64) if with_token_types else None
    for row, seq in enumerate(sequences):
        n = len(seq)
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, cols] = seq.input_ids
        mask[row, cols] = 1
        if types is not None and seq.token_type_ids is not None:
            types[row, cols] = seq.token_type_ids
    return PaddedBatch(ids, mask, types)
