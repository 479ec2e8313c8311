"""`rerankd serve` under loopback load where half the pairs repeat earlier ones: cache off, memory, Redis,
and Redis stopped (SIGSTOP) half-way through the run.

16 closed-loop clients each send 1 query × 20 documents (the rerank-100 workload's SciFact text at its
lognormal token lengths, MiniLM-L6 cross-encoder shape, random weights). The request stream is the same
for every mode: 4 queries; in each request 10 documents were already sent with that query earlier, 10 are
new. Each mode runs against its own fresh `rerankd serve` process (and, for Redis, a fresh redis-server
on loopback with `--save '' --appendonly no`), warmed with a first pass that is not timed.

Targets (issue 15): memory and Redis ≥ 1.8× the uncached pairs/s; Redis stopped costs no errors and no
more than the uncached speed.

Usage: python benchmarks/serve_cache.py [--requests 96] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import workload  # noqa: E402
from serve_load import free_port, start_server  # noqa: E402

QUERIES = ["Which immune cells drive inflammation in chronic kidney disease?", "How does vitamin D affect bone density?",
           "What causes antibiotic resistance in hospitals?", "Does sleep loss impair memory consolidation?"]
DOCS_PER_REQUEST, REPEATS_PER_REQUEST = 20, 10


def request_stream(docs: list[str], n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """n requests; half of each request's pairs repeat pairs sent before (same query, same document)."""
    rng = random.Random(seed)
    sent: dict[str, list[str]] = {q: [] for q in QUERIES}
    fresh = iter(f"{docs[i % len(docs)]} (copy {i})" for i in range(10**9))
    stream = []
    for k in range(n):
        query = QUERIES[k % len(QUERIES)]
        repeats = rng.sample(sent[query], min(REPEATS_PER_REQUEST, len(sent[query])))
        new = [next(fresh) for _ in range(DOCS_PER_REQUEST - len(repeats))]
        sent[query].extend(new)
        documents = repeats + new
        rng.shuffle(documents)
        stream.append((query, documents))
    return stream


async def run_load(url: str, stream: list[tuple[str, list[str]]], clients: int, on_half: object = None
                   ) -> tuple[int, float, list[float], int]:
    """(pairs, seconds, latencies, errors) of ``clients`` closed-loop clients draining ``stream`` in order."""
    queue: asyncio.Queue[tuple[int, tuple[str, list[str]]]] = asyncio.Queue()
    for item in enumerate(stream):
        queue.put_nowait(item)
    latencies: list[float] = []
    errors = 0
    pairs = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors, pairs
        while not queue.empty():
            k, (query, documents) = queue.get_nowait()
            if k == len(stream) // 2 and callable(on_half):
                on_half()
            started = time.perf_counter()
            r = await http.post(f"{url}/v1/rerank", json={"query": query, "documents": documents})
            latencies.append(time.perf_counter() - started)
            if r.status_code == 200:
                pairs += len(documents)
            else:
                errors += 1

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return pairs, time.perf_counter() - started, latencies, errors


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--maxmemory-policy", "allkeys-lru", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    model_dir = workload.build_shape("minilm", args.models_dir / "minilm")
    docs = workload.make_documents(AutoTokenizer.from_pretrained(str(model_dir)), workload.doc_token_lengths(100))
    stream = request_stream(docs, args.requests)
    warm = request_stream(docs, 8, seed=1)
    from rerankd.hardware import MATRIX_FLAGS, cpu_flags

    flags = sorted(set(MATRIX_FLAGS) & cpu_flags())
    print(f"CPU flags: {' '.join(flags)}; {os.cpu_count()} CPUs; {args.clients} clients, {args.requests} requests × "
          f"{DOCS_PER_REQUEST} documents, {REPEATS_PER_REQUEST} of them repeats\n", flush=True)
    modes = [("cache off", ()), ("memory", ("--cache", "memory")), ("redis", ("--cache", "redis")),
             ("redis, stopped half-way", ("--cache", "redis"))]
    rows = []
    for label, extra in modes:
        redis_proc = None
        if "redis" in extra:
            redis_proc, redis_port = start_redis(Path(tempfile.mkdtemp()))
            extra = (*extra, "--redis-url", f"redis://127.0.0.1:{redis_port}/0", "--cache-size", "0")
        port = free_port()
        server = start_server(model_dir, port, 2.0, extra)
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(run_load(url, warm, args.clients))
            stop = (lambda: redis_proc.send_signal(signal.SIGSTOP)) if label.endswith("half-way") and redis_proc else None
            pairs, seconds, latencies, errors = asyncio.run(run_load(url, stream, args.clients, stop))
        finally:
            server.kill()
            if redis_proc is not None:
                redis_proc.send_signal(signal.SIGCONT)
                redis_proc.kill()
        lat = sorted(latencies)
        rows.append((label, pairs / seconds, statistics.median(lat), lat[int(0.99 * (len(lat) - 1))], errors))
        print(f"{label}: {pairs / seconds:.1f} pairs/s, {errors} errors", flush=True)
    base = rows[0][1]
    print("\n| mode | pairs/s | × cache off | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    for label, pps, p50, p99, errors in rows:
        print(f"| {label} | {pps:.1f} | {pps / base:.2f}× | {1000 * p50:.0f} | {1000 * p99:.0f} | {errors} |")


if __name__ == "__main__":
    main()
