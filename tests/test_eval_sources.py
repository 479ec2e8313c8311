"""Where candidates come from: a TREC run file, MTEB-reranking lists, a bi-encoder rescoring BM25's top-k."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerankd.cli import main
from rerankd.engine import Reranker
from rerankd.errors import InputError
from rerankd.evaluation.datasets import Doc, load_beir, read_qrels, write_trec_run
from rerankd.evaluation.first_stage import DenseRetriever, first_stage_run
from rerankd.evaluation.rerank_run import chunks, rerank
from tiny_models import DATA, requires_shared


def test_chunks_are_fixed_groups_of_whole_queries() -> None:
    sizes = {"a": 3, "b": 3, "c": 5, "d": 1}
    assert list(chunks(list(sizes), sizes, 6)) == [["a", "b"], ["c", "d"]]
    assert list(chunks(list(sizes), sizes, 1)) == [["a"], ["b"], ["c"], ["d"]]


@requires_shared("data/cranfield")
def test_first_stage_from_a_run_file_and_qrels_in_either_format(tmp_path: Path) -> None:
    data = load_beir(DATA / "cranfield").subset(["1", "2"])
    run = {"1": {"12": 2.0, "51": 1.0}, "2": {"100": 3.0}, "999": {"5": 1.0}}
    path = write_trec_run(run, tmp_path / "given.trec")
    label, got = first_stage_run(f"run:{path}", data.corpus, data.queries)
    assert label == "given" and got == {"1": run["1"], "2": run["2"]}  # queries outside the set are dropped
    write_trec_run({"1": {"no-such-doc": 1.0}}, tmp_path / "bad.trec")
    with pytest.raises(InputError, match="ranks document 'no-such-doc', which is not in the corpus"):
        first_stage_run(f"run:{tmp_path / 'bad.trec'}", data.corpus, data.queries)
    with pytest.raises(InputError, match="neither 'bm25', 'dense' nor run:FILE"):
        first_stage_run("bm26", data.corpus, data.queries)

    trec = tmp_path / "qrels.txt"
    trec.write_text("".join(f"{q} 0 {d} {r}\n" for q, docs in data.qrels.items() for d, r in docs.items()))
    assert read_qrels(trec) == data.qrels


def test_mteb_reranking_file_end_to_end(tmp_path: Path, bert_ce: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "set.jsonl"
    rows = [{"query": "capital of France", "positive": ["Paris is the capital of France."],
             "negative": ["Bananas are yellow.", "Stocks fell on Monday."]},
            {"query": "yellow fruit", "positive": ["Bananas are yellow."], "negative": ["The Eiffel Tower is in Paris."]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["eval", "run", "--mteb", str(path), "-m", str(bert_ce), "--dtype", "fp32", "--out", str(out),
                 "--metrics", "ndcg@10,mrr@10", "--no-charts", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["queries"] == 2 and metrics["first_stage"]["label"] == "given"
    assert len((out / "runs" / "given.trec").read_text().splitlines()) == 5
    assert "| given |" in capsys.readouterr().out


@requires_shared("data/cranfield")
def test_dense_rescore_equals_the_bi_encoder_rerank(bi_encoder: Path) -> None:
    data = load_beir(DATA / "cranfield").subset(["1", "2", "3"])
    ids = [str(i) for i in range(1, 31)]
    corpus = {d: data.corpus[d] for d in ids}
    reranker = Reranker.from_pretrained(str(bi_encoder), dtype="fp32")
    candidates = {q: {d: 0.0 for d in ids[i * 5: i * 5 + 20]} for i, q in enumerate(data.queries)}
    engine = rerank(reranker, data.queries, corpus, candidates, depth=None, chunk_pairs=15, progress=False)
    rescored = DenseRetriever(corpus, model=reranker).rescore(data.queries, candidates)
    for qid, docs in candidates.items():
        np.testing.assert_allclose([rescored[qid][d] for d in docs], [engine.run[qid][d] for d in docs], atol=1e-5)
    with pytest.raises(InputError, match="'zz' is not in the corpus"):
        DenseRetriever({"a": Doc("", "x")}, model=reranker).rescore({"q": "x"}, {"q": {"zz": 1.0}})
