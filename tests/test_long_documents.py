"""Long documents scored as token windows (chunking): Python API, server, Cohere SDK, LLM template."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from live_server import LiveServer

from rerankd import Reranker
from rerankd.chunking import ChunkSettings, windows
from rerankd.errors import InputError, InputTooLargeError
from rerankd.server import ServerSettings, create_app

QUERY = "At what temperature does water boil?"
ANSWER = "Water boils at 100 degrees Celsius at sea level."
FILLER = " ".join(["The committee reviewed the annual budget, the parking rules and the cafeteria menu."] * 40)
LONG = f"{FILLER} {ANSWER}"


@pytest.fixture(scope="module")
def bundled() -> Reranker:
    return Reranker.from_pretrained(device="cpu", dtype="fp32")


def best_window_text(reranker: Reranker, query: str, document: str, settings: ChunkSettings) -> list[str]:
    """The windows the pipeline scores, rebuilt from the public pieces (token ids, window ranges, decode)."""
    family = reranker.family
    from rerankd.documents import Document

    ids = family.text_token_ids(document)
    spans = windows(len(ids), family.document_budget(Document.text(query)), settings.overlap, settings.max_chunks)
    return [family.decode(ids[a:b]) for a, b in spans]


def test_chunking_finds_the_sentence_truncation_cuts_off(bundled: Reranker) -> None:
    truncated = bundled.rank(QUERY, [LONG])
    chunked = bundled.rank(QUERY, [LONG], chunking=True)
    assert truncated.results[0].truncated and not chunked.results[0].truncated
    assert chunked.results[0].chunks > 1 and chunked.results[0].best_chunk == chunked.results[0].chunks - 1
    assert chunked.results[0].score > truncated.results[0].score + 0.3, (chunked.results[0].score, truncated.results[0].score)


def test_chunked_score_is_the_directly_scored_best_window(bundled: Reranker) -> None:
    settings = ChunkSettings(overlap=16)
    texts = best_window_text(bundled, QUERY, LONG, settings)
    direct = bundled.score(QUERY, texts, raw=True)
    got = bundled.rank(QUERY, [LONG], chunking=settings).results[0]
    assert got.chunks == len(texts) and got.best_chunk == int(np.argmax(direct))
    assert got.raw_score == pytest.approx(max(direct), abs=1e-5)
    first = bundled.rank(QUERY, [LONG], chunking=ChunkSettings(aggregation="first")).results[0]
    mean = bundled.rank(QUERY, [LONG], chunking=ChunkSettings(aggregation="mean")).results[0]
    plain = best_window_text(bundled, QUERY, LONG, ChunkSettings())
    plain_scores = bundled.score(QUERY, plain, raw=True)
    assert first.raw_score == pytest.approx(plain_scores[0], abs=1e-5)
    assert mean.raw_score == pytest.approx(float(np.mean(plain_scores)), abs=1e-5)


@pytest.mark.parametrize(("length", "window", "overlap"), [(1, 5, 0), (10, 4, 0), (10, 4, 1), (11, 4, 3), (100, 7, 2), (7, 7, 0)])
def test_windows_cover_every_token(length: int, window: int, overlap: int) -> None:
    spans = windows(length, window, overlap, max_chunks=1000)
    covered = set()
    for a, b in spans:
        assert 0 < b - a <= window
        covered.update(range(a, b))
    assert covered == set(range(length)) and spans[0][0] == 0 and spans[-1][1] == length
    for (a, b), (c, _) in zip(spans, spans[1:]):
        assert b - c == overlap  # neighbours share exactly `overlap` tokens


def test_max_chunks_cuts_and_flags_and_bad_settings_are_refused(bundled: Reranker) -> None:
    one = bundled.rank(QUERY, [LONG], chunking=ChunkSettings(max_chunks=1)).results[0]
    assert one.chunks == 1 and one.truncated
    assert windows(10, 4, 0, max_chunks=2) == [(0, 4), (4, 8)]
    with pytest.raises(InputError, match="overlap .* must be smaller than the window"):
        windows(10, 4, 4, 10)
    for bad in ({"max_chunks": 0}, {"overlap": -1}, {"aggregation": "median"}):
        with pytest.raises(InputError):
            ChunkSettings(**bad)


def test_llm_reranker_keeps_its_template_in_every_chunk(qwen3_lm: Path) -> None:
    reranker = Reranker.from_pretrained(str(qwen3_lm), device="cpu", dtype="fp32", max_length=160)
    family = reranker.family
    plan = reranker.pipeline.prepare(QUERY, [LONG], chunking=True)
    assert len(plan.sequences) > 2
    for seq in plan.sequences:
        ids = seq.input_ids
        assert ids[: len(family.prefix_ids)] == family.prefix_ids and ids[-len(family.suffix_ids):] == family.suffix_ids
        body = family.tokenizer.decode(list(ids[len(family.prefix_ids): -len(family.suffix_ids)]))
        assert body.startswith("<Instruct>: ") and f"\n<Query>: {QUERY}\n<Document>: " in body
    texts = best_window_text(reranker, QUERY, LONG, ChunkSettings())
    got = reranker.rank(QUERY, [LONG], chunking=True).results[0]
    assert got.raw_score == pytest.approx(max(reranker.score(QUERY, texts, raw=True)), abs=1e-4)


@pytest.fixture(scope="module")
def server(bundled: Reranker) -> Iterator[LiveServer]:
    app = create_app({"minilm": bundled}, ServerSettings(log_requests=False, max_pairs=10))
    with LiveServer(app) as live:
        yield live


def test_cohere_sdk_max_chunks_per_doc_gets_the_chunked_score(server: LiveServer, bundled: Reranker) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key="unused", base_url=server.url)
    plain = client.rerank(model="minilm", query=QUERY, documents=[LONG, "Bananas are yellow."])
    chunked = client.rerank(model="minilm", query=QUERY, documents=[LONG, "Bananas are yellow."], max_chunks_per_doc=10)
    expected = bundled.rank(QUERY, [LONG, "Bananas are yellow."], chunking=ChunkSettings(max_chunks=10))
    scores = {r.index: r.relevance_score for r in chunked.results}
    assert scores[0] == pytest.approx(next(r.score for r in expected.results if r.index == 0), abs=1e-5)
    assert scores[0] > {r.index: r.relevance_score for r in plain.results}[0] + 0.3


def test_server_chunking_object_reports_chunks_and_counts_them_against_max_pairs(server: LiveServer) -> None:
    body = {"model": "minilm", "query": QUERY, "documents": [LONG], "chunking": {"max_chunks": 5, "overlap": 8}}
    r = httpx.post(f"{server.url}/v1/rerank", json=body, timeout=60)
    assert r.status_code == 200, r.text
    item = r.json()["results"][0]
    assert item["chunks"] > 1 and 0 <= item["best_chunk"] < item["chunks"]
    plain = httpx.post(f"{server.url}/v1/rerank", json={"model": "minilm", "query": QUERY, "documents": [LONG]}, timeout=60)
    assert "chunks" not in plain.json()["results"][0]  # only for requests that asked for chunks
    too_many = httpx.post(f"{server.url}/v1/rerank", json={**body, "documents": [LONG] * 4}, timeout=60)
    assert too_many.status_code == 413 and "--max-pairs" in too_many.json()["error"]["message"]
    bad = httpx.post(f"{server.url}/v1/rerank", json={**body, "chunking": {"aggregation": "median"}}, timeout=60)
    assert bad.status_code == 422 and "aggregation" in bad.json()["error"]["message"]
    assert httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": ["ok"]}, timeout=60).status_code == 200


def test_pair_cap_in_the_python_api(bundled: Reranker) -> None:
    from rerankd.pipeline import RequestLimits

    capped = bundled.pipeline.with_limits(RequestLimits(max_pairs=2))
    with pytest.raises(InputTooLargeError, match="at most 2 per request"):
        capped.prepare(QUERY, [LONG], chunking=True)
