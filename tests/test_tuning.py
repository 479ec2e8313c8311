"""Tuning: the chosen default is one of the measured candidates, is recorded, and is what backend="auto" runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankd import Reranker
from rerankd.cli import main
from rerankd.tuning import AccuracyBound, BackendChoice, load_record, record_path, tune


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RERANKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_choice_is_a_measured_candidate_and_recorded(bert_ce: Path, cache: Path) -> None:
    record = tune(str(bert_ce), n_docs=8, reps=1)
    measured = {(r["backend"], r["dtype"]): r for r in record["candidates"]}
    assert set(measured) == {("torch", "bf16"), ("torch-int8", "int8"), ("onnx", "fp32"), ("onnx", "int8")}
    choice = (record["choice"]["backend"], record["choice"]["dtype"])
    assert choice in measured and measured[choice]["accepted"]
    accepted = [r for r in record["candidates"] if r["accepted"]]
    assert measured[choice]["pairs_per_s"] == max(r["pairs_per_s"] for r in accepted)
    # ONNX fp32 equals torch fp32, so at least one candidate always passes the bound.
    assert measured[("onnx", "fp32")]["accepted"] and measured[("onnx", "fp32")]["spearman"] > 0.999
    assert record_path(bert_ce).is_relative_to(cache) and load_record(bert_ce) == record
    assert record["choice"]["backend"] in record["why"]


def test_auto_backend_uses_the_record_without_retuning(bert_ce: Path, sentences: list[str]) -> None:
    record = tune(str(bert_ce), candidates=(BackendChoice("onnx", "fp32"),), n_docs=6, reps=1)
    stamp = record_path(bert_ce).stat().st_mtime_ns
    reranker = Reranker.from_pretrained(str(bert_ce), backend="auto")
    assert reranker.backend.name == record["choice"]["backend"] == "onnx"
    assert record_path(bert_ce).stat().st_mtime_ns == stamp
    assert len(reranker.score("capital of France", sentences)) == len(sentences)


def test_auto_backend_tunes_at_first_use(xlmr_ce: Path) -> None:
    assert load_record(xlmr_ce) is None
    reranker = Reranker.from_pretrained(str(xlmr_ce), backend="auto")
    record = load_record(xlmr_ce)
    assert record is not None and reranker.backend.name == record["choice"]["backend"]


def test_no_candidate_within_bound_falls_back_to_fp32(bert_ce: Path) -> None:
    record = tune(str(bert_ce), candidates=(BackendChoice("torch", "bf16"),), bound=AccuracyBound(min_spearman=1.01), n_docs=6, reps=1)
    assert record["choice"] == {"backend": "torch", "dtype": "fp32", "artifact": None}
    assert "no candidate" in record["why"] and not record["candidates"][0]["accepted"]


def test_info_says_what_was_chosen_and_why(bert_ce: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--model", str(bert_ce), "--docs", "6", "--reps", "1", "--candidates", "onnx:fp32,torch:bf16"]) == 0
    capsys.readouterr()
    assert main(["info", "--model", str(bert_ce)]) == 0
    tuned = json.loads(capsys.readouterr().out)["tuned"]
    assert tuned["choice"] in {"onnx fp32", "torch bf16"} and "fastest" in tuned["why"]
    assert set(tuned["measured"]) == {"onnx fp32", "torch bf16"}


def test_one_cache_root_for_tuning_and_eval(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rerankd.commands.eval import default_cache_dir
    from rerankd.hub import cache_root

    monkeypatch.delenv("RERANKD_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "rerankd" and default_cache_dir() == tmp_path / "xdg" / "rerankd" / "eval"
    monkeypatch.setenv("RERANKD_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine" and default_cache_dir() == tmp_path / "mine" / "eval"
