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


#: Ids of the synthetic training queries and abstract-only documents made by :func:`title_queries`.
TITLE_QUERY_PREFIX = "title:"
BODY_DOC_PREFIX = "body:"


@dataclass(frozen=True)
class TitleQueries:
    """Corpus titles as extra training queries: texts and training pools (see :func:`title_queries`)."""

    queries: dict[str, str]
    docs: dict[str, str]
    training: list[TrainingQuery]


def title_queries(
    corpus: Mapping[str, Any], count: int, seed: int, exclude_docs: set[str], run_for: Any, pool_depth: int
) -> TitleQueries:
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
    if count < 0:
        raise InputError(f"the number of title queries must be 0 or more, got {count}")
    eligible = sorted(d for d, doc in corpus.items() if doc.title.strip() and doc.text.strip() and d not in exclude_docs)
    order = np.random.default_rng([seed, 1]).permutation(len(eligible))
    sources = sorted(eligible[int(i)] for i in order[:count])
    queries = {TITLE_QUERY_PREFIX + d: corpus[d].title.strip() for d in sources}
    run = run_for(queries, pool_depth + 1) if queries else {}  # + 1: the source itself is among them
    training = []
    for d in sources:
        qid = TITLE_QUERY_PREFIX + d
        pool = [BODY_DOC_PREFIX + c for c in ranked_ids(run, qid, pool_depth + 1) if c != d][:pool_depth]
        training.append(TrainingQuery(qid, [BODY_DOC_PREFIX + d], pool))
    used = {doc for q in training for doc in (*q.positives, *q.pool)}
    docs = {b: corpus[b[len(BODY_DOC_PREFIX):]].text for b in sorted(used)}
    return TitleQueries(queries, docs, training)


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
