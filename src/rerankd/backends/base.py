"""The one small interface every backend implements: a padded batch in, one output per row out."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from rerankd.batching import PaddedBatch


@runtime_checkable
class Backend(Protocol):
    """Scores padded batches. ``run`` returns shape (rows,) for pair scorers, (rows, dim) for bi-encoders.

    Implementations must be safe to call from one worker thread at a time; the engine serializes calls.
    """

    name: str

    def run(self, batch: PaddedBatch) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...
