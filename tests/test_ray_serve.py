"""``rerankd serve --ray``: the same app as two Ray Serve replicas (half a CPU each) on the session's local Ray.

Clients get the plain server's answers, every dialect; the replicas share one Redis result cache; the load spreads over both replicas (the
``x-rerankd-replica`` header says which answered); a replica killed mid-load is replaced by Serve and
every request sent after the kill is answered. Bad configuration exits with status 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from redis_server import free_port

from rerankd.cli import main
from rerankd.server import ServerSettings

pytestmark = pytest.mark.slow
API_KEY = "ray-key-7"
SERVED = "tiny"
QUERY = "What is the capital of France?"
HEADER = "x-rerankd-replica"


@dataclass
class PlainServer:
    url: str


@pytest.fixture(scope="module")
def plain(bert_ce: Path) -> Iterator[PlainServer]:
    """The plain server in its own process on 1 thread, as a replica of half a CPU runs.

    oneDNN lays out the reordered fp32 weights for the threads of the process it starts in, and the
    layout decides the last bits of a score: "the same answers" holds for the same app on the same
    threads (Ray starts a half-CPU replica with OMP_NUM_THREADS=1).
    """
    port = free_port()
    command = [sys.executable, "-m", "rerankd.cli", "serve", "-m", f"{SERVED}={bert_ce}", "--port", str(port),
               "--device", "cpu", "--dtype", "fp32", "--api-key", API_KEY, "--no-access-log", "--log-level", "warning"]
    server = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while _status(f"{url}/ready") != 200:
            assert server.poll() is None and time.monotonic() < deadline, "the plain server did not start"
            time.sleep(0.2)
        yield PlainServer(url)
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis both replicas share: fakeredis' TCP server on loopback (the replicas speak real Redis to it)."""
    import threading

    fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed (the test extra has it)")
    port = free_port()
    server = fakeredis.TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def on_ray(local_ray: str, bert_ce: Path, redis_url: str) -> Iterator[str]:
    from ray import serve

    from rerankd.cache import CacheSettings
    from rerankd.ray import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ServerSettings(api_key=API_KEY, log_requests=False, cache=CacheSettings(mode="redis", redis_url=redis_url))
    app = build_app([f"{SERVED}={bert_ce}"], settings, load_options={"device": "cpu", "dtype": "fp32"}, replicas=2,
                    replica_cpus=0.5)
    serve.run(app, name="rerankd", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while _status(f"{url}/ready") != 200:
        assert time.monotonic() < deadline, "the Serve replicas never became ready"
        time.sleep(0.2)
    try:
        yield url
    finally:
        serve.shutdown()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def post(url: str, path: str, body: dict[str, Any], request_id: str = "same-id", **headers: str) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}", "x-request-id": request_id, **headers})


BODIES = [
    ("/v1/rerank", {"model": "rerank-v3.5", "query": QUERY, "documents": None, "top_n": 3, "return_documents": True}),
    ("/v2/rerank", {"model": SERVED, "query": QUERY, "documents": None}),
    ("/rerank", {"query": QUERY, "texts": None, "return_text": True}),  # TEI
    ("/v1/rerank", {"model": "jina-reranker-v2-base-multilingual", "query": QUERY, "documents": None, "top_n": 2}),
    ("/voyage/v1/rerank", {"query": QUERY, "documents": None, "top_k": 2}),
    ("/v1/reranking", {"model": "mixedbread-ai/mxbai-rerank-large-v2", "query": QUERY, "input": None}),
    ("/score", {"model": SERVED, "text_1": QUERY, "text_2": None}),
    ("/v1/rerank", {"query": QUERY, "documents": []}),  # an error: the same 4xx body
]


@pytest.mark.parametrize("path,body", BODIES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(BODIES)])
def test_every_dialect_answers_as_the_plain_server(plain: PlainServer, on_ray: str, sentences: list[str], path: str,
                                                   body: dict[str, Any]) -> None:
    body = {k: (sentences if v is None else v) for k, v in body.items()}
    # Scored afresh (a cached answer reports 0 tokens used; the plain server has no cache).
    fresh = {"Cache-Control": "no-cache"}
    want, got = post(plain.url, path, body, **fresh), post(on_ray, path, body, **fresh)
    assert got.status_code == want.status_code
    assert HEADER in got.headers and HEADER not in want.headers
    want_json, got_json = want.json(), got.json()
    if isinstance(want_json, dict):  # vLLM's /score says when it answered
        want_json.pop("created", None), got_json.pop("created", None)
    assert got_json == want_json


def test_cohere_sdk_gets_the_plain_servers_ranking(plain: PlainServer, on_ray: str, sentences: list[str]) -> None:
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")

    def ranked(url: str) -> list[tuple[int, float]]:
        res = cohere.ClientV2(api_key=API_KEY, base_url=url).rerank(model="rerank-v3.5", query=QUERY,
                                                                     documents=sentences, top_n=4)
        return [(r.index, r.relevance_score) for r in res.results]

    assert ranked(on_ray) == ranked(plain.url)


def _load(url: str, sentences: list[str], requests: int, clients: int) -> list[tuple[int, str | None, float]]:
    """(status, replica, started) of each request; a connection error counts as status 0."""
    def one(i: int) -> tuple[int, str | None, float]:
        started = time.monotonic()
        try:
            r = post(url, "/v1/rerank", {"query": f"{QUERY} {i}", "documents": sentences}, request_id=f"load-{i}")
            return r.status_code, r.headers.get(HEADER), started
        except httpx.HTTPError:
            return 0, None, started

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(requests)))


def test_both_replicas_answer_under_concurrent_load(on_ray: str, sentences: list[str]) -> None:
    answers = _load(on_ray, sentences, requests=48, clients=16)
    assert [status for status, _, _ in answers] == [200] * 48
    assert len({replica for _, replica, _ in answers}) == 2


def redis_hits(url: str) -> dict[str, float]:
    """Replica → its Redis-tier cache hits, scraping /metrics until both replicas answered.

    The scrapes go out in concurrent bursts: Serve's router sends a request to the less busy of two
    replicas by its cached queue lengths, so one-at-a-time requests can all land on one replica for as
    long as that cache is stale (a loaded CI run once sent 200 sequential scrapes to one replica).
    """
    from prometheus_client.parser import text_string_to_metric_families

    def scrape(_: int) -> tuple[str, float]:
        r = httpx.get(f"{url}/metrics", timeout=30)
        return r.headers[HEADER], sum(s.value for f in text_string_to_metric_families(r.text) for s in f.samples
                                      if s.name == "rerankd_cache_hits_total" and s.labels.get("tier") == "redis")

    hits: dict[str, float] = {}
    deadline = time.monotonic() + 90
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            hits.update(pool.map(scrape, range(8)))
            if len(hits) == 2:
                return hits
            time.sleep(0.25)
    raise AssertionError(f"/metrics was answered by one replica only within 90 s: {hits}")


def test_replicas_share_the_redis_cache(on_ray: str, redis_url: str, sentences: list[str]) -> None:
    import redis

    # A pair a replica scored itself is in its own memory tier; a Redis-tier hit is a pair another replica wrote.
    before = redis_hits(on_ray)
    store = redis.Redis.from_url(redis_url)
    keys_before = store.dbsize()
    body = {"query": "Which river flows through Paris?", "documents": sentences}
    first = post(on_ray, "/v1/rerank", body, request_id="shared")
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 0
    deadline = time.monotonic() + 90
    while store.dbsize() < keys_before + len(sentences):  # the first answer's Redis write is asynchronous
        assert time.monotonic() < deadline, "the first replica never wrote its scores to Redis"
        time.sleep(0.05)
    # Concurrent bursts, so that Serve's router spreads them over both replicas.
    others: list[httpx.Response] = []
    with ThreadPoolExecutor(4) as pool:
        while not others:
            assert time.monotonic() < deadline, "one replica answered every request"
            burst = list(pool.map(lambda _: post(on_ray, "/v1/rerank", body, request_id="shared"), range(4)))
            assert all(r.status_code == 200 for r in burst)
            others = [r for r in burst if r.headers[HEADER] != first.headers[HEADER]]
    second = others[0].json()
    assert second["results"] == first.json()["results"]
    # the second replica scored nothing: every pair came from the Redis the first one wrote
    assert second["usage"]["total_tokens"] == 0
    after = redis_hits(on_ray)
    assert sum(after.values()) - sum(before.values()) >= len(sentences)


def test_a_killed_replica_loses_no_later_request_and_is_restored(on_ray: str, sentences: list[str]) -> None:
    import ray
    from ray import serve

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    assert len(names) == 2
    victim = names[0]
    with ThreadPoolExecutor(1) as side:
        load = side.submit(_load, on_ray, sentences, 120, 8)
        time.sleep(1.0)  # mid-load
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        killed_at = time.monotonic()
        answers = load.result(timeout=300)
    # Requests in flight on the killed replica may fail (at most one per client); every request sent
    # after the kill is routed (and, when it met the dead replica, retried by Ray) to a live one.
    failed = [a for a in answers if a[0] != 200]
    assert len(failed) <= 8
    assert all(status == 200 for status, _, started in answers if started > killed_at + 0.5)
    deadline = time.monotonic() + 120
    while True:  # Serve starts a new replica in its place
        status = serve.status().applications["rerankd"].deployments["rerankd"]
        replicas = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
        if status.status == "HEALTHY" and len(replicas) == 2 and victim not in replicas:
            break
        assert time.monotonic() < deadline, f"Serve did not restore the replica: {status}, {replicas}"
        time.sleep(0.5)
    while _status(f"{on_ray}/ready") != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # The proxy learns of the new replica asynchronously (Serve's long-poll), so a loaded machine may
    # route a first burst to the old one alone: the restored replica must answer before the deadline.
    seen: set[str] = set()
    while len(seen) < 2:
        assert time.monotonic() < deadline, f"only replicas {seen} answered after the restore"
        answers = _load(on_ray, sentences, 48, 16)
        assert all(status == 200 for status, _, _ in answers)
        seen |= {replica for _, replica, _ in answers if replica}


# -- bad configuration: a clear error and exit status 2 -------------------------------------------------


def test_replicas_below_one_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray", reason="ray is not installed: pip install 'rerankd[ray]'")
    assert main(["serve", "--ray", "--replicas", "0"]) == 2
    assert "--replicas must be at least 1, got 0" in capsys.readouterr().err
    assert main(["serve", "--ray", "--autoscale", "3,1"]) == 2
    assert "MIN <= MAX" in capsys.readouterr().err


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    for module in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without rerankd[ray] sees
    assert main(["serve", "--ray"]) == 2
    assert "pip install 'rerankd[ray]'" in capsys.readouterr().err
    args = ["score-run", "--queries", "q.jsonl", "--corpus", "c.jsonl", "--run", "r.trec", "--out",
            str(tmp_path / "o.trec"), "--engine", "ray"]
    assert main(args) == 2
    assert "pip install 'rerankd[ray]'" in capsys.readouterr().err


def test_unreachable_ray_address_exit_2() -> None:
    pytest.importorskip("ray", reason="ray is not installed: pip install 'rerankd[ray]'")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "RAY_ADDRESS": address}
    done = subprocess.run([sys.executable, "-m", "rerankd.cli", "serve", "--ray"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert f"the Ray cluster at {address!r} is unreachable" in done.stderr
