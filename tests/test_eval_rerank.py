"""Reranking first-stage candidates: the resumable score cache, the bi-encoder path, paired tests, candidates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerankd.engine import Reranker
from rerankd.errors import InputError
from rerankd.evaluation.compare import Candidate, parse_candidate
from rerankd.evaluation.datasets import Doc
from rerankd.evaluation.metrics import EvalResult
from rerankd.evaluation.rerank_run import rerank
from rerankd.evaluation.stats import paired_test

QUERIES = {"q1": "capital of France", "q2": "yellow fruit", "q3": "how do plants make energy"}


@pytest.fixture(scope="module")
def corpus(sentences: list[str]) -> dict[str, Doc]:
    docs = {f"d{i}": Doc(title="", text=text) for i, text in enumerate(sentences)}
    docs["empty"] = Doc(title="", text="   ")
    return docs


@pytest.fixture(scope="module")
def candidates(corpus: dict[str, Doc]) -> dict[str, dict[str, float]]:
    # every query gets every document, with distinct first-stage scores
    return {q: {d: float(len(corpus) - i) for i, d in enumerate(corpus)} for q in QUERIES}


@pytest.fixture(scope="module")
def ce_fp32(bert_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(bert_ce), dtype="fp32")


def test_cache_resumes_and_equals_fresh_scores(tmp_path: Path, ce_fp32: Reranker, corpus, candidates) -> None:
    cache = tmp_path / "scores.jsonl"
    first = rerank(ce_fp32, QUERIES, corpus, candidates, chunk_pairs=5, cache_path=cache, progress=False)
    assert first.pairs == first.pairs_scored == 3 * len(corpus)
    assert first.pairs_per_s and first.pairs_per_s > 0
    lines = cache.read_text().splitlines()
    assert json.loads(lines[0])["dtype"] == "float32" and len(lines) == 1 + 3  # header + one chunk per query
    # scores equal the engine's raw scores; the empty document is ranked below every scored one
    want = ce_fp32.score(QUERIES["q1"], [corpus[d].full_text for d in corpus if d != "empty"], raw=True)
    got = [first.run["q1"][d] for d in corpus if d != "empty"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert first.run["q1"]["empty"] < min(got)

    # a killed writer leaves a torn last line: it is dropped and that chunk is rescored
    with open(cache, "a", encoding="utf-8") as fh:
        fh.write('{"scores": {"q3": {"d0": 0.1')
    lines.pop()  # also forget the last finished chunk, as if the kill came one chunk earlier
    cache.write_text("\n".join(lines) + '\n{"scores": {"q3": {"d0": 0.1')
    again = rerank(ce_fp32, QUERIES, corpus, candidates, chunk_pairs=5, cache_path=cache, progress=False)
    assert again.pairs_scored == len(corpus)  # only q3
    assert again.run == first.run
    assert len(cache.read_text().splitlines()) == 4 and cache.read_text().endswith("}\n")

    cached = rerank(ce_fp32, QUERIES, corpus, candidates, chunk_pairs=5, cache_path=cache, progress=False)
    assert cached.pairs_scored == 0 and cached.pairs_per_s is None and cached.run == first.run


def test_mismatched_cache_is_refused(tmp_path: Path, bert_ce: Path, ce_fp32: Reranker, corpus, candidates) -> None:
    cache = tmp_path / "scores.jsonl"
    rerank(ce_fp32, QUERIES, corpus, candidates, depth=3, cache_path=cache, progress=False)
    bf16 = Reranker.from_pretrained(str(bert_ce), dtype="bf16")
    with pytest.raises(InputError, match="dtype=float32 but this run has dtype=bfloat16"):
        rerank(bf16, QUERIES, corpus, candidates, depth=3, cache_path=cache, progress=False)
    other_queries = {**QUERIES, "q1": "largest city in France"}
    with pytest.raises(InputError, match="data="):
        rerank(ce_fp32, other_queries, corpus, candidates, depth=3, cache_path=cache, progress=False)
    with pytest.raises(InputError, match="max_doc_tokens"):
        rerank(ce_fp32, QUERIES, corpus, candidates, depth=3, cache_path=cache, max_doc_tokens=8, progress=False)
    not_a_cache = tmp_path / "other.jsonl"
    not_a_cache.write_text('{"hello": 1}\n')
    with pytest.raises(InputError, match="not a rerankd score cache"):
        rerank(ce_fp32, QUERIES, corpus, candidates, depth=3, cache_path=not_a_cache, progress=False)


def test_depth_and_unknown_documents(ce_fp32: Reranker, corpus, candidates) -> None:
    outcome = rerank(ce_fp32, QUERIES, corpus, candidates, depth=2, progress=False)
    assert {q: set(d) for q, d in outcome.run.items()} == {q: {"d0", "d1"} for q in QUERIES}
    with pytest.raises(InputError, match="'nope', which is not in the corpus"):
        rerank(ce_fp32, QUERIES, corpus, {"q1": {"nope": 1.0}}, progress=False)


def test_bi_encoder_rerank_equals_engine_scores(bi_encoder: Path, corpus, candidates) -> None:
    reranker = Reranker.from_pretrained(str(bi_encoder), dtype="fp32")
    outcome = rerank(reranker, QUERIES, corpus, candidates, chunk_pairs=4, progress=False)
    for qid, query in QUERIES.items():
        docs = [d for d in corpus if d != "empty"]
        want = reranker.score(query, [corpus[d].full_text for d in docs], raw=True)
        np.testing.assert_allclose([outcome.run[qid][d] for d in docs], want, atol=1e-5)


def _result(values: list[float]) -> EvalResult:
    return EvalResult(per_query={f"q{i}": {"ndcg@10": v} for i, v in enumerate(values)},
                      mean={"ndcg@10": float(np.mean(values))})


def test_paired_test_separates_different_from_identical_runs() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, size=60)
    better = np.clip(base + 0.15 + rng.normal(0, 0.05, size=60), 0, 1)
    test = paired_test(_result(list(base)), _result(list(better)), "ndcg@10", resamples=2000)
    assert test.delta > 0.1 and test.t_p < 0.05 and test.bootstrap_p < 0.05 and test.ci_low > 0

    same = paired_test(_result(list(base)), _result(list(base)), "ndcg@10", resamples=2000)
    assert same.delta == 0 and same.t_p == 1.0 and same.bootstrap_p == 1.0

    noise = np.clip(base + rng.normal(0, 0.05, size=60), 0, 1)
    noisy = paired_test(_result(list(base)), _result(list(noise)), "ndcg@10", resamples=2000)
    assert noisy.t_p > 0.2 and noisy.bootstrap_p > 0.2 and noisy.ci_low < 0 < noisy.ci_high
    with pytest.raises(InputError, match="was not computed"):
        paired_test(_result(list(base)), _result(list(base)), "mrr@10")


def test_parse_candidate() -> None:
    assert parse_candidate("name=some/model,backend=onnx,dtype=int8,label=x") == Candidate(
        model="some/model", backend="onnx", dtype="int8", label="x")
    assert parse_candidate("some/model") == Candidate(model="some/model")
    assert parse_candidate("name=bundled,dtype=bf16").model is None
    assert Candidate(model="/m/ce", dtype="bf16").title == "ce torch/bf16"
    assert Candidate(model="/m/ce", backend="onnx").title_for("float32") == "ce onnx/fp32"
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_candidate("name=m,precision=int8")
