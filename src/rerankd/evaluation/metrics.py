"""Ranking metrics with trec_eval's semantics: NDCG@k, MRR@k, MAP@k, Recall@k, P@k, per query and mean.

Why not call pytrec_eval here: it is a compiled extension that is awkward to install in some places,
and these five metrics are short; the tests hold this module to pytrec_eval within 1e-6.

trec_eval's conventions, kept exactly: documents are ranked by score, ties broken by docid in
descending order; a document is relevant when its judgment is ≥ 1; NDCG uses the graded judgment as
a linear gain and the ideal ranking of all judged documents; a query's value is computed only when
the query has judgments, and means are over the queries present in both the run and the qrels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rerankd.errors import InputError
from rerankd.evaluation.datasets import Qrels, Run

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@100", "p@10")
_NAMES = ("ndcg", "mrr", "map", "recall", "p")


@dataclass
class EvalResult:
    """Per-query values and their means, keyed by metric name (e.g. ``"ndcg@10"``)."""

    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)

    @property
    def queries(self) -> int:
        return len(self.per_query)


def parse_metric(name: str) -> tuple[str, int]:
    base, _, cut = name.lower().partition("@")
    if base not in _NAMES or not cut.isdigit() or int(cut) < 1:
        raise InputError(f"unknown metric {name!r}; use one of {', '.join(n + '@K' for n in _NAMES)} (K ≥ 1)")
    return base, int(cut)


def ranking(scores: dict[str, float]) -> list[str]:
    """Document ids best first, as trec_eval orders them (score desc, then docid desc)."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def query_metrics(judged: dict[str, int], scores: dict[str, float], metrics: list[tuple[str, str, int]]) -> dict[str, float]:
    ranked = ranking(scores)
    relevant_total = sum(1 for rel in judged.values() if rel >= 1)
    values: dict[str, float] = {}
    for name, base, k in metrics:
        top = ranked[:k]
        rels = [judged.get(doc, 0) for doc in top]
        if base == "ndcg":
            dcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(rels) if rel > 0)
            ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:k]
            idcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(ideal))
            values[name] = dcg / idcg if idcg > 0 else 0.0
        elif base == "mrr":
            values[name] = next((1.0 / (i + 1) for i, rel in enumerate(rels) if rel >= 1), 0.0)
        elif base == "map":
            hits, total = 0, 0.0
            for i, rel in enumerate(rels):
                if rel >= 1:
                    hits += 1
                    total += hits / (i + 1)
            values[name] = total / relevant_total if relevant_total else 0.0
        elif base == "recall":
            values[name] = sum(1 for rel in rels if rel >= 1) / relevant_total if relevant_total else 0.0
        else:  # precision: trec_eval divides by k even when fewer were retrieved
            values[name] = sum(1 for rel in rels if rel >= 1) / k
    return values


def evaluate(qrels: Qrels, run: Run, metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS) -> EvalResult:
    """Score a run against judgments.

    Example:
        >>> evaluate({"q": {"d1": 1}}, {"q": {"d1": 0.9, "d2": 0.5}}, ["ndcg@10", "mrr@10"]).mean
        {'ndcg@10': 1.0, 'mrr@10': 1.0}
    """
    parsed = [(m.lower(), *parse_metric(m)) for m in metrics]
    result = EvalResult()
    for qid, scores in run.items():
        judged = qrels.get(qid)
        if not judged:
            continue
        result.per_query[qid] = query_metrics(judged, scores, parsed)
    n = len(result.per_query)
    result.mean = {name: (sum(v[name] for v in result.per_query.values()) / n if n else 0.0) for name, _, _ in parsed}
    return result
