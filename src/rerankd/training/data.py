"""Training examples from a BEIR dataset: a query split, hard negatives from a first stage, and
groups (one positive + sampled negatives) in an order that depends only on (seed, epoch).

The order and the negatives of epoch *e* are drawn from generators seeded with ``(seed, e, ...)``,
never from a global RNG, so a run resumed from a checkpoint sees exactly the batches an
uninterrupted run would have seen.

Example:
    >>> split = split_queries(["q1", "q2", "q3", "q4", "q5"], dev_fraction=0.2, seed=0)
    >>> len(split.train), len(split.dev)
    (4, 1)
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from rerankd.errors import InputError

@dataclass(frozen=True)
class QuerySplit:
    train: list[str]
    dev: list[str]


def split_queries(qids: Sequence[str], dev_fraction: float, seed: int) -> QuerySplit:
    """Hold out a fixed-seed fraction of the queries as a dev split.

    The ids are sorted first, so the split depends only on the set of ids, the fraction and the seed.
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise InputError(f"dev fraction must be in [0, 1), got {dev_fraction}")
    ordered = sorted(set(qids))
    if not ordered:
        raise InputError("the dataset has no queries with relevance judgements to train on")
    rng = np.random.default_rng(seed)
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    n_dev = int(round(len(ordered) * dev_fraction))
    if dev_fraction > 0 and n_dev == 0:
        n_dev = 1
    return QuerySplit(train=sorted(shuffled[n_dev:]), dev=sorted(shuffled[:n_dev]))


def positives(qrels: Mapping[str, Mapping[str, int]], qid: str) -> list[str]:
    """Documents judged relevant (grade > 0) for a query, in a stable order."""
    return sorted(d for d, grade in qrels.get(qid, {}).items() if grade > 0)


def judged(qrels: Mapping[str, Mapping[str, int]], qid: str) -> set[str]:
    return set(qrels.get(qid, {}))


def ranked_ids(run: Mapping[str, Mapping[str, float]], qid: str, depth: int | None = None) -> list[str]:
    """A query's candidates, best first (ties broken by id so the order is stable)."""
    items = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return [d for d, _ in items[:depth]]


@dataclass(frozen=True)
class TrainingQuery:
    """One query's positives and the pool its hard negatives are drawn from (judged docs excluded)."""

    qid: str
    positives: list[str]
    pool: list[str]


def training_queries(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], qids: Sequence[str], pool_depth: int
) -> list[TrainingQuery]:
    """Hard-negative pools from the first stage: its top ``pool_depth`` minus every judged document.

    Judged-non-relevant documents are excluded too: in BEIR qrels a grade-0 entry can still be
    topical, and a negative that is really a positive teaches the wrong thing.
    """
    out = []
    for qid in sorted(qids):
        pos = positives(qrels, qid)
        if not pos:
            continue
        seen = judged(qrels, qid)
        pool = [d for d in ranked_ids(run, qid, pool_depth) if d not in seen]
        out.append(TrainingQuery(qid, pos, pool))
    if not out:
        raise InputError("no training query has a relevant document; check the qrels file and the split")
    return out


#: Ids of the synthetic training queries and their documents made by :func:`title_queries` and
#: :func:`sentence_queries`: ``title:`` / ``sentence:`` + the source id for the query, ``body:`` + an id
#: for an abstract without its title, ``rest:`` + the source id for the source without the sentence.
TITLE_QUERY_PREFIX = "title:"
BODY_DOC_PREFIX = "body:"
SENTENCE_QUERY_PREFIX = "sentence:"
REST_DOC_PREFIX = "rest:"
#: Sentences of this many words stand for their document: shorter ones are too vague, longer ones do
#: not read like a query (SciFact's claims are ~12 words) and would crowd the document out of the pair.
MIN_SENTENCE_WORDS, MAX_SENTENCE_WORDS = 8, 32
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


@dataclass(frozen=True)
class CorpusQueries:
    """Training queries made from the corpus itself: texts and training pools (see :func:`title_queries`)."""

    queries: dict[str, str]
    docs: dict[str, str]
    training: list[TrainingQuery]


def title_queries(
    corpus: Mapping[str, Any], count: int, seed: int, exclude_docs: set[str], run_for: Any, pool_depth: int
) -> CorpusQueries:
    """Up to ``count`` documents' titles as queries whose positive is the same document's abstract.

    A small qrels file (SciFact: ~650 training claims) is not enough to teach a cross-encoder what
    a relevant abstract looks like; the corpus itself has thousands of (title, abstract) pairs in
    the same domain. The title is removed from every document of these groups (``body:`` ids),
    positive and negatives alike: with it, the positive would contain the query verbatim, and a
    title present only on negatives would be a shortcut. Negatives are the first stage's top
    ``pool_depth`` for the title, the source document excluded. Documents in ``exclude_docs`` (those
    judged for dev queries) are never a source, so the dev split stays unseen.

    Args:
        corpus: doc id → document with ``.title`` and ``.text``.
        count: how many titles to use (fewer if the corpus has fewer eligible documents).
        seed: which documents are drawn (numpy permutation of the sorted eligible ids).
        exclude_docs: documents that must not be a source.
        run_for: ``(queries dict, depth) → run`` of the first stage (e.g. ``BM25Retriever.search``).
        pool_depth: hard negatives are drawn from this many first-stage candidates.
    """
    def title(doc_id: str, doc: Any) -> tuple[str, str] | None:
        return (doc.title.strip(), doc.text) if doc.title.strip() and doc.text.strip() else None

    made = _corpus_queries(corpus, count, seed, exclude_docs, run_for, pool_depth, TITLE_QUERY_PREFIX, title, salt=1)
    training = [TrainingQuery(q.qid, [BODY_DOC_PREFIX + d for d in q.positives], [BODY_DOC_PREFIX + d for d in q.pool])
                for q in made.training]
    used = {doc for q in training for doc in (*q.positives, *q.pool)}
    return CorpusQueries(made.queries, {b: corpus[b[len(BODY_DOC_PREFIX):]].text for b in sorted(used)}, training)


def split_sentences(text: str) -> list[str]:
    """An abstract's sentences: split after ., ! or ? followed by a space and a capital, digit or "("."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def sentence_queries(
    corpus: Mapping[str, Any], count: int, seed: int, exclude_docs: set[str], run_for: Any, pool_depth: int
) -> CorpusQueries:
    """Up to ``count`` documents' sentences as queries whose positive is the rest of the same document.

    Claims and questions read like one sentence of the abstract that answers them, and every abstract
    holds several: one per source document is drawn (of :data:`MIN_SENTENCE_WORDS` to
    :data:`MAX_SENTENCE_WORDS` words, from abstracts of at least two sentences). The sentence is cut
    out of its positive (``rest:`` id: title and the other sentences), so the query is not in it
    verbatim; negatives are the first stage's top ``pool_depth`` documents for the sentence, whole,
    the source excluded. Arguments as :func:`title_queries`; documents in ``exclude_docs`` are never
    a source.
    """
    def sentence(doc_id: str, doc: Any) -> tuple[str, str] | None:
        sentences = split_sentences(doc.text)
        usable = [i for i, s in enumerate(sentences) if MIN_SENTENCE_WORDS <= len(s.split()) <= MAX_SENTENCE_WORDS]
        if len(sentences) < 2 or not usable:
            return None
        # Drawn from the document's id, so the same seed picks the same sentence whatever else is drawn.
        pick = usable[int(np.random.default_rng([seed, 2, zlib.crc32(doc_id.encode())]).integers(len(usable)))]
        rest = " ".join([doc.title.strip(), *(s for i, s in enumerate(sentences) if i != pick)]).strip()
        return sentences[pick], rest

    made = _corpus_queries(corpus, count, seed, exclude_docs, run_for, pool_depth, SENTENCE_QUERY_PREFIX, sentence, salt=2)
    training = [TrainingQuery(q.qid, [REST_DOC_PREFIX + d for d in q.positives], q.pool) for q in made.training]
    return CorpusQueries(made.queries, {REST_DOC_PREFIX + k: v for k, v in made.docs.items()}, training)


def _corpus_queries(
    corpus: Mapping[str, Any], count: int, seed: int, exclude_docs: set[str], run_for: Any, pool_depth: int,
    prefix: str, make: Any, salt: int,
) -> CorpusQueries:
    """``count`` eligible documents drawn by ``seed``; ``make(id, doc)`` → (query, positive text), or None
    for a document that is not eligible. Training queries ``prefix + id`` have the source as positive and
    the first stage's top ``pool_depth`` for the query, the source excluded, as pool (plain corpus ids;
    the caller maps them); ``docs`` holds each source's positive text under its plain id."""
    if count < 0:
        raise InputError(f"the number of corpus queries must be 0 or more, got {count}")
    made = {d: m for d in sorted(corpus) if d not in exclude_docs and (m := make(d, corpus[d])) is not None}
    eligible = list(made)
    order = np.random.default_rng([seed, salt]).permutation(len(eligible))
    sources = sorted(eligible[int(i)] for i in order[:count])
    queries = {prefix + d: made[d][0] for d in sources}
    run = run_for(queries, pool_depth + 1) if queries else {}  # + 1: the source itself is among them
    training = []
    for d in sources:
        pool = [c for c in ranked_ids(run, prefix + d, pool_depth + 1) if c != d][:pool_depth]
        training.append(TrainingQuery(prefix + d, [d], pool))
    return CorpusQueries(queries, {d: made[d][1] for d in sources}, training)


@dataclass(frozen=True)
class Group:
    """One training list: the query and its documents, the positive (or anchor) first."""

    qid: str
    doc_ids: tuple[str, ...]


@dataclass
class GroupSampler:
    """Groups of 1 positive + ``negatives`` hard negatives; one group per (query, positive) per epoch.

    Negatives come from the query's pool without replacement; a pool that is too small is topped
    up with random corpus documents (never a judged one).
    """

    queries: list[TrainingQuery]
    negatives: int
    corpus_ids: list[str]
    seed: int
    judged_docs: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.negatives < 1:
            raise InputError(f"each group needs at least 1 negative, got {self.negatives}")
        self.corpus_ids = sorted(self.corpus_ids)

    def __len__(self) -> int:
        return sum(len(q.positives) for q in self.queries)

    def epoch(self, epoch: int) -> list[Group]:
        units = [(q, p) for q in self.queries for p in q.positives]
        order = np.random.default_rng([self.seed, epoch]).permutation(len(units))
        groups = []
        for index in order:
            query, positive = units[int(index)]
            rng = np.random.default_rng([self.seed, epoch, int(index)])
            groups.append(Group(query.qid, (positive, *self._negatives(query, rng))))
        return groups

    def _negatives(self, query: TrainingQuery, rng: np.random.Generator) -> list[str]:
        take = min(self.negatives, len(query.pool))
        picked = [query.pool[int(i)] for i in rng.choice(len(query.pool), size=take, replace=False)] if take else []
        excluded = set(picked) | set(query.positives) | self.judged_docs.get(query.qid, set())
        while len(picked) < self.negatives:
            candidate = self.corpus_ids[int(rng.integers(len(self.corpus_ids)))]
            if candidate not in excluded:
                picked.append(candidate)
                excluded.add(candidate)
        return picked


def batches(groups: Sequence[Group], groups_per_batch: int) -> list[list[Group]]:
    """Consecutive slices of an epoch's groups (the last may be smaller)."""
    if groups_per_batch < 1:
        raise InputError(f"groups per batch must be at least 1, got {groups_per_batch}")
    return [list(groups[i : i + groups_per_batch]) for i in range(0, len(groups), groups_per_batch)]
