"""The score-drift monitor: its statistics on seeded streams, its windows, its reference file, its
Prometheus export and the shipped alert rules."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rerankd.drift import (
    COSINE_BUCKETS,
    LOGIT_BUCKETS,
    STATISTICS,
    DriftCollector,
    DriftMonitor,
    DriftSettings,
    ReferenceSnapshot,
    load_reference,
    monitors_for,
)
from rerankd.drift import prometheus as drift_prom
from rerankd.drift import stats
from rerankd.errors import InputError

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rerankd-alerts.yml"
FINGERPRINT = {"revision": "abc123", "family": "cross-encoder", "backend": "torch", "dtype": "fp32", "device": "cpu"}
DEFAULTS = DriftSettings()


def query_scores(rng: np.random.Generator, shift: float = 0.0, documents: int = 8) -> np.ndarray:
    """One query's raw scores: a per-query level ~ N(shift, 1) (queries differ in how well they match
    the corpus) plus per-document noise ~ N(0, 0.5). Each per-query statistic has a spread of about 1, so
    ``shift=-1`` moves every statistic by about -1 sigma."""
    return rng.normal(shift, 1.0) + rng.normal(0.0, 0.5, size=documents)


def fed(monitor: DriftMonitor, seed: int, reference: int, current: int, shift: float = 0.0) -> DriftMonitor:
    rng = np.random.default_rng(seed)
    for _ in range(reference):
        assert monitor.observe(query_scores(rng))
    for _ in range(current):
        assert monitor.observe(query_scores(rng, shift))
    return monitor


def default_monitor() -> DriftMonitor:
    return DriftMonitor(DEFAULTS.reference_size, DEFAULTS.window_size, DEFAULTS.min_samples, fingerprint=FINGERPRINT)


def render(monitors: dict[str, DriftMonitor]) -> str:
    registry = CollectorRegistry()
    registry.register(DriftCollector(monitors))
    return generate_latest(registry).decode()


def samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


# -- the statistics on seeded streams ---------------------------------------------------------------


def test_a_minus_one_sigma_shift_is_flagged_on_every_statistic() -> None:
    monitor = fed(default_monitor(), seed=7, reference=DEFAULTS.reference_size, current=DEFAULTS.window_size, shift=-1.0)
    snapshot = monitor.snapshot()
    for name in STATISTICS:
        entry = snapshot["statistics"][name]
        assert entry["mean_shift"] < -10, (name, entry["mean_shift"])
        assert entry["psi"] > 0.2, (name, entry["psi"])
        assert entry["ks_pvalue"] < 1e-10 and entry["ks_statistic"] > 0.25, (name, entry)
        assert entry["current"]["quantiles"]["0.5"] < entry["reference"]["quantiles"]["0.5"] - 0.5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_distribution_is_not_flagged(seed: int) -> None:
    snapshot = fed(default_monitor(), seed, DEFAULTS.reference_size, DEFAULTS.window_size).snapshot()
    for name in STATISTICS:
        entry = snapshot["statistics"][name]
        assert entry["psi"] < 0.1, (name, entry["psi"])
        assert abs(entry["mean_shift"]) < 3, (name, entry["mean_shift"])
        assert entry["ks_pvalue"] > 0.01, (name, entry["ks_pvalue"])


def test_default_min_samples_keeps_psi_noise_below_the_alert() -> None:
    # Why min_samples is 200: PSI's noise grows as 1/n_current; at 50 queries it reaches the 0.2 threshold.
    worst = {}
    for min_samples in (50, DEFAULTS.min_samples):
        psis = []
        for seed in range(10):
            monitor = DriftMonitor(DEFAULTS.reference_size, DEFAULTS.window_size, min_samples)
            fed(monitor, 100 + seed, DEFAULTS.reference_size, min_samples)
            psis.append(monitor.snapshot()["statistics"]["max"]["psi"])
        worst[min_samples] = max(psis)
    assert worst[DEFAULTS.min_samples] < 0.12
    assert worst[50] > worst[DEFAULTS.min_samples]


def test_mean_shift_definition() -> None:
    ref = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    cur = np.array([3.0, 4.0, 5.0])
    want = (4.0 - 2.0) / (np.std(ref, ddof=1) * np.sqrt(1 / 5 + 1 / 3))
    assert stats.mean_shift(ref, cur) == pytest.approx(want, rel=1e-12)
    assert stats.mean_shift(np.ones(10), np.ones(5)) == 0.0
    assert stats.mean_shift(np.ones(10), np.zeros(5)) == -np.inf


def test_psi_uses_reference_deciles_and_an_epsilon_for_empty_bins() -> None:
    ref = np.arange(1000.0)
    assert len(stats.decile_edges(ref)) == 9
    np.testing.assert_allclose(stats.bin_shares(ref, stats.decile_edges(ref)), 0.1)
    # Everything in the top decile: nine bins are empty, each counted as epsilon, and PSI stays finite.
    cur = np.full(100, 10_000.0)
    r, eps = 0.1, stats.PSI_EPSILON
    want = 9 * (eps - r) * np.log(eps / r) + (1 - r) * np.log(1 / r)
    assert stats.psi(ref, cur) == pytest.approx(want, rel=1e-9)


def test_ks_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy (the eval extra) is the reference for the KS test")
    rng = np.random.default_rng(0)
    for n_ref, n_cur in [(1000, 200), (1000, 500), (500, 500), (200, 200)]:
        for shift in (0.0, 0.1, 0.2, 0.3):
            a, b = rng.normal(size=n_ref), rng.normal(shift, size=n_cur)
            d, p = stats.ks_2samp(a, b)
            want = scipy_stats.ks_2samp(a, b)
            assert d == pytest.approx(want.statistic, abs=1e-12)
            assert abs(p - want.pvalue) < 0.02, (n_ref, n_cur, shift, p, want.pvalue)
            if 2e-3 < want.pvalue < 0.05:  # around the alert's 0.01
                assert p == pytest.approx(want.pvalue, rel=0.15)
    # Ties: D is still the largest gap of the two empirical CDFs.
    a, b = np.repeat([0.0, 1.0], 300), np.repeat([0.0, 1.0, 2.0], 100)
    assert stats.ks_2samp(a, b)[0] == pytest.approx(scipy_stats.ks_2samp(a, b).statistic)


# -- the windows ----------------------------------------------------------------------------------


def test_gauges_are_absent_until_both_windows_are_ready() -> None:
    monitor = DriftMonitor(reference_size=100, window_size=80, min_samples=40)
    rng = np.random.default_rng(0)
    for _ in range(99):
        monitor.observe(query_scores(rng))
    snapshot = monitor.snapshot()
    assert snapshot["reference"] == {"queries": 99, "size": 100, "complete": False, "source": "stream"}
    assert all(entry == {} for entry in snapshot["statistics"].values())
    monitor.observe(query_scores(rng))
    for _ in range(39):
        monitor.observe(query_scores(rng))
    snapshot = monitor.snapshot()
    assert snapshot["reference"]["complete"] and snapshot["current"]["queries"] == 39
    assert all(set(entry) == {"reference"} for entry in snapshot["statistics"].values())
    text = render({"m": monitor})
    names = {s.name for s in samples(text)}
    assert "rerankd_drift_psi" not in names and "rerankd_drift_mean_shift" not in names
    assert 'rerankd_drift_queries{model="m",window="current"} 39.0' in text
    assert 'window="current"' not in text.split("rerankd_drift_score_mean", 1)[1].split("# HELP", 1)[0]
    monitor.observe(query_scores(rng))
    text = render({"m": monitor})
    for name in ("rerankd_drift_psi", "rerankd_drift_mean_shift", "rerankd_drift_ks_pvalue", "rerankd_drift_ks_statistic"):
        assert sum(s.name == name for s in samples(text)) == 3, name


def test_the_current_window_holds_the_last_queries() -> None:
    monitor = DriftMonitor(reference_size=20, window_size=50, min_samples=10)
    for i in range(20 + 170):  # one-document queries whose score is their index
        monitor.observe([float(i)])
    last = np.arange(190 - 50, 190, dtype=np.float64)
    current = monitor.snapshot()["statistics"]["mean"]["current"]
    assert current["mean"] == pytest.approx(last.mean())
    assert current["quantiles"] == pytest.approx({"0.1": np.quantile(last, 0.1), "0.5": np.quantile(last, 0.5),
                                                  "0.9": np.quantile(last, 0.9)})
    # The reference is the first 20 queries and never moves.
    assert monitor.snapshot()["statistics"]["max"]["reference"]["mean"] == pytest.approx(9.5)


def test_per_query_statistics_are_max_mean_median() -> None:
    monitor = DriftMonitor(reference_size=10, window_size=10, min_samples=10)
    for _ in range(10):
        monitor.observe([4.0, -2.0, 1.0, 0.0])
    reference = monitor.reference()
    assert reference is not None
    np.testing.assert_array_equal(reference.values, np.tile([4.0, 0.75, 0.5], (10, 1)))
    rng = np.random.default_rng(3)
    for size in (1, 2, 5, 6, 101):
        scores = rng.normal(size=size)
        one = DriftMonitor(10, 10, 10)
        for _ in range(10):
            one.observe(scores.tolist())
        got = one.reference()
        assert got is not None
        assert got.values[0].tolist() == pytest.approx([scores.max(), scores.mean(), np.median(scores)], abs=1e-15)


def test_empty_and_non_finite_queries_are_skipped() -> None:
    monitor = DriftMonitor(reference_size=10, window_size=10, min_samples=10)
    assert monitor.observe([]) is False
    assert monitor.observe([1.0, float("nan")]) is False
    assert monitor.observe([float("-inf"), 2.0]) is False
    snapshot = monitor.snapshot()
    assert snapshot["reference"]["queries"] == 0 and snapshot["top_score"]["count"] == 0
    assert snapshot["skipped_queries"] == 2


def test_memory_stays_bounded_however_many_queries() -> None:
    monitor = DriftMonitor(reference_size=100, window_size=100, min_samples=50)
    rng = np.random.default_rng(0)
    batches = [query_scores(rng) for _ in range(64)]
    window = monitor._window  # noqa: SLF001 - the ring buffer itself must never be reallocated
    for i in range(300):
        monitor.observe(batches[i % 64])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(3000):
            monitor.observe(batches[i % 64])
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # Keeping every query's three floats would be 72 kB here.
    assert grown < 8192, f"observe() grew memory by {grown} bytes over 3000 queries"
    assert monitor._window is window and window.shape == (100, 3)  # noqa: SLF001
    snapshot = monitor.snapshot()
    assert snapshot["current"]["queries"] == 100 and snapshot["reference"]["queries"] == 100
    assert len(snapshot["top_score"]["counts"]) == len(LOGIT_BUCKETS) + 1
    assert snapshot["top_score"]["count"] == 3300


# -- the reference file ---------------------------------------------------------------------------


def test_reference_round_trip_gives_the_same_statistics(tmp_path: Path) -> None:
    original = fed(DriftMonitor(200, 100, 50, fingerprint=FINGERPRINT), seed=5, reference=200, current=0)
    path = original.save_reference(tmp_path / "ref.json")
    loaded = load_reference(path, FINGERPRINT)
    reference = original.reference()
    assert reference is not None
    np.testing.assert_array_equal(loaded.values, reference.values)
    assert loaded.fingerprint == FINGERPRINT
    restored = DriftMonitor(999, 100, 50, reference=loaded, fingerprint=FINGERPRINT)
    assert restored.snapshot()["reference"] == {"queries": 200, "size": 200, "complete": True, "source": "file"}
    rng = np.random.default_rng(11)
    for _ in range(100):
        scores = query_scores(rng, -0.5)
        original.observe(scores)
        restored.observe(scores)
    assert restored.snapshot()["statistics"] == original.snapshot()["statistics"]
    body = json.loads(path.read_text())
    assert body["format"] == "rerankd-drift-reference" and body["fingerprint"] == FINGERPRINT and body["queries"] == 200


def test_a_reference_of_another_model_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = fed(DriftMonitor(50, 50, 50, fingerprint=FINGERPRINT), 0, 50, 0).save_reference(tmp_path / "ref.json")
    with pytest.raises(InputError, match=r"'dtype' is 'fp32' there but 'bf16' here"):
        load_reference(path, {**FINGERPRINT, "dtype": "bf16"})
    with pytest.raises(InputError, match=r"'max_length' is '\(absent\)' there but '512' here"):
        load_reference(path, {**FINGERPRINT, "max_length": "512"})
    snapshot = load_reference(path, FINGERPRINT)
    with pytest.raises(InputError, match="'revision'"):
        DriftMonitor(50, 50, 50, reference=snapshot, fingerprint={**FINGERPRINT, "revision": "def456"})


def test_bad_reference_files_and_early_saves_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no drift reference at"):
        load_reference(tmp_path / "missing.json", FINGERPRINT)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        load_reference(bad, FINGERPRINT)
    bad.write_text(json.dumps({"format": "rerankd-drift-reference", "version": 1, "fingerprint": FINGERPRINT,
                               "queries": 3, "statistics": {"max": [1, 2, 3], "mean": [1, 2], "median": [1, 2, 3]}}))
    with pytest.raises(InputError, match="inconsistent"):
        load_reference(bad, FINGERPRINT)
    with pytest.raises(InputError, match="holds 3 of 50 queries"):
        fed(DriftMonitor(50, 50, 50), 0, 3, 0).save_reference(tmp_path / "early.json")
    with pytest.raises(InputError, match="min_samples"):
        DriftMonitor(100, 100, 80, reference=ReferenceSnapshot(np.zeros((20, 3)), FINGERPRINT))


def test_settings_collect_then_reuse_a_reference_file(tmp_path: Path) -> None:
    settings = DriftSettings(reference_size=60, window_size=40, min_samples=20,
                             reference_file=str(tmp_path / "{model}.json"))
    models = {"org/model": (FINGERPRINT, "cross-encoder"), "other": (FINGERPRINT, "bi-encoder")}
    first = monitors_for(settings, models)
    assert first["other"].buckets == COSINE_BUCKETS and first["org/model"].buckets == LOGIT_BUCKETS
    fed(first["org/model"], 0, 60, 0)
    written = first["org/model"].wait_for_save(10)
    assert written == tmp_path / "org--model.json" and written.exists()
    assert first["other"].wait_for_save(0) is None
    second = monitors_for(settings, models)["org/model"]
    assert second.snapshot()["reference"]["source"] == "file"
    fed(second, 1, 0, 20)
    assert "psi" in second.snapshot()["statistics"]["median"]
    with pytest.raises(InputError, match="'backend'"):
        monitors_for(settings, {"org/model": ({**FINGERPRINT, "backend": "onnx"}, "cross-encoder"),
                                "x": ({}, "bi-encoder")})
    assert monitors_for(DriftSettings(enabled=False), models) == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"min_samples": 5}, "at least 10"),
    ({"min_samples": 600}, "at most window_size"),
    ({"reference_size": 100}, "at most reference_size"),
    ({"window_size": 200_000}, "at most 100000"),
    ({"window_size": 2.5}, "whole number"),
    ({"reference_size": True}, "whole number"),
    ({"reference_file": " "}, "empty"),
])
def test_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        DriftSettings(**kwargs)


def test_several_models_need_a_model_placeholder() -> None:
    with pytest.raises(InputError, match=r"\{model\} placeholder"):
        DriftSettings(reference_file="ref.json").reference_path("a", served_models=2)
    assert DriftSettings(reference_file="ref.json").reference_path("a") == Path("ref.json")


# -- the Prometheus export ------------------------------------------------------------------------


def test_collector_renders_every_family_with_model_and_statistic_labels() -> None:
    monitors = {"a": fed(DriftMonitor(100, 100, 50), 0, 100, 100, shift=-1.0), "b": DriftMonitor(100, 100, 50)}
    text = render(monitors)
    got = samples(text)
    assert {s.name for s in got} == drift_prom.metric_names()
    assert all(s.name.startswith("rerankd_drift_") for s in got)
    psi = {s.labels["statistic"]: s.value for s in got if s.name == "rerankd_drift_psi"}
    snapshot = monitors["a"].snapshot()
    assert psi == pytest.approx({name: snapshot["statistics"][name]["psi"] for name in STATISTICS})
    assert all(s.labels["model"] == "a" for s in got if s.name == "rerankd_drift_psi")
    quantiles = {(s.labels["window"], s.labels["quantile"]) for s in got
                 if s.name == "rerankd_drift_score_quantile" and s.labels["statistic"] == "max"}
    assert quantiles == {(w, q) for w in ("reference", "current") for q in ("0.1", "0.5", "0.9")}
    # The top-score histogram: cumulative buckets ending at +Inf with every observed query.
    buckets = [s for s in got if s.name == "rerankd_drift_top_score_bucket" and s.labels["model"] == "a"]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf" and len(buckets) == len(LOGIT_BUCKETS) + 1
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and counts[-1] == 200
    empty = [s.value for s in got if s.name == "rerankd_drift_top_score_bucket" and s.labels["model"] == "b"]
    assert empty == [0.0] * (len(LOGIT_BUCKETS) + 1)


def test_collector_refuses_a_second_registration() -> None:
    registry = CollectorRegistry()
    registry.register(DriftCollector({"m": DriftMonitor(100, 100, 50)}))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(DriftCollector({"n": DriftMonitor(100, 100, 50)}))


# -- the shipped alert rules ----------------------------------------------------------------------

#: The only expression shape the rules use (and this test evaluates): comparisons joined by "or".
COMPARISON = re.compile(r"^(?P<metric>rerankd_drift_[a-z_]+) (?P<op>[<>]) (?P<threshold>-?[0-9.]+)$")
THRESHOLDS = {
    "RerankdScoreMeanShift": [("rerankd_drift_mean_shift", ">", drift_prom.ALERT_MEAN_SHIFT_SE),
                              ("rerankd_drift_mean_shift", "<", -drift_prom.ALERT_MEAN_SHIFT_SE)],
    "RerankdScorePSI": [("rerankd_drift_psi", ">", drift_prom.ALERT_PSI)],
    "RerankdScoreKS": [("rerankd_drift_ks_pvalue", "<", drift_prom.ALERT_KS_PVALUE)],
}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def comparisons(rule: dict[str, Any]) -> list[tuple[str, str, float]]:
    parts = [COMPARISON.match(part.strip()) for part in rule["expr"].split(" or ")]
    assert all(parts), f"{rule['alert']}: this test only evaluates 'metric > number [or ...]', got {rule['expr']!r}"
    return [(m["metric"], m["op"], float(m["threshold"])) for m in parts if m]


def firing(rule: dict[str, Any], text: str) -> list[dict[str, str]]:
    """The label sets ``rule``'s expression selects in the exposition ``text``."""
    fired = []
    for s in samples(text):
        for metric, op, threshold in comparisons(rule):
            if s.name == metric and ((s.value > threshold) if op == ">" else (s.value < threshold)):
                fired.append(s.labels)
    return fired


def test_alert_rules_use_emitted_metrics_and_documented_thresholds() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == set(THRESHOLDS)
    text = render({"m": fed(DriftMonitor(100, 100, 50), 0, 100, 100, shift=-1.0)})
    emitted = {s.name for s in samples(text)}
    for rule in rules:
        referenced = set(re.findall(r"rerankd_[a-z_]+", rule["expr"]))
        assert referenced and referenced <= emitted, (rule["alert"], referenced - emitted)
        assert comparisons(rule) == THRESHOLDS[rule["alert"]]
        assert rule["for"] == drift_prom.ALERT_FOR
        assert rule["labels"]["severity"] in {"warning", "info"} and rule["annotations"]["summary"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not on PATH")
def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    # Real PromQL evaluation, `for: 15m` included: deploy/prometheus/rerankd-alerts.test.yml.
    for args in (["check", "rules", ALERTS.name], ["test", "rules", "rerankd-alerts.test.yml"]):
        done = subprocess.run(["promtool", *args], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_fire_on_drift_and_stay_quiet_without() -> None:
    drifted = render({"m": fed(default_monitor(), 7, DEFAULTS.reference_size, DEFAULTS.window_size, shift=-1.0)})
    steady = render({"m": fed(default_monitor(), 8, DEFAULTS.reference_size, DEFAULTS.window_size)})
    collecting = render({"m": fed(default_monitor(), 9, DEFAULTS.reference_size, DEFAULTS.min_samples - 1, shift=-1.0)})
    for rule in alert_rules():
        assert {labels["statistic"] for labels in firing(rule, drifted)} == set(STATISTICS), rule["alert"]
        assert firing(rule, steady) == [], rule["alert"]
        assert firing(rule, collecting) == [], rule["alert"]


# -- the serve flags --------------------------------------------------------------------------------


def test_serve_flags_and_their_environment_variables() -> None:
    import argparse

    from rerankd.cli import apply_env_defaults
    from rerankd.drift.options import add_drift_arguments, drift_settings_from

    parser = argparse.ArgumentParser()
    add_drift_arguments(parser)
    assert drift_settings_from(parser.parse_args([])) == DriftSettings()
    args = parser.parse_args(["--drift-reference", "refs/{model}.json", "--drift-reference-size", "400",
                              "--drift-window", "300", "--drift-min-samples", "100"])
    assert drift_settings_from(args) == DriftSettings(True, 400, 300, 100, "refs/{model}.json")
    apply_env_defaults(parser, {"RERANKD_NO_DRIFT": "1", "RERANKD_DRIFT_WINDOW": "250"})
    settings = drift_settings_from(parser.parse_args([]))
    assert not settings.enabled and settings.window_size == 250
    with pytest.raises(InputError, match="at most window_size"):
        drift_settings_from(parser.parse_args(["--drift-min-samples", "260"]))
