"""The engine's contract: scores independent of batching, order and splitting; ranking; thread safety."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker

QUERY = "Which city is the capital of France?"
FAMILIES = ["bert_ce", "xlmr_ce", "qwen3_lm", "bi_encoder"]


@pytest.fixture(scope="module")
def engines(request: pytest.FixtureRequest) -> dict[str, Reranker]:
    return {name: Reranker.from_pretrained(str(request.getfixturevalue(name)), dtype="fp32") for name in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_scores_do_not_depend_on_batch_size(name: str, engines: dict[str, Reranker], sentences: list[str]) -> None:
    engine = engines[name]
    docs = sentences * 3
    baseline = engine.score(QUERY, docs)
    for budget, rows in [(1, 1), (64, 2), (300, 5), (10**6, 1000)]:
        small = Reranker(engine.family, engine.backend, batch_limits=type(engine.batch_limits)(budget, rows))
        np.testing.assert_allclose(small.score(QUERY, docs), baseline, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_scores_do_not_depend_on_order_or_splitting(name: str, engines: dict[str, Reranker], sentences: list[str]) -> None:
    engine = engines[name]
    baseline = np.array(engine.score(QUERY, sentences))
    perm = np.random.default_rng(0).permutation(len(sentences))
    shuffled = np.array(engine.score(QUERY, [sentences[i] for i in perm]))
    np.testing.assert_allclose(shuffled, baseline[perm], atol=1e-5)
    split = engine.score(QUERY, sentences[:2]) + engine.score(QUERY, sentences[2:])
    np.testing.assert_allclose(split, baseline, atol=1e-5)
    many = engine.score_many([QUERY, QUERY], [sentences[:3], sentences[3:]])
    np.testing.assert_allclose(np.concatenate([m.normalized for m in many]), baseline, atol=1e-5)


def test_rank_orders_best_first_and_cuts_top_n(engines: dict[str, Reranker], sentences: list[str]) -> None:
    engine = engines["bert_ce"]
    scores = engine.score(QUERY, sentences)
    result = engine.rank(QUERY, sentences, top_n=3, return_documents=True)
    assert [r.index for r in result.results] == list(np.argsort(scores)[::-1][:3])
    assert all(r.document == sentences[r.index] for r in result.results)
    assert result.total_tokens > 0 and all(r.tokens > 0 for r in result.results)
    assert engine.rank(QUERY, sentences).results[0].document is None
    assert len(engine.rank(QUERY, sentences, top_n=0)) == len(sentences)  # 0 = all, as vLLM does


def test_raw_and_normalized_scores(engines: dict[str, Reranker], sentences: list[str]) -> None:
    engine = engines["bert_ce"]
    raw = np.array(engine.score(QUERY, sentences, raw=True))
    np.testing.assert_allclose(engine.score(QUERY, sentences), 1 / (1 + np.exp(-raw)), atol=1e-9)


@pytest.mark.parametrize("name", ["bert_ce", "qwen3_lm", "bi_encoder"])
def test_long_documents_are_truncated_and_flagged(name: str, engines: dict[str, Reranker], sentences: list[str]) -> None:
    engine = Reranker.from_pretrained(str(engines[name].family.model_dir), dtype="fp32", max_length=128)
    long_doc = " ".join(sentences * 20)
    result = {r.index: r for r in engine.rank(QUERY, [sentences[0], long_doc]).results}
    assert result[1].truncated and not result[0].truncated
    assert result[1].tokens == 128
    cut = {r.index: r for r in engine.rank(QUERY, [sentences[0], long_doc], max_doc_tokens=5).results}
    assert cut[0].truncated and cut[1].truncated


def test_concurrent_calls_from_threads_are_safe(engines: dict[str, Reranker], sentences: list[str]) -> None:
    engine = engines["bert_ce"]
    queries = [QUERY, "bananas and fruit", "when was the tower built", "stock markets"]
    expected = {q: engine.score(q, sentences) for q in queries}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = {pool.submit(engine.score, q, sentences): q for q in queries * 4}
        for future, q in futures.items():
            np.testing.assert_allclose(future.result(), expected[q], atol=1e-6)


def test_bundled_model_ranks_the_relevant_sentence_first(sentences: list[str]) -> None:
    engine = Reranker.from_pretrained()
    assert engine.family.kind == "bi-encoder"
    assert engine.rank("What is the capital of France?", sentences).results[0].index == 0
    assert engine.rank("When was the Eiffel Tower built?", sentences).results[0].index == 2


def test_describe_names_family_device_dtype(engines: dict[str, Reranker]) -> None:
    info = engines["qwen3_lm"].describe()
    assert info["family"] == "llm-yes-no" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["max_length"] == 8192 and info["parameters"] > 0


def test_model_dir_path_object_loads(bert_ce: Path) -> None:
    engine = Reranker.from_pretrained(bert_ce)
    assert engine.family.kind == "cross-encoder"
    assert engine.name == str(bert_ce) and isinstance(engine.name, str)


@pytest.mark.parametrize("name", FAMILIES)
def test_packed_cpu_path_equals_padded_path(name: str, engines: dict[str, Reranker], sentences: list[str]) -> None:
    from rerankd.backends.torch_backend import TorchBackend

    engine = engines[name]
    assert engine.describe()["packed"] is True  # the CPU default for these architectures
    padded = Reranker(engine.family, TorchBackend(engine.family, device="cpu", dtype="fp32", packed=False))
    np.testing.assert_allclose(engine.score(QUERY, sentences * 2, raw=True), padded.score(QUERY, sentences * 2, raw=True), atol=1e-5)


def test_llm_shared_prefix_is_computed_once_and_exact(engines: dict[str, Reranker], sentences: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd.backends import packed

    engine = engines["qwen3_lm"]
    shared = packed.shared_prefix_length(engine.pipeline.prepare(QUERY, sentences).sequences)
    # system prompt + instruction + query: everything before the document text
    assert shared >= len(engine.family.prefix_ids) + 20
    with_prefix = engine.score(QUERY, sentences, raw=True)
    monkeypatch.setattr(packed, "MIN_SHARED_PREFIX", 10**9)
    np.testing.assert_allclose(engine.score(QUERY, sentences, raw=True), with_prefix, atol=1e-5)
