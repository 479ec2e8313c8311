"""The one path a request takes, from validation to ranked result.

::

    validate → (cache lookup) → prepare → schedule batches → backend → finish → rank

:class:`Pipeline` owns every step. The offline API (:class:`rerankd.Reranker`) and the server both
go through it; they differ only in who schedules batches: :meth:`Pipeline.execute` plans them for
one caller's sequences, the server's cross-request scheduler plans them over every waiting request
and calls :meth:`Pipeline.forward` for each. Limits (documents, tokens per request, truncation) are
decided here and nowhere else.

Example:
    >>> pipeline = Pipeline(family, backend, name="m")                        # doctest: +SKIP
    >>> request = pipeline.request("capital of France", ["Paris.", "Bananas."])  # doctest: +SKIP
    >>> plan = pipeline.plan(request)                                         # doctest: +SKIP
    >>> scores = pipeline.finish(plan, pipeline.execute(plan.sequences))      # doctest: +SKIP
    >>> pipeline.rank(request, scores, top_n=1).results[0].index              # doctest: +SKIP
    0
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from rerankd.backends.base import Backend
from rerankd.batching import BatchLimits, plan_batches
from rerankd.documents import Document, as_document, as_documents, check_modalities
from rerankd.errors import (
    EmptyDocumentsError,
    EmptyQueryError,
    InferenceError,
    InputError,
    InputTooLargeError,
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
class RequestLimits:
    """What one request may ask for. The server sets these from its flags; the offline API keeps the defaults.

    Attributes:
        max_documents: documents per request.
        max_request_tokens: tokens of one request after tokenization (``None``: no cap).
    """

    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_request_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_documents < 1:
            raise InputError(f"max_documents must be at least 1, got {self.max_documents}")
        if self.max_request_tokens is not None and self.max_request_tokens < 1:
            raise InputError(f"max_request_tokens must be at least 1, got {self.max_request_tokens}")


@dataclass(frozen=True)
class Request:
    """One validated (query, documents) request and the settings that change its scores.

    Attributes:
        truncate: cut documents that do not fit the model's input (``False``: refuse them).
    """

    query: Document
    documents: tuple[Document, ...]
    instruction: str | None = None
    max_doc_tokens: int | None = None
    truncate: bool = True


@dataclass(frozen=True)
class RequestScores:
    """Per-document scores of one request, in input order."""

    raw: np.ndarray
    normalized: np.ndarray
    truncated: list[bool]
    tokens: list[int]
    total_tokens: int


@dataclass
class Plan:
    """A request ready for inference: the sequences to run, and how to read their outputs back."""

    request: Request
    prepared: PreparedRequest

    @property
    def sequences(self) -> list[Encoded]:
        return self.prepared.sequences

    @property
    def tokens(self) -> int:
        return self.prepared.total_tokens


class ScoreObserver(Protocol):
    """Told every finished request's raw scores (drift monitoring hooks in here)."""

    def observe(self, model: str, raw: np.ndarray) -> None: ...


class Pipeline:
    """Validation, tokenization, batching, inference and ranking for one model.

    Safe to call from several threads: forward passes are serialized (backends are not re-entrant,
    and two passes would only fight over the same cores).
    """

    def __init__(
        self,
        family: Family,
        backend: Backend,
        *,
        name: str = "",
        batch_limits: BatchLimits | None = None,
        limits: RequestLimits | None = None,
        observers: Sequence[ScoreObserver] = (),
    ) -> None:
        self.family = family
        self.backend = backend
        self.name = name or str(family.model_dir)
        self.batch_limits = batch_limits or BatchLimits()
        self.limits = limits or RequestLimits()
        self.observers = list(observers)
        self._lock = threading.Lock()

    def with_limits(self, limits: RequestLimits) -> "Pipeline":
        """The same model, family, backend and forward lock under other request limits (the server's)."""
        view = copy.copy(self)
        view.limits = limits
        view.observers = list(self.observers)
        return view

    @property
    def pads(self) -> bool:
        """Whether the backend pads its batches (the planner then charges rows × longest row)."""
        return bool(getattr(self.backend, "pads", True))

    # -- validate ------------------------------------------------------------------------------------

    def request(
        self,
        query: Any,
        documents: Any,
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        truncate: bool = True,
    ) -> Request:
        """Check a request's shape, its modalities and its document count."""
        if isinstance(query, str) and not query.strip():
            raise EmptyQueryError("query is empty; send the text to rank the documents against")
        if query is None:
            raise EmptyQueryError("query must be a string, a rerankd.Document or a dict, got NoneType")
        query_doc = as_document(query, "query")
        if isinstance(documents, (str, bytes, dict, Document)) or not isinstance(documents, Sequence):
            raise InvalidDocumentError("documents must be a list (one document per element)")
        if len(documents) == 0:
            raise EmptyDocumentsError("documents is empty; send at least one document to rank")
        self.check_document_count(len(documents))
        docs = as_documents(documents)
        allowed = self.family.modalities
        check_modalities(query_doc, allowed, "query", self.name)
        for i, doc in enumerate(docs):
            check_modalities(doc, allowed, f"document {i}", self.name)
        if instruction is not None:
            check_text(instruction, "instruction")
        if max_doc_tokens is not None and max_doc_tokens < 1:
            raise InputError(f"max_doc_tokens must be at least 1, got {max_doc_tokens}")
        return Request(query_doc, tuple(docs), instruction, max_doc_tokens, truncate)

    def check_document_count(self, count: int) -> None:
        """Refuse a request of more documents than :attr:`limits` allows, before any tokenization."""
        if count > self.limits.max_documents:
            raise TooManyDocumentsError(
                f"{count} documents were sent but the limit is {self.limits.max_documents} per request "
                "(--max-documents on a server); split the request into several"
            )

    # -- prepare ---------------------------------------------------------------------------------------

    def plan(self, request: Request) -> Plan:
        """Tokenize a request and check it against the token and truncation limits."""
        prepared = self.family.prepare(request.query, request.documents, instruction=request.instruction,
                                       max_doc_tokens=request.max_doc_tokens)
        cap = self.limits.max_request_tokens
        cost = sum(s.planned_cost for s in prepared.sequences)
        if cap is not None and cost > cap:
            raise InputTooLargeError(
                f"the request is {cost} tokens after tokenization but this server takes at most {cap} per request "
                "(--max-request-tokens); send fewer or shorter documents"
            )
        if not request.truncate:
            cut = [i for i, seq in enumerate(prepared.doc_sequences) if prepared.sequences[seq].truncated]
            if cut:
                raise InputTooLargeError(
                    f"document {cut[0]} does not fit the model's {self.family.max_length}-token input "
                    f"({len(cut)} document(s) would be truncated); send truncate: true or shorter texts"
                )
        return Plan(request, prepared)

    def prepare(self, query: Any, documents: Any, **settings: Any) -> Plan:
        """:meth:`request` then :meth:`plan`: a request from raw inputs to the sequences to run."""
        return self.plan(self.request(query, documents, **settings))

    # -- schedule and run ---------------------------------------------------------------------------------

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        """One batch through the backend (the caller grouped it), outputs checked finite."""
        with self._lock:
            try:
                out = self.backend.forward(sequences)
            except RerankdError:
                raise
            except Exception as exc:  # noqa: BLE001 - any backend failure becomes one error kind
                raise InferenceError(
                    f"the {self.backend.name} backend failed on a batch of {len(sequences)}: {type(exc).__name__}"
                ) from exc
        return finite_or_raise(np.asarray(out, dtype=np.float64))

    def execute(self, sequences: Sequence[Encoded], progress: bool = False) -> np.ndarray:
        """Outputs for any number of sequences: planned into batches, run, returned in input order."""
        if not sequences:
            return np.zeros((0,), dtype=np.float64)
        batches = plan_batches([s.planned_cost for s in sequences], self.batch_limits, padded=self.pads)
        outputs: np.ndarray | None = None
        for rows in _progress(batches, progress, total_items=len(sequences)):
            out = self.forward([sequences[i] for i in rows])
            if outputs is None:
                outputs = np.zeros((len(sequences),) + out.shape[1:], dtype=np.float64)
            outputs[rows] = out
        assert outputs is not None
        return outputs

    # -- finish and rank -----------------------------------------------------------------------------------

    def finish(self, plan: Plan, outputs: np.ndarray) -> RequestScores:
        """One request's sequence outputs → raw and normalized scores per document."""
        raw = np.asarray(plan.prepared.finish(outputs), dtype=np.float64)
        seqs = [plan.prepared.sequences[i] for i in plan.prepared.doc_sequences]
        scores = RequestScores(
            raw=raw,
            normalized=self.family.normalize(raw),
            truncated=[s.truncated for s in seqs],
            tokens=[len(s) for s in seqs],
            total_tokens=plan.tokens,
        )
        for observer in self.observers:
            observer.observe(self.name, scores.raw)
        return scores

    def score_many(self, requests: Sequence[Request], progress: bool = False) -> list[RequestScores]:
        """Several requests at once (offline): their sequences share batches."""
        plans = [self.plan(r) for r in requests]
        outputs = self.execute([seq for p in plans for seq in p.sequences], progress=progress)
        results, start = [], 0
        for plan in plans:
            end = start + len(plan.sequences)
            results.append(self.finish(plan, outputs[start:end]))
            start = end
        return results

    def rank(self, request: Request, scores: RequestScores, *, top_n: int | None = None,
             return_documents: bool = False) -> RerankResult:
        """Order one request's documents best first (ties keep input order) and cut to ``top_n``."""
        if top_n is not None and top_n < 0:
            raise InputError(f"top_n must be 0 or more, got {top_n}")
        order = sorted(range(len(request.documents)), key=lambda i: (-scores.normalized[i], -scores.raw[i], i))
        if top_n:
            order = order[:top_n]
        results = [
            ScoredDocument(
                index=i,
                score=float(scores.normalized[i]),
                raw_score=float(scores.raw[i]),
                truncated=scores.truncated[i],
                tokens=scores.tokens[i],
                document=_returned(request.documents[i]) if return_documents else None,
            )
            for i in order
        ]
        return RerankResult(query=_returned(request.query), results=results, model=self.name,
                            total_tokens=scores.total_tokens)


def _returned(document: Document) -> Any:
    """What a result echoes: the text of a text document, else the Document itself."""
    return document.as_text() if document.modalities == {"text"} else document


def _progress(batches: list[list[int]], enabled: bool, total_items: int) -> Iterable[list[int]]:
    if not enabled:
        yield from batches
        return
    from tqdm import tqdm

    with tqdm(total=total_items, unit="seq", desc="scoring", leave=False) as bar:
        for rows in batches:
            yield rows
            bar.update(len(rows))
