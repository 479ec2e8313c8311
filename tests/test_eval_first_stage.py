"""Datasets read with clear errors; BM25 and dense first stages with on-disk caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerankd.errors import InputError
from rerankd.evaluation.datasets import (
    Doc,
    load_beir,
    load_mteb_reranking,
    mteb_as_beir,
    read_trec_qrels,
    read_trec_run,
    write_trec_run,
)
from rerankd.evaluation.first_stage import BM25Retriever, DenseRetriever
from rerankd.evaluation.metrics import evaluate
from tiny_models import DATA, requires_shared


@requires_shared("data/scifact")
def test_load_beir_reads_graded_qrels_and_keeps_judged_queries() -> None:
    data = load_beir(DATA / "scifact", "train")
    assert len(data.corpus) == 5183 and len(data.queries) == 809
    assert all(q in data.queries for q in data.qrels)
    sub = data.subset(list(data.queries)[:5])
    assert len(sub.queries) == 5 and set(sub.qrels) == set(sub.queries)
    with pytest.raises(InputError, match=r"has no qrels/test.tsv; available splits: \['train'\]"):
        load_beir(DATA / "scifact", "test")


def _beir(tmp_path: Path, corpus: str, queries: str = '{"_id": "q1", "text": "x"}\n', qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\n") -> Path:
    (tmp_path / "qrels").mkdir(parents=True)
    (tmp_path / "corpus.jsonl").write_text(corpus)
    (tmp_path / "queries.jsonl").write_text(queries)
    (tmp_path / "qrels" / "test.tsv").write_text(qrels)
    return tmp_path


@pytest.mark.parametrize(
    ("corpus", "qrels", "message"),
    [
        ('{"_id": "d1", "text": "ok"}\n{"_id": "d2"}\n', None, r"corpus.jsonl:2: missing field 'text'"),
        ('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": 5.5e0, "title": []}\n', None, r"corpus.jsonl:2: field 'title' must be str, got list"),
        ('{"_id": "d1", "text": "ok"}\nnot json\n', None, r"corpus.jsonl:2: not valid JSON"),
        ('{"_id": "d1", "text": "ok"}\n', "query-id\tcorpus-id\tscore\nq1\td1\n", r"test.tsv:2: expected 3 tab-separated fields"),
        ('{"_id": "d1", "text": "ok"}\n', "query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r"test.tsv:2: field 'score' must be a number"),
    ],
)
def test_bad_beir_files_name_file_line_and_field(tmp_path: Path, corpus: str, qrels: str | None, message: str) -> None:
    root = _beir(tmp_path, corpus, qrels=qrels or "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(InputError, match=message):
        load_beir(root, "test")


def test_trec_files_round_trip_and_errors(tmp_path: Path) -> None:
    run = {"q1": {"a": 0.5, "b": 1.5}, "q2": {"c": 0.1}}
    path = write_trec_run(run, tmp_path / "run.trec")
    assert path.read_text().splitlines()[0] == "q1 Q0 b 1 1.50000000 rerankd"
    assert read_trec_run(path) == run
    (tmp_path / "qrels.txt").write_text("q1 0 a 1\nq1 0 b two\n")
    with pytest.raises(InputError, match=r"qrels.txt:2: field 'relevance' must be an integer"):
        read_trec_qrels(tmp_path / "qrels.txt")


def test_mteb_reranking_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"query": "capital of France", "positive": ["Paris is the capital."], "negative": ["Bananas.", "Stocks."]}) + "\n")
    examples = load_mteb_reranking(path)
    data, candidates = mteb_as_beir(examples)
    assert len(data.corpus) == 3 and sum(data.qrels["q0"].values()) == 1 and len(candidates["q0"]) == 3
    path.write_text('{"query": "q", "positive": "not a list"}\n')
    with pytest.raises(InputError, match=r"set.jsonl:1: field 'positive' must be list"):
        load_mteb_reranking(path)


@requires_shared("data/cranfield")
def test_bm25_index_is_cached_and_reused(tmp_path: Path) -> None:
    data = load_beir(DATA / "cranfield").subset([str(i) for i in range(1, 21)])
    first = BM25Retriever(data.corpus, cache_dir=tmp_path).search(data.queries, k=50)
    assert len(list(tmp_path.glob("bm25-*"))) == 1
    second = BM25Retriever(data.corpus, cache_dir=tmp_path).search(data.queries, k=50)
    assert first == second
    assert evaluate(data.qrels, first, ["ndcg@10"]).mean["ndcg@10"] > 0.2
    unstemmed = BM25Retriever(data.corpus, stemmer=None, stopwords=None, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("bm25-*"))) == 2 and unstemmed.search(data.queries, k=50) != first


def test_dense_retrieval_with_a_bi_encoder_and_cache(bi_encoder: Path, tmp_path: Path) -> None:
    corpus = {f"d{i}": Doc("", text) for i, text in enumerate(["Paris is the capital of France.", "Bananas are yellow.",
                                                               "The Eiffel Tower is in Paris.", "Stocks fell on Monday."])}
    dense = DenseRetriever(corpus, model=str(bi_encoder), cache_dir=tmp_path, dtype="fp32")
    run = dense.search({"q": "capital of France"}, k=3)
    assert len(run["q"]) == 3
    cached = DenseRetriever(corpus, model=str(bi_encoder), cache_dir=tmp_path, dtype="fp32")
    np.testing.assert_array_equal(cached.embeddings, dense.embeddings)
    assert len(list(tmp_path.glob("dense-*.npy"))) == 1


def test_dense_retrieval_needs_a_bi_encoder(bert_ce: Path) -> None:
    with pytest.raises(InputError, match="dense retrieval needs a bi-encoder"):
        DenseRetriever({"d": Doc("", "x")}, model=str(bert_ce))
