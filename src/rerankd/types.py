"""Small frozen result types returned by the public API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScoredDocument:
    """One document's result.

    ``score`` is the normalized relevance (the model's activation applied, e.g. sigmoid);
    ``raw_score`` is the value before it (the logit, or the yes-no log-odds). ``document`` (only when
    asked for) is the text of a text document, else the :class:`rerankd.Document` itself.
    """

    index: int
    score: float
    raw_score: float
    truncated: bool = False
    tokens: int = 0
    document: Any = None
    #: With chunking: how many windows the document was scored as, and which one decided its score.
    chunks: int = 1
    best_chunk: int = 0


@dataclass(frozen=True)
class RerankResult:
    """The documents of one query, best first (or cut to ``top_n``)."""

    query: Any
    results: list[ScoredDocument] = field(default_factory=list)
    model: str = ""
    total_tokens: int = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)
