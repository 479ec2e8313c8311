"""The one path a request takes, from validation to ranked result.

::

    validate → cache lookup → prepare → schedule batches → backend → finish → rank

:class:`Pipeline` owns every step. The offline API (:class:`rerankd.Reranker`) and the server both
go through it; they differ only in who schedules batches: :meth:`Pipeline.execute` plans them for
one caller's sequences, the server's cross-request scheduler plans them over every waiting request
and calls :meth:`Pipeline.forward` for each. Limits (documents, tokens per request, truncation) are
decided here and nowhere else.

With a result cache (:mod:`rerankd.cache`), a request's pairs are looked up before anything is
tokenized: only the misses are prepared and scored, identical pairs in flight in other requests are
scored once (this request waits for them), and the finished raw scores are stored. With chunking
(:mod:`rerankd.chunking`), a long document is prepared as several windows and ``finish`` aggregates
them back into one score.

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
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from rerankd.backends.base import Backend
from rerankd.batching import BatchLimits, batch_cost, plan_batches
from rerankd.cache.inflight import InFlight
from rerankd.chunking import ChunkSettings, aggregate, windows
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
from rerankd.gpu_memory import SequenceTooLargeError, TokenBudget, forward_within_memory
from rerankd.families.base import finite_or_raise
from rerankd.media.settings import MediaSettings
from rerankd.text_checks import check_text
from rerankd.types import RerankResult, ScoredDocument

DEFAULT_MAX_DOCUMENTS = 10_000


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for. The server sets these from its flags; the offline API keeps the defaults.

    Attributes:
        max_documents: documents per request.
        max_request_tokens: tokens of one request after tokenization (``None``: no cap).
        max_pairs: (query, document window) pairs of one request, every chunk counted (``None``: no cap).
    """

    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_request_tokens: int | None = None
    max_pairs: int | None = None

    def __post_init__(self) -> None:
        if self.max_documents < 1:
            raise InputError(f"max_documents must be at least 1, got {self.max_documents}")
        for name in ("max_request_tokens", "max_pairs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class Request:
    """One validated (query, documents) request and the settings that change its scores.

    Attributes:
        truncate: cut documents that do not fit the model's input (``False``: refuse them).
        chunking: score long documents as windows (``None``: truncate them).
        media: where this request's images and videos may come from and how videos are sampled
            (``None``: the pipeline's :attr:`Pipeline.media`).
    """

    query: Document
    documents: tuple[Document, ...]
    instruction: str | None = None
    max_doc_tokens: int | None = None
    truncate: bool = True
    chunking: ChunkSettings | None = None
    media: MediaSettings | None = None

    def score_settings(self) -> dict[str, Any]:
        """The per-request settings that change a score (part of a result-cache key)."""
        settings = {"instruction": self.instruction, "max_doc_tokens": self.max_doc_tokens,
                    "chunking": self.chunking.settings() if self.chunking else None}
        if self.media is not None and self.media.settings() != MediaSettings().settings():
            settings["media"] = self.media.settings()  # only when not the defaults: text keys stay as they were
        return settings


@dataclass(frozen=True)
class RequestScores:
    """Per-document scores of one request, in input order.

    ``chunks[i]`` is how many windows document ``i`` was scored as, ``best_chunk[i]`` the one that
    decided its score (0 without chunking).
    """

    raw: np.ndarray
    normalized: np.ndarray
    truncated: list[bool]
    tokens: list[int]
    total_tokens: int
    chunks: list[int] | None = None
    best_chunk: list[int] | None = None


@dataclass
class Plan:
    """A request ready for inference: the sequences to run, and how to read their outputs back.

    ``scored`` are the document indices the sequences score (the cache misses this request owns);
    ``owners[k]`` is the position in ``scored`` of the k-th prepared document (a window of it, with
    chunking); ``cut[j]`` says chunking left tokens of ``scored[j]`` past its last window.
    """

    request: Request
    prepared: PreparedRequest | None
    scored: list[int]
    owners: list[int]
    cut: list[bool]
    lookup: Any = None

    @property
    def sequences(self) -> list[Encoded]:
        return self.prepared.sequences if self.prepared is not None else []

    @property
    def tokens(self) -> int:
        return self.prepared.total_tokens if self.prepared is not None else 0

    @property
    def waits(self) -> bool:
        """Whether finishing waits on pairs other requests are scoring (it may block)."""
        return bool(self.lookup is not None and self.lookup.waiting)


class ScoreObserver(Protocol):
    """Told every finished request's raw scores (a :class:`rerankd.drift.DriftMonitor` is one)."""

    def observe(self, raw_scores: np.ndarray) -> Any: ...


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
        cache: Any = None,
        fingerprint: Mapping[str, str] | None = None,
        chunking: ChunkSettings | None = None,
        media: MediaSettings | None = None,
    ) -> None:
        self.family = family
        self.backend = backend
        self.name = name or str(family.model_dir)
        # Shared by every view of this pipeline (with_limits): an OOM lowers the budget for all of them.
        self.budget = TokenBudget(batch_limits or BatchLimits())
        self.limits = limits or RequestLimits()
        self.observers = list(observers)
        #: A :class:`rerankd.cache.ResultCache` (``None``: off) and the fingerprint its keys hold.
        self.cache = cache
        self.fingerprint = dict(fingerprint or {})
        #: How long documents are handled when a request does not say (``None``: truncated).
        self.chunking = chunking
        #: Media policy and video sampling for requests that bring none of their own: permissive for
        #: the Python API; a server passes its strict policy (``MediaSettings(policy=...)``).
        self.media = media or MediaSettings.default()
        self._lock = threading.Lock()
        # Made here, not on first use: two first requests racing to make it would each get their own
        # registry and score the same pair twice.
        self._inflight = InFlight()

    def with_limits(self, limits: RequestLimits, *, observers: Sequence[ScoreObserver] | None = None,
                    cache: Any = None, fingerprint: Mapping[str, str] | None = None,
                    chunking: ChunkSettings | None = None, media: MediaSettings | None = None) -> "Pipeline":
        """The same model, family, backend and forward lock under the server's limits, observers, cache,
        long-document policy and media settings."""
        view = copy.copy(self)
        view.limits = limits
        view.observers = list(self.observers if observers is None else observers)
        view.cache = cache if cache is not None else self.cache
        view.fingerprint = dict(fingerprint or self.fingerprint)
        view.chunking = chunking if chunking is not None else self.chunking
        view.media = media if media is not None else self.media
        view._inflight = InFlight()
        return view

    @property
    def batch_limits(self) -> BatchLimits:
        """How big one forward pass may be (lowered for good when a batch runs out of GPU memory)."""
        return self.budget.limits

    @batch_limits.setter
    def batch_limits(self, limits: BatchLimits) -> None:
        self.budget.limits = limits

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
        chunking: ChunkSettings | bool | None = None,
        media: MediaSettings | None = None,
    ) -> Request:
        """Check a request's shape, its modalities and its document count.

        ``chunking``: ``True`` for the default windows, settings of its own, ``False`` to truncate,
        ``None`` for the pipeline's policy. ``media``: this request's media settings (``None``: the
        pipeline's; build one with ``pipeline.media.with_sampling(fps, max_frames)``).
        """
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
        if media is not None and (media.fps, media.max_frames) != (self.media.fps, self.media.max_frames):
            # A request's own sampling is refused up front when over the policy's caps (a video file
            # would be refused when read; a frame list, or no video at all, would never be checked).
            media.policy.check_video_request(media.fps, media.max_frames, "the request")
        if chunking is None:
            chunking = self.chunking
        elif chunking is True:
            chunking = self.chunking or ChunkSettings()
        elif chunking is False:
            chunking = None
        return Request(query_doc, tuple(docs), instruction, max_doc_tokens, truncate, chunking, media)

    def check_document_count(self, count: int) -> None:
        """Refuse a request of more documents than :attr:`limits` allows, before any tokenization."""
        if count > self.limits.max_documents:
            raise TooManyDocumentsError(
                f"{count} documents were sent but the limit is {self.limits.max_documents} per request "
                "(--max-documents on a server); split the request into several"
            )

    # -- prepare ---------------------------------------------------------------------------------------

    def plan(self, request: Request, *, cache_policy: Any = None) -> Plan:
        """Look the pairs up in the result cache, tokenize the rest, and check them against the limits."""
        lookup = self._lookup(request, cache_policy) if self.cache is not None else None
        scored = lookup.owned if lookup is not None else list(range(len(request.documents)))
        documents, owners, cut = self._windows(request, scored)
        max_pairs = self.limits.max_pairs
        if max_pairs is not None and len(documents) > max_pairs:
            _release(lookup)
            raise InputTooLargeError(
                f"the request is {len(documents)} (query, document) pairs, every chunk counted, but this server takes "
                f"at most {max_pairs} per request (--max-pairs); send fewer documents or fewer chunks per document"
            )
        media = request.media or self.media
        indices = tuple(scored[o] for o in owners)
        if indices != tuple(range(len(indices))):
            media = dataclasses.replace(media, document_indices=indices)  # media errors name the request's index
        try:
            prepared = self.family.prepare(request.query, documents, instruction=request.instruction,
                                           max_doc_tokens=request.max_doc_tokens, media=media) if documents else None
            self._check_tokens(request, prepared, [scored[o] for o in owners])
        except BaseException:
            _release(lookup)
            raise
        return Plan(request, prepared, scored, owners, cut, lookup)

    def _windows(self, request: Request, scored: Sequence[int]) -> tuple[list[Document], list[int], list[bool]]:
        """The documents to prepare: each scored one whole, or as windows when chunking is on."""
        if request.chunking is None:
            return [request.documents[i] for i in scored], list(range(len(scored))), [False] * len(scored)
        settings = request.chunking
        budget = self.family.document_budget(request.query, request.instruction)
        if request.max_doc_tokens is not None:
            budget = min(budget, request.max_doc_tokens)
        documents: list[Document] = []
        owners: list[int] = []
        cut: list[bool] = []
        for position, index in enumerate(scored):
            document = request.documents[index]
            ids = self.family.text_token_ids(document.as_text()) if document.modalities == {"text"} else []
            spans = windows(len(ids), budget, settings.overlap, settings.max_chunks) if ids else [(0, 0)]
            cut.append(bool(ids) and spans[-1][1] < len(ids))
            if len(spans) == 1:
                documents.append(document)  # fits, or is not text: scored whole, exactly as without chunking
            else:
                documents.extend(Document.text(self.family.decode(ids[a:b])) for a, b in spans)
            owners.extend([position] * len(spans))
        return documents, owners, cut

    def _check_tokens(self, request: Request, prepared: PreparedRequest | None, doc_of: list[int]) -> None:
        if prepared is None:
            return
        cap = self.limits.max_request_tokens
        cost = sum(s.planned_cost for s in prepared.sequences)
        if cap is not None and cost > cap:
            raise InputTooLargeError(
                f"the request is {cost} tokens after tokenization but this server takes at most {cap} per request "
                "(--max-request-tokens); send fewer or shorter documents"
            )
        if not request.truncate:
            cut = [doc_of[i] for i, seq in enumerate(prepared.doc_sequences) if prepared.sequences[seq].truncated]
            if cut:
                raise InputTooLargeError(
                    f"document {cut[0]} does not fit the model's {self.family.max_length}-token input "
                    f"({len(cut)} document(s) would be truncated); send truncate: true or shorter texts"
                )

    def prepare(self, query: Any, documents: Any, **settings: Any) -> Plan:
        """:meth:`request` then :meth:`plan`: a request from raw inputs to the sequences to run."""
        return self.plan(self.request(query, documents, **settings))

    # -- schedule and run ---------------------------------------------------------------------------------

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        """One batch through the backend (the caller grouped it), outputs checked finite.

        Out of device memory, the batch is split and retried and the budget lowered
        (:func:`rerankd.gpu_memory.forward_within_memory`); a sequence that does not fit alone
        raises :class:`~rerankd.gpu_memory.SequenceTooLargeError` with its position in ``sequences``.
        """
        with self._lock:
            try:
                out = forward_within_memory(
                    self.backend.forward, sequences, self.budget,
                    cost=lambda rows: batch_cost([s.planned_cost for s in rows], padded=self.pads),
                    device=str(getattr(self.backend, "device", "")), concat=np.concatenate)
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
        limits = self.batch_limits
        batches = plan_batches([s.planned_cost for s in sequences], limits, padded=self.pads)
        outputs: np.ndarray | None = None
        for k, rows in enumerate(_progress(batches, progress, total_items=len(sequences))):
            if self.batch_limits != limits:  # an OOM lowered the budget: plan what is left again
                limits = self.batch_limits
                left = [i for b in batches[k:] for i in b]
                batches[k:] = [[left[j] for j in b] for b in
                               plan_batches([sequences[i].planned_cost for i in left], limits, padded=self.pads)]
                rows = batches[k]
            try:
                out = self.forward([sequences[i] for i in rows])
            except SequenceTooLargeError as exc:  # name it by its place among the caller's sequences
                index = rows[exc.position]
                raise SequenceTooLargeError(f"sequence {index}: {exc}", index, exc.tokens) from None
            if outputs is None:
                outputs = np.zeros((len(sequences),) + out.shape[1:], dtype=np.float64)
            outputs[rows] = out
        assert outputs is not None
        return outputs

    # -- finish and rank -----------------------------------------------------------------------------------

    def finish(self, plan: Plan, outputs: np.ndarray) -> RequestScores:
        """One request's sequence outputs → raw and normalized scores per document.

        Windows are aggregated into their document's raw score; cached pairs are filled in, the new
        ones stored, and pairs that other requests were scoring are waited for (so this may block when
        :attr:`Plan.waits`); the activation comes last.
        """
        n = len(plan.request.documents)
        raw = np.zeros(n, dtype=np.float64)
        truncated, tokens, chunks, best = [False] * n, [0] * n, [1] * n, [0] * n
        if plan.prepared is not None:
            window_raw = np.asarray(plan.prepared.finish(outputs), dtype=np.float64)
            seqs = [plan.prepared.sequences[i] for i in plan.prepared.doc_sequences]
            members: list[list[int]] = [[] for _ in plan.scored]
            for k, owner in enumerate(plan.owners):
                members[owner].append(k)
            how = plan.request.chunking.aggregation if plan.request.chunking else "first"
            for j, index in enumerate(plan.scored):
                raw[index], best[index] = aggregate(window_raw[members[j]], how)
                truncated[index] = plan.cut[j] or any(seqs[k].truncated for k in members[j])
                tokens[index] = sum(len(seqs[k]) for k in members[j])
                chunks[index] = len(members[j])
        if plan.lookup is not None:
            self._settle(plan, raw, truncated, tokens)
        scores = RequestScores(
            raw=raw,
            normalized=self.family.normalize(raw),
            truncated=truncated,
            tokens=tokens,
            total_tokens=plan.tokens,
            chunks=chunks if plan.request.chunking else None,
            best_chunk=best if plan.request.chunking else None,
        )
        for observer in self.observers:
            observer.observe(scores.raw)
        return scores

    # -- the result cache ---------------------------------------------------------------------------------

    def _lookup(self, request: Request, policy: Any) -> "CacheLookup":
        from rerankd.cache import DEFAULT_POLICY, PairKeys

        policy = policy or DEFAULT_POLICY
        keys = PairKeys(self.fingerprint, request.score_settings()).keys(
            request.query.digest(), [d.digest() for d in request.documents])
        cacheable = [_content_addressed(d) for d in request.documents]
        found = self.cache.lookup([k for k, ok in zip(keys, cacheable) if ok], policy=policy)
        hits = dict(zip([i for i, ok in enumerate(cacheable) if ok], found))
        misses = [i for i, ok in enumerate(cacheable) if ok and hits.get(i) is None]
        claim = self._inflight.claim(dict.fromkeys(keys[i] for i in misses))
        mine = set(claim.owned)
        owned = [i for i in range(len(keys)) if not cacheable[i] or (hits.get(i) is None and keys[i] in mine)]
        waiting = {i: keys[i] for i in misses if keys[i] in claim.waiting}
        return CacheLookup(keys, {i: h for i, h in hits.items() if h is not None}, owned, waiting, claim, policy,
                           cacheable)

    def _settle(self, plan: Plan, raw: np.ndarray, truncated: list[bool], tokens: list[int]) -> None:
        """Fill in cached pairs, store the new ones, wait for those in flight elsewhere."""
        from rerankd.cache import CachedScore

        lookup = plan.lookup
        mine = set(lookup.claim.owned)
        fresh = {lookup.keys[i]: CachedScore(float(raw[i]), truncated[i], tokens[i])
                 for i in plan.scored if lookup.cacheable[i] and lookup.keys[i] in mine}
        try:
            self.cache.store(fresh, policy=lookup.policy)
        finally:
            lookup.claim.settle(fresh)  # store first: a pair is never neither in flight nor cached
        answered = dict(lookup.hits)
        if lookup.waiting:
            theirs, _ = lookup.claim.wait(timeout=INFLIGHT_WAIT_S)
            answered.update({i: theirs[k] for i, k in lookup.waiting.items() if k in theirs})
            left = [i for i in lookup.waiting if i not in answered]
            if left:  # their owner failed or was too slow: score them here
                answered.update(self._score_now(plan.request, left))
        for i, entry in answered.items():
            raw[i], truncated[i], tokens[i] = entry.raw, entry.truncated, entry.tokens

    def _score_now(self, request: Request, indices: list[int]) -> dict[int, Any]:
        from rerankd.cache import CachedScore

        sub = Request(request.query, tuple(request.documents[i] for i in indices), request.instruction,
                      request.max_doc_tokens, request.truncate, request.chunking, request.media)
        uncached = copy.copy(self)
        uncached.cache = None
        scores = uncached.score_many([sub])[0]
        return {i: CachedScore(float(scores.raw[j]), scores.truncated[j], scores.tokens[j]) for j, i in enumerate(indices)}

    def abandon(self, plan: Plan) -> None:
        """A planned request failed before :meth:`finish`: release its claim on in-flight pairs."""
        _release(plan.lookup)

    def score_many(self, requests: Sequence[Request], progress: bool = False) -> list[RequestScores]:
        """Several requests at once (offline): their sequences share batches."""
        plans: list[Plan] = []
        try:
            for r in requests:
                plans.append(self.plan(r))
            outputs = self.execute([seq for p in plans for seq in p.sequences], progress=progress)
        except BaseException:
            for plan in plans:
                self.abandon(plan)
            raise
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
                chunks=scores.chunks[i] if scores.chunks else 1,
                best_chunk=scores.best_chunk[i] if scores.best_chunk else 0,
            )
            for i in order
        ]
        return RerankResult(query=_returned(request.query), results=results, model=self.name,
                            total_tokens=scores.total_tokens)


#: How long a request waits for pairs another request is scoring before it scores them itself.
INFLIGHT_WAIT_S = 30.0


@dataclass
class CacheLookup:
    """What the result cache said of one request's pairs, and the in-flight claim on its misses."""

    keys: list[str]
    hits: dict[int, Any]
    owned: list[int]
    waiting: dict[int, str]
    claim: Any
    policy: Any
    cacheable: list[bool]


def _release(lookup: CacheLookup | None) -> None:
    """Give up a request's in-flight claim (it failed before scoring): waiters score the pairs themselves."""
    if lookup is not None:
        lookup.claim.fail(InputError("the request that was scoring these pairs failed"))


def _content_addressed(document: Document) -> bool:
    """Whether a document's digest covers its content: text, in-memory media and ``data:`` URIs (what a
    server's clients send inline), not paths or URLs (a file or a remote image may change)."""
    return all(p.modality == "text" or _is_content(p.value) for p in document.parts)


def _is_content(value: Any) -> bool:
    if isinstance(value, str):
        return value[:5].lower() == "data:"
    if hasattr(value, "__fspath__"):
        return False
    if isinstance(value, (list, tuple)):  # a video as frames: content only when every frame is
        return all(_is_content(v) for v in value)
    return True


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
