"""rerankd's metrics equal pytrec_eval (trec_eval) on real qrels and real runs."""

from __future__ import annotations

import random

import pytest

from rerankd.errors import InputError
from rerankd.evaluation.datasets import load_beir
from rerankd.evaluation.first_stage import BM25Retriever
from rerankd.evaluation.metrics import evaluate, ranking
from tiny_models import DATA, requires_shared

pytrec_eval = pytest.importorskip("pytrec_eval")

TREC_NAMES = {"ndcg@10": "ndcg_cut_10", "ndcg@100": "ndcg_cut_100", "map@100": "map_cut_100", "recall@100": "recall_100",
              "recall@10": "recall_10", "p@10": "P_10", "p@5": "P_5"}


def _trec(qrels: dict, run: dict) -> dict:
    measures = {name.rsplit("_", 1)[0] + "." + name.rsplit("_", 1)[1] for name in TREC_NAMES.values()} | {"recip_rank"}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def _top(run: dict, k: int) -> dict:
    return {q: {d: docs[d] for d in ranking(docs)[:k]} for q, docs in run.items()}


@pytest.mark.parametrize(("name", "split"), [pytest.param(name, split, marks=requires_shared(f"data/{name}"))
                                             for name, split in [("cranfield", "test"), ("vaswani", "test"), ("scifact", "train")]])
def test_metrics_equal_pytrec_eval_on_bm25_runs(name: str, split: str) -> None:
    data = load_beir(DATA / name, split)
    run = BM25Retriever(data.corpus).search(data.queries, k=100)
    ours = evaluate(data.qrels, run, list(TREC_NAMES) + ["mrr@10"])
    theirs = _trec(data.qrels, run)
    mrr = _trec(data.qrels, _top(run, 10))  # trec_eval's recip_rank has no cut: cut the run instead
    assert set(ours.per_query) == set(theirs)
    for qid, values in theirs.items():
        for metric, trec_name in TREC_NAMES.items():
            assert ours.per_query[qid][metric] == pytest.approx(values[trec_name], abs=1e-6), (qid, metric)
        assert ours.per_query[qid]["mrr@10"] == pytest.approx(mrr[qid]["recip_rank"], abs=1e-6)
    for metric, trec_name in TREC_NAMES.items():
        assert ours.mean[metric] == pytest.approx(sum(v[trec_name] for v in theirs.values()) / len(theirs), abs=1e-6)


def test_ties_graded_judgments_and_unjudged_documents_follow_trec_eval() -> None:
    rng = random.Random(0)
    qrels = {f"q{i}": {f"d{j}": rng.choice([0, 0, 1, 2, 3]) for j in rng.sample(range(60), 15)} for i in range(30)}
    # Coarse scores make many ties, which trec_eval breaks by docid.
    run = {q: {f"d{j}": float(rng.randint(0, 5)) for j in rng.sample(range(60), 40)} for q in qrels}
    ours = evaluate(qrels, run, list(TREC_NAMES))
    theirs = _trec(qrels, run)
    for qid, values in theirs.items():
        for metric, trec_name in TREC_NAMES.items():
            assert ours.per_query[qid][metric] == pytest.approx(values[trec_name], abs=1e-6), (qid, metric)


def test_unknown_metric_is_named() -> None:
    with pytest.raises(InputError, match="unknown metric 'ndcg'; use one of ndcg@K"):
        evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}}, ["ndcg"])
