"""The one small interface every backend implements: a batch of sequences in, one output per sequence out."""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from rerankd.families import Encoded


@runtime_checkable
class Backend(Protocol):
    """Scores batches of sequences. ``forward`` returns shape (rows,) for pair scorers, (rows, dim) for bi-encoders.

    A backend owns its collation: a padded backend pads the batch itself, a packed one lays the
    sequences end to end. ``pads`` says which, so the batch planner charges padding only to the
    backends that pay for it (text-embeddings-inference's ``Backend::is_padded``).

    Implementations must be safe to call from one worker thread at a time; the pipeline serializes calls.
    """

    name: str
    pads: bool

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...
