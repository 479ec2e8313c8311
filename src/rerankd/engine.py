"""Reranker: validate → tokenize → length-sorted token-budget batches → backend → scores in input order."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from rerankd.backends.base import Backend
from rerankd.batching import BatchLimits, pad_batch, plan_batches
from rerankd.errors import (
    EmptyDocumentsError,
    EmptyQueryError,
    InferenceError,
    InputError,
    InvalidDocumentError,
    RerankdError,
    TooManyDocumentsError,
)
from rerankd.families import Encoded, Family, PreparedRequest
from rerankd.families.base import finite_or_raise
from rerankd.text_checks import check_text
from rerankd.types import RerankResult, ScoredDocument

DEFAULT_MAX_DOCUMENTS = 10_000


@dataclass(frozen=True)
class RequestScores:
    """Per-document scores of one prepared request, in input order."""

    raw: np.ndarray
    normalized: np.ndarray
    truncated: list[bool]
    tokens: list[int]
    total_tokens: int


def validate(query: Any, documents: Any, max_documents: int) -> list[str]:
    """Check a request's shape and return the documents as a list of strings."""
    if not isinstance(query, str):
        raise EmptyQueryError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise EmptyQueryError("query is empty; send the text to rank the documents against")
    check_text(query, "query")
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InvalidDocumentError("documents must be a list of strings")
    if len(documents) == 0:
        raise EmptyDocumentsError("documents is empty; send at least one document to rank")
    if len(documents) > max_documents:
        raise TooManyDocumentsError(
            f"{len(documents)} documents were sent but the limit is {max_documents} per request; "
            "split the request or raise max_documents"
        )
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise InvalidDocumentError(f"document {i} is a {type(doc).__name__}, not text; send strings")
        if not doc.strip():
            raise InvalidDocumentError(f"document {i} is empty; remove it or send its text")
        check_text(doc, f"document {i}")
    return list(documents)


class Reranker:
    """Scores (query, document) pairs with one model, exactly as the model's reference does.

    Example:
        >>> from rerankd import Reranker
        >>> reranker = Reranker.from_pretrained()          # the bundled all-MiniLM-L6-v2, offline
        >>> result = reranker.rank("capital of France", ["Paris is the capital of France.", "Bananas are yellow."])
        >>> result.results[0].index
        0
    """

    def __init__(
        self,
        family: Family,
        backend: Backend,
        *,
        name: str = "",
        batch_limits: BatchLimits | None = None,
        max_documents: int = DEFAULT_MAX_DOCUMENTS,
    ) -> None:
        self.family = family
        self.backend = backend
        self.name = name or str(family.model_dir)
        self.batch_limits = batch_limits or BatchLimits()
        self.max_documents = max_documents
        # One forward pass at a time: backends are not re-entrant, and two passes would only
        # fight over the same cores.
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        backend: str = "torch",
        batch_tokens: int | None = None,
        max_batch_rows: int | None = None,
        max_documents: int = DEFAULT_MAX_DOCUMENTS,
    ) -> "Reranker":
        """Load a reranker from a local directory, a hub id, or (``model=None``) the bundled default.

        Args:
            model: directory (``str`` or ``pathlib.Path``) or hub id; ``None`` for the bundled all-MiniLM-L6-v2.
            revision: hub revision (branch, tag or commit).
            device: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
            dtype: ``auto`` (default: bf16 where the hardware is fast at it, fp16 on MPS, else fp32),
                ``fp32``, ``bf16`` or ``fp16``.
            max_length: tokens per pair; documents are truncated to fit, the query is kept.
            backend: ``torch``, or another registered backend name.
            batch_tokens: padded tokens per forward pass.
        """
        from rerankd.backends.registry import create_backend
        from rerankd.device import default_batch_tokens
        from rerankd.families import load_family
        from rerankd.hub import resolve_model

        model_dir, name = resolve_model(model, revision)
        family = load_family(model_dir, max_length)
        engine_backend = create_backend(backend, family, device=device, dtype=dtype)
        device_name = str(getattr(engine_backend, "device", "cpu"))
        limits = BatchLimits(batch_tokens or default_batch_tokens(device_name), max_batch_rows or BatchLimits().max_rows)
        return cls(family, engine_backend, name=name, batch_limits=limits, max_documents=max_documents)

    # -- the pipeline, in steps the server reuses ---------------------------------------------------

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
    ) -> PreparedRequest:
        """Validate and tokenize one request."""
        docs = validate(query, documents, self.max_documents)
        if instruction is not None:
            check_text(instruction, "instruction")
        return self.family.prepare(query, docs, instruction=instruction, max_doc_tokens=max_doc_tokens)

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        """One forward pass over sequences (already grouped into one batch by the caller)."""
        batch = pad_batch(sequences, self.family.pad_token_id, self.family.padding_side, self.family.uses_token_type_ids)
        with self._lock:
            try:
                out = self.backend.run(batch)
            except RerankdError:
                raise
            except Exception as exc:  # noqa: BLE001 - any backend failure becomes one error kind
                raise InferenceError(f"the {self.backend.name} backend failed on a batch of {len(sequences)}: {type(exc).__name__}") from exc
        return finite_or_raise(np.asarray(out, dtype=np.float64))

    def run_sequences(self, sequences: Sequence[Encoded], progress: bool = False) -> np.ndarray:
        """Outputs for any number of sequences, batched by length and token budget, in input order."""
        batches = plan_batches([len(s) for s in sequences], self.batch_limits)
        outputs: np.ndarray | None = None
        for rows in _progress(batches, progress, total_items=len(sequences)):
            out = self.forward([sequences[i] for i in rows])
            if outputs is None:
                outputs = np.zeros((len(sequences),) + out.shape[1:], dtype=np.float64)
            outputs[rows] = out
        assert outputs is not None
        return outputs

    def finish(self, prepared: PreparedRequest, outputs: np.ndarray) -> RequestScores:
        """Turn one request's sequence outputs into raw and normalized document scores."""
        raw = prepared.finish(outputs)
        seqs = [prepared.sequences[i] for i in prepared.doc_sequences]
        return RequestScores(
            raw=raw,
            normalized=self.family.normalize(raw),
            truncated=[s.truncated for s in seqs],
            tokens=[len(s) for s in seqs],
            total_tokens=prepared.total_tokens,
        )

    # -- the public calls ---------------------------------------------------------------------------

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        raw: bool = False,
        max_doc_tokens: int | None = None,
    ) -> list[float]:
        """Scores of the documents, in input order (normalized unless ``raw``)."""
        scores = self.score_many([query], [documents], instruction=instruction, max_doc_tokens=max_doc_tokens)[0]
        return [float(x) for x in (scores.raw if raw else scores.normalized)]

    def score_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        progress: bool = False,
    ) -> list[RequestScores]:
        """Score several (query, documents) requests at once; their pairs share batches."""
        if len(queries) != len(documents):
            raise InputError(f"{len(queries)} queries but {len(documents)} document lists; send one list per query")
        prepared = [
            self.prepare(q, docs, instruction=instruction, max_doc_tokens=max_doc_tokens) for q, docs in zip(queries, documents)
        ]
        flat = [seq for p in prepared for seq in p.sequences]
        outputs = self.run_sequences(flat, progress=progress)
        results, start = [], 0
        for p in prepared:
            end = start + len(p.sequences)
            results.append(self.finish(p, outputs[start:end]))
            start = end
        return results

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        progress: bool = False,
    ) -> RerankResult:
        """The documents ordered best first, cut to ``top_n``."""
        return self.rank_many(
            [query], [documents], top_n=top_n, return_documents=return_documents,
            instruction=instruction, max_doc_tokens=max_doc_tokens, progress=progress,
        )[0]

    def rank_many(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        progress: bool = False,
    ) -> list[RerankResult]:
        """:meth:`rank` for many queries, their pairs batched together."""
        if top_n is not None and top_n < 0:
            raise InputError(f"top_n must be 0 or more, got {top_n}")
        all_scores = self.score_many(queries, documents, instruction=instruction, max_doc_tokens=max_doc_tokens, progress=progress)
        return [
            ranked(q, docs, s, top_n=top_n, return_documents=return_documents, model=self.name)
            for q, docs, s in zip(queries, documents, all_scores)
        ]

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, **self.family.describe(), **self.backend.describe(),
                "batch_tokens": self.batch_limits.max_tokens, "max_documents": self.max_documents}


def ranked(
    query: str,
    documents: Sequence[str],
    scores: RequestScores,
    *,
    top_n: int | None = None,
    return_documents: bool = False,
    model: str = "",
) -> RerankResult:
    """Order one request's documents best first (ties keep input order) and cut to ``top_n``."""
    order = sorted(range(len(documents)), key=lambda i: (-scores.normalized[i], -scores.raw[i], i))
    if top_n:
        order = order[:top_n]
    results = [
        ScoredDocument(
            index=i,
            score=float(scores.normalized[i]),
            raw_score=float(scores.raw[i]),
            truncated=scores.truncated[i],
            tokens=scores.tokens[i],
            document=documents[i] if return_documents else None,
        )
        for i in order
    ]
    return RerankResult(query=query, results=results, model=model, total_tokens=scores.total_tokens)


def _progress(batches: list[list[int]], enabled: bool, total_items: int) -> Iterable[list[int]]:
    if not enabled:
        yield from batches
        return
    from tqdm import tqdm

    with tqdm(total=total_items, unit="seq", desc="scoring", leave=False) as bar:
        for rows in batches:
            yield rows
            bar.update(len(rows))
