"""Drift end to end on the bundled model over real HTTP: relevant queries, then off-topic ones, move the
drift gauges in /metrics.

The server's own wiring is under test: each pipeline's finish step feeds its model's monitor, and the
app's registry exports the monitors' collector.
"""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_server import LiveServer

from rerankd import Reranker
from rerankd.drift import DriftMonitor, DriftSettings
from rerankd.server import ServerSettings, create_app

DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Bananas are a yellow fruit rich in potassium.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The stock market fell sharply on Monday after weak earnings reports.",
    "Mount Everest is the highest mountain above sea level.",
    "The heart pumps blood through the body's arteries and veins.",
    "Python is a popular programming language for data science.",
    "The Great Wall of China stretches for thousands of kilometres.",
    "Honey bees pollinate flowers and make honey.",
    "The Pacific is the largest and deepest ocean on Earth.",
    "Shakespeare wrote Hamlet, Macbeth and Romeo and Juliet.",
]
#: One query per document above, each answered by it.
RELEVANT = [
    "What is the capital of France?", "Which fruit is high in potassium?", "When was the Eiffel Tower built?",
    "How do plants turn sunlight into energy?", "Why did stocks drop on Monday?",
    "What is the tallest mountain in the world?", "Which organ pumps blood around the body?",
    "Which programming language is used for data science?", "How long is the Great Wall of China?",
    "Which insects make honey?", "What is the biggest ocean?", "Who wrote Hamlet?",
]
#: Queries no document answers (what a broken upstream retriever or a new, unserved audience sends).
OFF_TOPIC = [
    "How do I fix a flat bicycle tire?", "How to feed a sourdough starter", "How to repair a leaking kitchen faucet",
    "What size ski boots should a beginner buy?", "Easy knitting patterns for a wool scarf",
    "How to replace brake pads on a car", "Can cats eat cucumbers?", "Which guitar strings are best for jazz?",
    "How to remove rust from garden tools", "Wedding invitation wording ideas", "How to descale an espresso machine",
    "How often should I water succulents?",
]
WINDOW = len(RELEVANT)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[httpx.Client, DriftMonitor]]:
    engine = Reranker.from_pretrained(device="cpu")
    drift = DriftSettings(reference_size=WINDOW, window_size=WINDOW, min_samples=10)
    app = create_app({"minilm": engine}, ServerSettings(log_requests=False, drift=drift))
    # The server's own wiring: the pipeline's finish step feeds this monitor, /metrics exports it.
    monitor = app.state.service.drift["minilm"]
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=120) as client:
        yield client, monitor


def gauges(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples
            if s.name.startswith("rerankd_drift_")}


def value(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return got[(name, tuple(sorted({"model": "minilm", **labels}.items())))]


def ask(client: httpx.Client, queries: list[str]) -> None:
    for query in queries:
        r = client.post("/v1/rerank", json={"model": "minilm", "query": query, "documents": DOCUMENTS})
        assert r.status_code == 200, r.text


@pytest.mark.slow
def test_off_topic_queries_move_the_drift_gauges(served: tuple[httpx.Client, DriftMonitor]) -> None:
    client, monitor = served
    ask(client, RELEVANT)  # the reference window: the first 12 queries
    got = gauges(client)
    assert value(got, "rerankd_drift_queries", window="reference") == WINDOW
    assert not any(name == "rerankd_drift_psi" for name, _ in got)

    ask(client, RELEVANT)  # the same traffic again: the current window matches the reference
    got = gauges(client)
    assert value(got, "rerankd_drift_queries", window="current") == WINDOW
    assert abs(value(got, "rerankd_drift_mean_shift", statistic="max")) < 1
    assert value(got, "rerankd_drift_psi", statistic="max") < 0.1
    steady_low = value(got, "rerankd_drift_top_score_bucket", le="0.4")

    ask(client, OFF_TOPIC)  # the whole current window is off-topic now
    got = gauges(client)
    for statistic in ("max", "mean"):
        assert value(got, "rerankd_drift_mean_shift", statistic=statistic) < -3, statistic
        assert value(got, "rerankd_drift_psi", statistic=statistic) > 0.2, statistic
        assert value(got, "rerankd_drift_ks_pvalue", statistic=statistic) < 0.01, statistic
    assert (value(got, "rerankd_drift_score_quantile", statistic="max", window="current", quantile="0.9")
            < value(got, "rerankd_drift_score_quantile", statistic="max", window="reference", quantile="0.1"))
    # Relevant top scores are cosines above 0.5 on this model; off-topic ones fall below 0.4.
    assert value(got, "rerankd_drift_top_score_bucket", le="0.4") - steady_low == len(OFF_TOPIC)
    assert value(got, "rerankd_drift_top_score_bucket", le="+Inf") == 3 * WINDOW
    # The /metrics numbers are the monitor's own.
    assert value(got, "rerankd_drift_psi", statistic="max") == pytest.approx(monitor.snapshot()["statistics"]["max"]["psi"])
