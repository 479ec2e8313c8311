"""`rerankd serve` over real HTTP: a uvicorn server on a free loopback port, tiny models, real clients."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import numpy as np
import pytest

from live_server import LiveServer
from rerankd import Reranker
from rerankd.families import Encoded
from rerankd.server import ServerSettings, create_app
from rerankd.server.protocol import (
    ErrorResponse,
    ModelList,
    RerankResponse,
    ScoreResponse,
    TeiErrorResponse,
    TeiRerankResponse,
)

API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SECRET = "secret internal detail 0xDEADBEEF"
MARKER = "explode"

QUERY = "What is the capital of France?"


class PoisonBackend:
    """A real backend, except that a batch holding the ``poison`` token sequence raises (with text that
    must never reach a client). Records every batch's rows and whether it raised.

    It replaces ``reranker.backend``; everything but the forward pass is the real backend's.
    """

    def __init__(self, inner: Any, poison: Sequence[int]) -> None:
        self.inner = inner
        self.poison = tuple(poison)
        self.batches: list[tuple[list[tuple[int, ...]], bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        self._check([tuple(s.input_ids) for s in sequences])
        return self.inner.forward(sequences)

    def _check(self, rows: list[tuple[int, ...]]) -> None:
        n = len(self.poison)
        poisoned = any(row[i : i + n] == self.poison for row in rows for i in range(len(row) - n + 1))
        self.batches.append((rows, poisoned))
        if poisoned:
            raise RuntimeError(SECRET)


def token_ids(model_dir: Path, text: str) -> list[int]:
    """``text``'s tokens, read with the model's own tokenizer file (not through rerankd)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def poisoned(model_dir: Path, **kw: Any) -> Reranker:
    engine = Reranker.from_pretrained(str(model_dir), device="cpu", dtype="fp32", **kw)
    engine.pipeline.backend = PoisonBackend(engine.backend, token_ids(model_dir, MARKER))
    return engine


class GatedBackend:
    """A real backend that waits for ``gate`` before each batch and records the batches it ran."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.pads = inner.pads
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(30)
        self.seen.extend(s.input_ids for s in sequences)
        return self.inner.forward(sequences)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


@pytest.fixture(scope="module")
def engines(bert_ce: Path, qwen3_lm: Path) -> dict[str, Reranker]:
    bert = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32")
    qwen = Reranker.from_pretrained(str(qwen3_lm), device="cpu", dtype="fp32")
    flaky_base = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32")
    flaky = poisoned(bert_ce)
    gated = Reranker(flaky_base.family, GatedBackend(flaky_base.backend), name="gated", batch_limits=flaky_base.batch_limits)
    return {"bert": bert, "qwen": qwen, "flaky": flaky, "gated": gated}


@pytest.fixture(scope="module")
def server(engines: dict[str, Reranker]) -> Iterator[LiveServer]:
    # A generous merge window so that concurrent test requests reliably share batches.
    settings = ServerSettings(api_key=API_KEY, max_wait_ms=25, max_documents=1000)
    with LiveServer(create_app(engines, settings)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


def offline(engine: Reranker, query: str, docs: list[str], **kw: Any) -> list[tuple[int, float]]:
    return [(r.index, r.score) for r in engine.rank(query, docs, **kw).results]


def assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-6)


# -- every dialect round-trips ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_cohere_jina_rerank_matches_offline(client: httpx.Client, engines: dict[str, Reranker], sentences: list[str], path: str) -> None:
    r = client.post(path, json={"model": "bert", "query": QUERY, "documents": sentences, "top_n": 3})
    assert r.status_code == 200, r.text
    body = RerankResponse.model_validate(r.json())
    assert body.model == "bert" and len(body.results) == 3
    assert body.usage.total_tokens > 0
    assert body.meta.api_version.version == ("2" if path.startswith("/v2") else "1")
    assert_same_ranking([(x.index, x.relevance_score) for x in body.results], offline(engines["bert"], QUERY, sentences, top_n=3))
    # Not asked for: "document" is left out, not null (strict clients reject null).
    assert all("document" not in item for item in r.json()["results"])
    assert r.headers["x-request-id"] == body.id


def test_documents_objects_top_k_return_documents_and_raw_scores(client: httpx.Client, engines: dict[str, Reranker], sentences: list[str]) -> None:
    docs = [{"text": s} for s in sentences[:4]]
    r = client.post("/v1/rerank", json={"model": "bert", "query": QUERY, "documents": docs, "top_k": 2,
                                        "return_documents": True, "raw_scores": True})
    assert r.status_code == 200, r.text
    body = RerankResponse.model_validate(r.json())
    want = engines["bert"].rank(QUERY, sentences[:4], top_n=2).results
    assert [x.index for x in body.results] == [w.index for w in want]
    np.testing.assert_allclose([x.relevance_score for x in body.results], [w.raw_score for w in want], rtol=1e-5)
    assert [x.document.text for x in body.results] == [sentences[w.index] for w in want]


def test_rank_fields_and_max_tokens_per_doc(client: httpx.Client, engines: dict[str, Reranker]) -> None:
    docs = [{"title": "France", "body": "Paris is the capital."}, {"title": "Fruit", "body": "Bananas are yellow."}]
    r = client.post("/v1/rerank", json={"model": "bert", "query": QUERY, "documents": docs, "rank_fields": ["title", "body"],
                                        "return_documents": True, "max_tokens_per_doc": 3})
    assert r.status_code == 200, r.text
    texts = ["title: France\nbody: Paris is the capital.", "title: Fruit\nbody: Bananas are yellow."]
    assert_same_ranking([(x["index"], x["relevance_score"]) for x in r.json()["results"]],
                        offline(engines["bert"], QUERY, texts, max_doc_tokens=3))
    # Objects come back as they were sent.
    assert r.json()["results"][0]["document"] == docs[r.json()["results"][0]["index"]]


def test_instruction_reaches_llm_reranker(client: httpx.Client, engines: dict[str, Reranker], sentences: list[str]) -> None:
    instruction = "Judge whether the passage names a city"
    r = client.post("/v1/rerank", json={"model": "qwen", "query": QUERY, "documents": sentences, "instruction": instruction})
    assert r.status_code == 200, r.text
    got = [(x["index"], x["relevance_score"]) for x in r.json()["results"]]
    assert_same_ranking(got, offline(engines["qwen"], QUERY, sentences, instruction=instruction))
    default = client.post("/v1/rerank", json={"model": "qwen", "query": QUERY, "documents": sentences}).json()
    assert [x["relevance_score"] for x in default["results"]] != [s for _, s in got]


def test_default_model_is_the_first_served(client: httpx.Client) -> None:
    r = client.post("/v2/rerank", json={"query": QUERY, "documents": ["a city", "a fruit"]})
    assert r.status_code == 200 and r.json()["model"] == "bert"


def test_tei_shape(client: httpx.Client, engines: dict[str, Reranker], sentences: list[str]) -> None:
    r = client.post("/rerank", json={"model": "bert", "query": QUERY, "texts": sentences, "return_text": True, "raw_scores": False,
                                     "truncate": True, "truncation_direction": "right"})
    assert r.status_code == 200, r.text
    ranks = TeiRerankResponse.model_validate(r.json()).root
    assert_same_ranking([(x.index, x.score) for x in ranks], offline(engines["bert"], QUERY, sentences))
    assert [x.text for x in ranks] == [sentences[x.index] for x in ranks]
    plain = client.post("/rerank", json={"model": "bert", "query": QUERY, "texts": sentences}).json()
    assert isinstance(plain, list) and all("text" not in x for x in plain)
    assert [x["score"] for x in plain] == sorted((x["score"] for x in plain), reverse=True)


def test_tei_truncate_false_refuses_a_text_that_does_not_fit(client: httpx.Client) -> None:
    long_text = "word " * 2000
    r = client.post("/rerank", json={"model": "bert", "query": QUERY, "texts": [long_text], "truncate": False})
    assert r.status_code == 413
    err = TeiErrorResponse.model_validate(r.json())
    assert err.error_type == "validation" and "truncate" in err.error
    assert client.post("/rerank", json={"model": "bert", "query": QUERY, "texts": [long_text], "truncate": True}).status_code == 200


def test_vllm_score(client: httpx.Client, engines: dict[str, Reranker], sentences: list[str]) -> None:
    want = engines["bert"].score(QUERY, sentences)
    r = client.post("/score", json={"model": "bert", "text_1": QUERY, "text_2": sentences})
    assert r.status_code == 200, r.text
    body = ScoreResponse.model_validate(r.json())
    assert [d.index for d in body.data] == list(range(len(sentences)))
    np.testing.assert_allclose([d.score for d in body.data], want, rtol=1e-5, atol=1e-6)
    # N queries paired one to one, in the queries/documents spelling.
    queries = [QUERY, "yellow fruit", QUERY]
    docs = sentences[:3]
    r2 = client.post("/score", json={"model": "bert", "queries": queries, "documents": docs})
    assert r2.status_code == 200, r2.text
    expect = [engines["bert"].score(q, [d])[0] for q, d in zip(queries, docs)]
    np.testing.assert_allclose([d["score"] for d in r2.json()["data"]], expect, rtol=1e-5, atol=1e-6)


def test_models_health_ready_info_docs(client: httpx.Client, server: LiveServer) -> None:
    models = ModelList.model_validate(client.get("/v1/models").json())
    assert [m.id for m in models.data] == ["bert", "qwen", "flaky", "gated"]
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    info = client.get("/info").json()
    assert info["limits"]["max_documents"] == 1000 and info["models"]["bert"]["family"] == "cross-encoder"
    assert httpx.get(f"{server.url}/docs").status_code == 200  # open without a key
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/score"} <= set(spec["paths"])


# -- the official Cohere SDK, unchanged ---------------------------------------------------------------


def test_cohere_sdk_v2_and_v1(server: LiveServer, engines: dict[str, Reranker], sentences: list[str]) -> None:
    cohere = pytest.importorskip("cohere")
    want = offline(engines["bert"], QUERY, sentences, top_n=3)

    v2 = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    res = v2.rerank(model="bert", query=QUERY, documents=sentences, top_n=3)
    assert_same_ranking([(r.index, r.relevance_score) for r in res.results], want)

    v1 = cohere.Client(api_key=API_KEY, base_url=server.url)
    res1 = v1.rerank(model="bert", query=QUERY, documents=sentences, top_n=3, return_documents=True)
    assert_same_ranking([(r.index, r.relevance_score) for r in res1.results], want)
    assert [r.document.text for r in res1.results] == [sentences[i] for i, _ in want]

    with pytest.raises(cohere.core.api_error.ApiError) as info:
        cohere.ClientV2(api_key="wrong", base_url=server.url).rerank(model="bert", query=QUERY, documents=sentences)
    assert info.value.status_code == 401


# -- concurrency: dynamic batching gives the same answers, and merges requests -------------------------


def _metric(server: LiveServer, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_32_concurrent_requests_equal_sequential_and_share_batches(server: LiveServer, sentences: list[str]) -> None:
    rng = np.random.default_rng(1)
    requests = []
    for i in range(32):
        docs = [sentences[j] + f" (variant {i}-{j})" * int(rng.integers(0, 4)) for j in rng.permutation(len(sentences))]
        requests.append({"model": "bert", "query": f"{QUERY} #{i}", "documents": docs, "top_n": 4})

    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        sequential = [c.post("/v1/rerank", json=body).json() for body in requests]

    merged_before = _metric(server, "rerankd_merged_batches_total", model="bert")

    async def all_at_once() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as c:
            responses = await asyncio.gather(*(c.post("/v1/rerank", json=body) for body in requests))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
        return [r.json() for r in responses]

    concurrent = asyncio.run(all_at_once())
    for one, many in zip(sequential, concurrent):
        # Same order; scores equal up to float rounding (a different batch means a different padded
        # width and GEMM shape, so fp32 sums may differ in the last bits).
        assert_same_ranking([(x["index"], x["relevance_score"]) for x in many["results"]],
                            [(x["index"], x["relevance_score"]) for x in one["results"]])
    merged = _metric(server, "rerankd_merged_batches_total", model="bert") - merged_before
    assert merged >= 1, "no batch held pairs of more than one request"
    # The histogram of requests per batch saw batches above 1.
    multi = _metric(server, "rerankd_batch_requests_count", model="bert") - _metric(
        server, "rerankd_batch_requests_bucket", model="bert", le="1.0")
    assert multi >= 1


# -- bad input: the right status and message, and the server keeps serving ----------------------------


GOOD = {"model": "bert", "query": QUERY, "documents": ["Paris is in France.", "Bananas."]}

BAD_INPUTS = [
    # (name, how to send it, status, error type, words the message must contain)
    ("malformed json", {"content": b'{"query": "x", "documents": [', "headers": {"content-type": "application/json"}},
     400, "invalid_json", "not valid JSON"),
    ("documents not a list", {"json": {"query": QUERY, "documents": "Paris"}}, 422, "invalid_request", "documents"),
    ("query not a string", {"json": {"query": 42, "documents": ["a"]}}, 422, "invalid_request", "query"),
    ("top_n not an int", {"json": {"query": QUERY, "documents": ["a"], "top_n": "three"}}, 422, "invalid_request", "top_n"),
    ("missing query", {"json": {"documents": ["a"]}}, 422, "invalid_request", "query"),
    ("empty query", {"json": {"query": "  ", "documents": ["a"]}}, 422, "empty_query", "query is empty"),
    ("empty documents", {"json": {"query": QUERY, "documents": []}}, 422, "empty_documents", "documents is empty"),
    ("empty document", {"json": {"query": QUERY, "documents": ["a", ""]}}, 422, "invalid_document", "document 1"),
    ("image document", {"json": {"query": QUERY, "documents": [{"image": "x.png"}]}}, 422, "invalid_document", "text"),
    ("100k documents", {"json": {"query": QUERY, "documents": ["d"] * 100_000}}, 413, "too_many_documents", "1000"),
    ("unknown model", {"json": {"model": "gpt-7", "query": QUERY, "documents": ["a"]}}, 404, "model_not_found", "bert"),
    ("negative top_n", {"json": {"query": QUERY, "documents": ["a"], "top_n": -1}}, 422, "invalid_request", "top_n"),
    ("missing key", {"json": GOOD, "headers": {"Authorization": ""}}, 401, "unauthorized", "Authorization: Bearer"),
    ("wrong key", {"json": GOOD, "headers": {"Authorization": "Bearer nope"}}, 401, "unauthorized", "not this server's key"),
    ("20 MB body", {"json": {"query": QUERY, "documents": ["x" * 1_000_000] * 20}}, 413, "input_too_large", "8388608"),
]


@pytest.mark.parametrize("name,send,status,kind,words", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_table(server: LiveServer, client: httpx.Client, name: str, send: dict[str, Any], status: int, kind: str,
                         words: str) -> None:
    kwargs = dict(send)
    headers = {k: v for k, v in {**AUTH, **kwargs.pop("headers", {})}.items() if v}
    r = httpx.post(f"{server.url}/v1/rerank", headers=headers, timeout=60, **kwargs)
    assert r.status_code == status, r.text
    err = ErrorResponse.model_validate(r.json())
    assert err.error.type == kind
    assert words in err.error.message, err.error.message
    ok = client.post("/v1/rerank", json=GOOD)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2


def test_body_limit_is_enforced_while_reading_a_chunked_body(server: LiveServer, client: httpx.Client) -> None:
    payload = json.dumps({"query": QUERY, "documents": ["y" * 1_000_000] * 20}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    r = httpx.post(f"{server.url}/v1/rerank", content=chunks(), headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "8388608" in r.json()["error"]["message"]
    assert client.post("/v1/rerank", json=GOOD).status_code == 200


def test_tei_requests_get_tei_errors(client: httpx.Client) -> None:
    r = client.post("/rerank", json={"query": "", "texts": ["a"]})
    assert r.status_code == 422
    assert TeiErrorResponse.model_validate(r.json()).error_type == "empty"
    r = client.post("/rerank", json={"query": QUERY, "texts": "not a list"})
    assert r.status_code == 422 and r.json()["error_type"] == "validation" and "texts" in r.json()["error"]


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert client.get("/v3/rerank").json()["error"]["type"] == "not_found"
    assert client.get("/v1/rerank").status_code == 405


# -- a failing backend fails only its own requests ----------------------------------------------------


def test_failing_batch_fails_its_requests_only(server: LiveServer, client: httpx.Client) -> None:
    bad = {"model": "flaky", "query": QUERY, "documents": [f"this will {MARKER} now", "a harmless document"]}
    good = {"model": "flaky", "query": QUERY, "documents": ["a harmless document", "another one"]}
    r = client.post("/v1/rerank", json=bad)
    assert r.status_code == 500
    err = ErrorResponse.model_validate(r.json())
    assert err.error.type == "inference_error" and "request id" in err.error.message
    assert SECRET not in r.text and "RuntimeError" not in r.text
    tei = client.post("/rerank", json={"model": "flaky", "query": QUERY, "texts": [MARKER]})
    assert tei.status_code == 500 and tei.json()["error_type"] == "backend" and SECRET not in tei.text
    # The next request on the same model succeeds: the worker survived.
    after = client.post("/v1/rerank", json=good)
    assert after.status_code == 200 and len(after.json()["results"]) == 2
    assert _metric(server, "rerankd_errors_total", kind="inference_error") >= 2


def test_a_failing_batch_fails_exactly_the_requests_sharing_it(bert_ce: Path) -> None:
    # Eight one-document requests, one of them poisoned, all queued inside one long merge window; at
    # most 4 rows per batch, so they run as two batches of 4: the poisoned one and a clean one.
    engine = poisoned(bert_ce, max_batch_rows=4)
    backend: PoisonBackend = engine.backend  # type: ignore[assignment]
    words = ["apple", "river", "house", MARKER, "green", "table", "music", "paper"]
    word_ids = [token_ids(bert_ce, w) for w in words]
    assert all(len(ids) == 1 for ids in word_ids), "each word must be one token, to find its request in a batch"
    settings = ServerSettings(max_wait_ms=2000, log_requests=False)
    with LiveServer(create_app({"flaky": engine}, settings)) as live:
        backend.batches.clear()  # forget the warm-up batch

        async def all_at_once() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
                return await asyncio.gather(*(c.post("/v1/rerank", json={"query": QUERY, "documents": [f"a {w} here"]})
                                              for w in words))

        responses = asyncio.run(all_at_once())
        after = httpx.post(f"{live.url}/v1/rerank", json={"query": QUERY, "documents": ["a river here"]}, timeout=60)
    assert after.status_code == 200
    in_failed_batch = {i for rows, raised in backend.batches if raised
                       for i, ids in enumerate(word_ids) if any(ids[0] in row for row in rows)}
    statuses = [r.status_code for r in responses]
    assert [len(rows) for rows, _ in backend.batches[:2]] == [4, 4], backend.batches
    assert words.index(MARKER) in in_failed_batch and len(in_failed_batch) == 4
    assert {i for i, s in enumerate(statuses) if s == 500} == in_failed_batch, statuses
    assert {i for i, s in enumerate(statuses) if s == 200} == set(range(len(words))) - in_failed_batch, statuses
    for i in in_failed_batch:
        assert responses[i].json()["error"]["type"] == "inference_error"
        assert SECRET not in responses[i].text and "RuntimeError" not in responses[i].text
    for i in set(range(len(words))) - in_failed_batch:
        assert [x["index"] for x in responses[i].json()["results"]] == [0]


def test_work_of_a_disconnected_client_is_dropped_before_inference(server: LiveServer, engines: dict[str, Reranker]) -> None:
    backend: GatedBackend = engines["gated"].backend  # type: ignore[assignment]
    marker_id = engines["gated"].family.tokenizer.token_to_id("banana")
    assert marker_id is not None
    backend.gate.clear()
    backend.entered.clear()
    try:
        holder: dict[str, httpx.Response] = {}
        first = threading.Thread(target=lambda: holder.setdefault("r", httpx.post(
            f"{server.url}/v1/rerank", headers=AUTH, timeout=30,
            json={"model": "gated", "query": QUERY, "documents": ["Paris is in France."]})))
        first.start()
        assert backend.entered.wait(10)  # the worker is now busy with the first request
        dropped_before = _metric(server, "rerankd_dropped_sequences_total", model="gated")
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(f"{server.url}/v1/rerank", headers=AUTH, timeout=0.5,
                       json={"model": "gated", "query": QUERY, "documents": ["banana one", "banana two", "banana three"]})
        time.sleep(0.3)
    finally:
        backend.gate.set()
    first.join(30)
    assert holder["r"].status_code == 200
    deadline = time.monotonic() + 10
    while _metric(server, "rerankd_dropped_sequences_total", model="gated") - dropped_before < 3:
        assert time.monotonic() < deadline, "the abandoned request's sequences were not dropped"
        time.sleep(0.05)
    assert not any(marker_id in ids for ids in backend.seen), "abandoned work reached the backend"
    assert _metric(server, "rerankd_requests_total", route="/v1/rerank", status="499") >= 1


def test_metrics_cover_the_stages(server: LiveServer, client: httpx.Client) -> None:
    client.post("/v1/rerank", json=GOOD)
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("rerankd_requests_total", "rerankd_documents_total", "rerankd_tokens_total", "rerankd_queue_depth",
                 "rerankd_batch_size_bucket", "rerankd_batch_tokens_bucket", "rerankd_batch_requests_bucket",
                 "rerankd_errors_total", 'stage="tokenize"', 'stage="queue"', 'stage="inference"', "rerankd_ready 1.0"):
        assert name in text, name
    # memory gauges read when scraped: a live process holds tens of MiB at least
    from prometheus_client.parser import text_string_to_metric_families

    memory = {s.name: s.value for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
              for s in f.samples if "resident_memory" in s.name}
    assert memory["rerankd_resident_memory_bytes"] > 2**25
    assert memory["rerankd_peak_resident_memory_bytes"] >= memory["rerankd_resident_memory_bytes"]
