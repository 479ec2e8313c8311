"""rerankd quantize: writes the model with a side-by-side report, or refuses and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankd.cli import main
from rerankd.errors import QualityBoundError
from rerankd.quantize import quantize_model
from tiny_models import DATA, skip_without_shared


@pytest.fixture(scope="module")
def small_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BEIR folder cut from SciFact: 5 judged queries, their documents and 150 others."""
    skip_without_shared("data/scifact")
    src, out = DATA / "scifact", tmp_path_factory.mktemp("beir") / "scifact-small"
    (out / "qrels").mkdir(parents=True)
    lines = (src / "qrels" / "train.tsv").read_text().splitlines()
    judged = lines[1:6]
    (out / "qrels" / "test.tsv").write_text("\n".join([lines[0], *judged]) + "\n")
    qids, dids = {ln.split("\t")[0] for ln in judged}, {ln.split("\t")[1] for ln in judged}
    with open(src / "queries.jsonl") as fh:
        (out / "queries.jsonl").write_text("".join(ln for ln in fh if json.loads(ln)["_id"] in qids))
    with open(src / "corpus.jsonl") as fh:
        rows = [ln for i, ln in enumerate(fh) if i < 150 or json.loads(ln)["_id"] in dids]
    (out / "corpus.jsonl").write_text("".join(rows))
    return out


def test_refuses_when_ndcg_bound_is_broken_and_writes_nothing(bert_ce: Path, small_beir: Path, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    # A negative bound asks int8 to *gain* NDCG@10: broken whatever the scores.
    with pytest.raises(QualityBoundError, match="NDCG@10.*by .*bound -1.0"):
        quantize_model(str(bert_ce), "int8", out, eval_dataset=small_beir, max_ndcg_drop=-1.0, candidates=10)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    code = main(["quantize", "--model", str(bert_ce), "--to", "int8", "--out", str(out), "--eval", str(small_beir),
                 "--max-ndcg-drop", "-1", "--candidates", "10"])
    assert code != 0 and not out.exists() and list(tmp_path.iterdir()) == []


def test_bf16_writes_model_and_side_by_side_report(bert_ce: Path, small_beir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    report = quantize_model(str(bert_ce), "bf16", out, eval_dataset=small_beir, max_ndcg_drop=1.0, candidates=10)
    assert (out / "model.safetensors").is_file() and (out / "report.md").is_file()
    assert json.loads((out / "report.json").read_text()) == report
    for side in ("original", "quantized"):
        assert report[side]["size_bytes"] > 0 and report[side]["peak_rss_bytes"] > 0 and report[side]["pairs_per_s"] > 0
    assert report["quantized"]["size_bytes"] < 0.6 * report["original"]["size_bytes"]
    quality = report["quality"]
    assert {"pearson", "spearman", "mean_abs_delta", "top10_overlap_per_query", "ndcg@10", "mrr@10"} <= set(quality)
    assert quality["spearman"] > 0.9 and quality["within_bound"]
    from rerankd import Reranker

    assert Reranker.from_pretrained(str(out)).family.kind == "cross-encoder"


def test_int4_writes_onnx_model_and_report(qwen3_lm: Path, tmp_path: Path) -> None:
    out = tmp_path / "int4"
    report = quantize_model(str(qwen3_lm), "int4", out)
    assert (out / "model.onnx").is_file() and (out / "report.md").is_file()
    assert report["to"] == "int4" and report["quantized"]["backend"] == "onnx" and report["quantized"]["dtype"] == "int4"
    assert report["quantized"]["size_bytes"] < 0.5 * report["original"]["size_bytes"]
    # Measured 0.83: the tiny random model's workload scores lie close together, so 4-bit noise shows;
    # the bound on real weights is in test_onnx_int8_real.
    assert report["quality"]["pearson"] > 0.6
    assert "| backend / precision | torch fp32 | onnx int4 |" in (out / "report.md").read_text()
