"""The result cache in the server: hits answer without inference, raw and normalized from one entry,
Cache-Control, and a real Redis shared by two servers that stops, dies and comes back."""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from live_server import LiveServer
from prometheus_client.parser import text_string_to_metric_families
from redis_server import REDIS_SERVER, SKIP_REASON, RedisServer

from rerankd import Reranker
from rerankd.cache import CacheSettings
from rerankd.families.base import sigmoid
from rerankd.server import ServerSettings, create_app

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "France borders Spain.", "The Eiffel Tower is tall."]


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def rerank(url: str, documents: list[str] = DOCS, headers: dict[str, str] | None = None, **extra: Any) -> dict[int, float]:
    r = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": documents, **extra}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return {item["index"]: item["relevance_score"] for item in r.json()["results"]}


def served(engine: Reranker, cache: CacheSettings) -> LiveServer:
    return LiveServer(create_app({"bert": engine}, ServerSettings(log_requests=False, cache=cache)))


@pytest.fixture(scope="module")
def engine(bert_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def memory_server(engine: Reranker) -> Iterator[LiveServer]:
    with served(engine, CacheSettings(mode="memory", size=1000)) as live:
        yield live


def test_hits_answer_without_inference_and_raw_and_normalized_share_one_entry(memory_server: LiveServer,
                                                                            engine: Reranker) -> None:
    url = memory_server.url
    uncached = engine.score(QUERY, DOCS, raw=True)
    raw = rerank(url, raw_scores=True)
    batches = metric(url, "rerankd_batch_size_count", model="bert")
    hits = metric(url, "rerankd_cache_hits_total", tier="memory")
    normalized = rerank(url)
    assert metric(url, "rerankd_cache_hits_total", tier="memory") == hits + len(DOCS)
    assert metric(url, "rerankd_batch_size_count", model="bert") == batches  # no forward pass at all
    for i in range(len(DOCS)):
        assert raw[i] == pytest.approx(uncached[i], abs=1e-6)
        assert normalized[i] == pytest.approx(float(sigmoid(raw[i])), abs=1e-12)


def test_cache_control_no_cache_reads_through_and_no_store_writes_nothing(memory_server: LiveServer) -> None:
    url = memory_server.url
    fresh = ["A document nobody sent before.", "Another new one."]
    entries = metric(url, "rerankd_cache_entries", tier="memory")
    rerank(url, fresh, headers={"Cache-Control": "no-store"})
    assert metric(url, "rerankd_cache_entries", tier="memory") == entries
    hits = metric(url, "rerankd_cache_hits_total", tier="memory")
    rerank(url, fresh)                                              # stores them
    rerank(url, fresh, headers={"Cache-Control": "no-cache"})       # scored again, not read
    assert metric(url, "rerankd_cache_hits_total", tier="memory") == hits
    assert metric(url, "rerankd_cache_bypassed_total") >= 1
    rerank(url, fresh)
    assert metric(url, "rerankd_cache_hits_total", tier="memory") == hits + len(fresh)


def test_a_changed_model_file_changes_the_fingerprint(bert_ce: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(bert_ce, copy)
    before = Reranker.from_pretrained(str(copy), device="cpu", dtype="fp32").fingerprint()
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(data))
    after = Reranker.from_pretrained(str(copy), device="cpu", dtype="fp32").fingerprint()
    assert before["revision"] != after["revision"] and {k for k in before if before[k] != after[k]} == {"revision"}
    assert Reranker.from_pretrained(str(copy), device="cpu", dtype="bf16").fingerprint()["dtype"] != after["dtype"]


@pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)
def test_two_servers_share_redis_and_survive_it_stopping_and_dying(engine: Reranker, tmp_path: Path) -> None:
    pytest.importorskip("redis", reason="needs redis-py: pip install 'rerankd[cache]'")
    redis_server = RedisServer(tmp_path / "redis", "--maxmemory-policy", "allkeys-lru").start()
    settings = CacheSettings(mode="redis", size=0, redis_url=redis_server.url, timeout_ms=50, namespace="t",
                             breaker_threshold=3, breaker_cooldown_s=0.5)
    uncached = {i: s for i, s in enumerate(engine.score(QUERY, DOCS))}
    try:
        with served(engine, settings) as a, served(engine, settings) as b:
            assert rerank(a.url) == pytest.approx(uncached, abs=1e-6)
            app_a_cache = a.app.state.service.cache
            assert app_a_cache.redis.flush(5)
            assert rerank(b.url) == pytest.approx(uncached, abs=1e-6)
            assert metric(b.url, "rerankd_cache_hits_total", tier="redis") == len(DOCS)  # b scored nothing itself

            # Redis paused mid-load: every request still answers, within the timeout, with uncached scores.
            redis_server.signal(signal.SIGSTOP)
            docs = [[f"{d} Variant {k}." for d in DOCS] for k in range(8)]
            expected = [engine.score(QUERY, batch) for batch in docs]
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                got = list(pool.map(lambda batch: rerank(b.url, batch), docs))
            assert time.monotonic() - started < 30
            for answer, want in zip(got, expected):
                assert answer == pytest.approx(dict(enumerate(want)), abs=1e-6)
            assert metric(b.url, "rerankd_cache_errors_total", tier="redis") > 0
            redis_server.signal(signal.SIGCONT)

            # Redis killed: the circuit opens, requests keep answering; restarted, it closes again.
            port = redis_server.port
            redis_server.kill()
            for _ in range(5):
                assert rerank(a.url, ["Only while Redis is down."]) is not None
            assert metric(a.url, "rerankd_cache_circuit_opens_total", tier="redis") >= 1
            redis_server = RedisServer(tmp_path / "redis2", port=port).start()
            deadline = time.monotonic() + 20
            while metric(a.url, "rerankd_cache_circuit_state", tier="redis", state="closed") != 1:
                assert time.monotonic() < deadline, "the circuit never closed after Redis came back"
                rerank(a.url, [f"Probe {time.monotonic()}."])
                time.sleep(0.2)
    finally:
        redis_server.stop()
