"""Rerank first-stage candidates with any rerankd model, chunk by chunk, with a resumable score cache.

Queries are cut into fixed chunks of about ``chunk_pairs`` (query, document) pairs, in sorted query
order; each chunk is scored with one :meth:`Reranker.score_many` call (its pairs share batches) and
appended to the cache as ONE JSON line, flushed and fsynced. A run killed mid-way therefore keeps
every finished chunk, and a torn last line is dropped on the next start. Because the chunks are the
same on every start, a resumed run scores exactly the batches an uninterrupted run would, so the
two produce the same run file.

The cache (:class:`rerankd.score_cache.ScoreCache`) records the model's fingerprint, the instruction
and a hash of the queries and documents; a cache written with other settings is refused, naming the
field, never mixed in.

Example:
    >>> reranker = Reranker.from_pretrained("cross-encoder/ms-marco-MiniLM-L-6-v2")     # doctest: +SKIP
    >>> outcome = rerank(reranker, data.queries, data.corpus, bm25_run, depth=100,
    ...                  cache_path="out/scores.jsonl")                                   # doctest: +SKIP
    >>> outcome.run["1"]                                                                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from rerankd.errors import InputError
from rerankd.evaluation.datasets import Doc, Run
from rerankd.evaluation.first_stage import corpus_fingerprint, embed_texts
from rerankd.evaluation.metrics import ranking
from rerankd.score_cache import ScoreCache, score_settings

DEFAULT_CHUNK_PAIRS = 1024


@dataclass
class RerankOutcome:
    """The reranked run (raw model scores) and how much of it was scored now versus read from cache."""

    run: Run
    pairs: int
    pairs_scored: int
    seconds: float

    @property
    def pairs_per_s(self) -> float | None:
        """Throughput of the pairs scored in this call (``None`` when all came from the cache)."""
        return self.pairs_scored / self.seconds if self.pairs_scored and self.seconds > 0 else None


def data_fingerprint(queries: Mapping[str, str], corpus: Mapping[str, Doc]) -> str:
    """A hash of the query texts and the documents, so a cache is never reused on other data."""
    digest = hashlib.sha256(corpus_fingerprint(dict(corpus)).encode())
    for qid in sorted(queries):
        for part in (qid, queries[qid]):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part.encode("utf-8"))
    return digest.hexdigest()[:24]


def candidate_lists(candidates: Run, depth: int | None) -> dict[str, list[str]]:
    """Each query's candidate ids best first (trec_eval's order), cut to ``depth``."""
    return {qid: ranking(docs)[:depth] for qid, docs in candidates.items()}


def chunks(qids: list[str], sizes: Mapping[str, int], chunk_pairs: int) -> Iterator[list[str]]:
    """Consecutive groups of queries holding about ``chunk_pairs`` pairs each (at least one query)."""
    group: list[str] = []
    pairs = 0
    for qid in qids:
        group.append(qid)
        pairs += sizes[qid]
        if pairs >= chunk_pairs:
            yield group
            group, pairs = [], 0
    if group:
        yield group


def rerank(
    reranker: Any,
    queries: Mapping[str, str],
    corpus: Mapping[str, Doc],
    candidates: Run,
    *,
    depth: int | None = 100,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
    cache_path: str | Path | None = None,
    instruction: str | None = None,
    max_doc_tokens: int | None = None,
    progress: bool = True,
    label: str = "rerank",
    chunking: Any = None,
    engine: Any = None,
) -> RerankOutcome:
    """Rerank each query's top-``depth`` candidates; returns raw model scores (higher is better).

    Documents whose title and text are both empty cannot be scored; they are kept, ranked below
    every scored candidate of their query, so Recall@depth is the first stage's.

    ``engine`` scores the chunks: ``None`` scores them here, one after another; a
    :class:`ChunkEngine` such as :class:`rerankd.ray.data.RayDataEngine` may score them elsewhere
    and yield them in any order (each is cached as it arrives, the run is sorted when written).
    """
    if chunk_pairs < 1:
        raise InputError(f"chunk_pairs must be at least 1, got {chunk_pairs}")
    lists = candidate_lists({q: d for q, d in candidates.items() if q in queries and d}, depth)
    for qid in lists:
        if not queries[qid].strip():
            raise InputError(f"query {qid!r} is empty; remove it from the queries or give it text")
        missing = [d for d in lists[qid] if d not in corpus]
        if missing:
            raise InputError(f"the candidates of query {qid!r} name document {missing[0]!r}, which is not in the corpus")
    _pin_threads(reranker)  # a resumed run, or one spread over actors, must equal a fresh one bit for bit
    cache = None
    if cache_path is not None:
        header = {**score_settings(reranker, instruction=instruction, max_doc_tokens=max_doc_tokens, chunking=chunking),
                  "data": data_fingerprint({q: queries[q] for q in lists}, corpus)}
        cache = ScoreCache(cache_path, header)
    qids = sorted(lists)
    total = sum(len(v) for v in lists.values())
    done = {q for q in qids if cache is not None and cache.has(q, lists[q])}
    scored, seconds = 0, 0.0
    scores: Run = {q: {d: cache.scores[q][d] for d in lists[q]} for q in done} if cache else {}
    todo = [ChunkTask(index, {q: queries[q] for q in group if q not in done},
                      {q: lists[q] for q in group if q not in done},
                      {d: corpus[d].document() for q in group if q not in done for d in lists[q]})
            for index, group in enumerate(chunks(qids, {q: len(lists[q]) for q in qids}, chunk_pairs))]
    todo = [task for task in todo if task.lists]
    from tqdm import tqdm

    scorer = engine or LocalEngine()
    with tqdm(total=total, initial=sum(len(lists[q]) for q in done), unit="pair", desc=label, disable=not progress) as bar:
        start = time.perf_counter()
        for chunk in scorer.score(reranker, todo, ChunkOptions(instruction, max_doc_tokens, chunking)):
            if cache is not None:
                cache.add(chunk)
            scores.update(chunk)
            pairs = sum(len(docs) for docs in chunk.values())
            scored += pairs
            bar.update(pairs)
        seconds = time.perf_counter() - start
    return RerankOutcome(run=scores, pairs=total, pairs_scored=scored, seconds=seconds)


@dataclass(frozen=True)
class ChunkTask:
    """One chunk to score: its queries, their candidate lists, and every document named as the reranker
    reads it (its text, or ``{"image": path, "text": ...}`` in an image corpus: plain JSON for Ray)."""

    index: int
    queries: dict[str, str]
    lists: dict[str, list[str]]
    texts: dict[str, Any]


@dataclass(frozen=True)
class ChunkOptions:
    """The per-call settings every chunk is scored with (part of the score cache's header)."""

    instruction: str | None = None
    max_doc_tokens: int | None = None
    chunking: Any = None


class LocalEngine:
    """Scores the chunks in this process, in order (the default engine of :func:`rerank`)."""

    def score(self, reranker: Any, tasks: list[ChunkTask], options: ChunkOptions) -> Iterator[Run]:
        memo: dict[str, np.ndarray] = {}
        for task in tasks:
            yield score_chunk(reranker, task, options, memo)


def score_chunk(reranker: Any, task: ChunkTask, options: ChunkOptions, memo: dict[str, np.ndarray]) -> Run:
    """One chunk's scores: one ``score_many`` call (its pairs share batches), or bi-encoder cosines.

    Every engine scores a chunk through this function, so where it runs does not change its scores.
    """
    return _score_chunk(reranker, task.queries, task.texts, task.lists, options.instruction, options.max_doc_tokens,
                        memo, options.chunking)


def _score_chunk(
    reranker: Any,
    queries: Mapping[str, str],
    documents: Mapping[str, Any],
    lists: dict[str, list[str]],
    instruction: str | None,
    max_doc_tokens: int | None,
    memo: dict[str, np.ndarray],
    chunking: Any = None,
) -> Run:
    texts = {q: [d for d in docs if _has_content(documents[d])] for q, docs in lists.items()}
    qids = [q for q in lists if texts[q]]
    if reranker.family.kind == "bi-encoder" and chunking is None:
        raw = _bi_encoder_scores(reranker, queries, documents, {q: texts[q] for q in qids}, max_doc_tokens, memo)
    else:
        results = reranker.score_many([queries[q] for q in qids], [[documents[d] for d in texts[q]] for q in qids],
                                      instruction=instruction, max_doc_tokens=max_doc_tokens, chunking=chunking or False)
        raw = {q: r.raw for q, r in zip(qids, results)}
    chunk: Run = {}
    for qid, docs in lists.items():
        scored = {d: float(s) for d, s in zip(texts[qid], raw.get(qid, []))}
        floor = min(scored.values(), default=0.0) - 1.0
        chunk[qid] = {d: scored.get(d, floor) for d in docs}
    return chunk


def _bi_encoder_scores(
    reranker: Any,
    queries: Mapping[str, str],
    documents: Mapping[str, str],
    texts: dict[str, list[str]],
    max_doc_tokens: int | None,
    memo: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Cosine scores, each distinct document embedded once per run (a top-100 repeats documents a lot)."""
    new = sorted({d for docs in texts.values() for d in docs if d not in memo})
    if new:
        memo.update(zip(new, embed_texts(reranker, [documents[d] for d in new], max_doc_tokens)))
    qids = list(texts)
    query_vectors = embed_texts(reranker, [queries[q] for q in qids])
    return {q: np.stack([memo[d] for d in texts[q]]).astype(np.float64) @ query_vectors[i].astype(np.float64)
            for i, q in enumerate(qids)}


def _pin_threads(reranker: Any) -> None:
    pin = getattr(reranker, "pin_threads", None)  # a Reranker, or a test's stand-in scorer
    if pin is not None:
        pin()


def _has_content(document: Any) -> bool:
    """A text with more than whitespace, or an image document (see ``Doc.document``)."""
    return bool(document.strip()) if isinstance(document, str) else bool(document)
