"""Dynamic int8 and 4-bit weights on the real all-MiniLM-L6-v2 keep the fp32 ranking on real SciFact text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from rerankd import Reranker
from rerankd.export import export_model
from tiny_models import DATA

SCIFACT = DATA / "scifact"
pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact")


def scifact_candidates(queries: int = 6, k: int = 20) -> list[tuple[str, list[str]]]:
    """SciFact queries with their BM25 top-k abstracts: the near-ties a reranker actually has to order."""
    import bm25s

    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as fh:
        texts = [f"{row['title']}. {row['text']}" for row in map(json.loads, fh)]
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as fh:
        qs = [json.loads(line)["text"] for _, line in zip(range(queries), fh)]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    hits, _ = retriever.retrieve(bm25s.tokenize(qs, stopwords="en", show_progress=False), k=k, show_progress=False)
    return [(q, [texts[i] for i in row]) for q, row in zip(qs, hits)]


def ranking_agreement(reference: Reranker, other: Reranker) -> tuple[float, list[float], float]:
    """(Spearman over all pairs, Spearman per query, max |Δscore|) of ``other`` against ``reference`` on SciFact."""
    per_query, all_ref, all_got = [], [], []
    for query, docs in scifact_candidates():
        ref, got = np.array(reference.score(query, docs)), np.array(other.score(query, docs))
        per_query.append(spearmanr(ref, got).statistic)
        all_ref.extend(ref)
        all_got.extend(got)
    return spearmanr(all_ref, all_got).statistic, per_query, float(np.max(np.abs(np.array(all_ref) - np.array(all_got))))


def test_int8_keeps_spearman_on_bundled_model(tmp_path: Path) -> None:
    fp32 = Reranker.from_pretrained(None, device="cpu", dtype="fp32")
    int8 = Reranker.from_pretrained(str(export_model(None, tmp_path / "minilm-int8", precision="int8")), backend="onnx")
    overall, per_query, max_delta = ranking_agreement(fp32, int8)
    # Over all pairs the ranking holds at 0.99; inside one query's BM25 top-20 (near-ties by
    # construction) int8 swaps a few neighbours: measured per-query 0.983-0.997, mean 0.990.
    assert overall >= 0.99
    assert np.mean(per_query) >= 0.985, per_query
    assert min(per_query) >= 0.97, per_query
    assert max_delta < 0.05


def test_int4_keeps_most_of_the_ranking_on_bundled_model(tmp_path: Path) -> None:
    """4-bit blocks of 32 cost more than int8 but keep the order: measured 0.984 over all pairs, per query 0.962-0.99."""
    from rerankd.export import read_export_info

    fp32_dir = export_model(None, tmp_path / "minilm-fp32")
    int4_dir = export_model(None, tmp_path / "minilm-int4", precision="int4")
    fp32, int4 = (Reranker.from_pretrained(str(d), backend="onnx") for d in (fp32_dir, int4_dir))
    overall, per_query, max_delta = ranking_agreement(fp32, int4)
    assert overall >= 0.975
    assert np.mean(per_query) >= 0.96 and min(per_query) >= 0.94, per_query
    assert max_delta < 0.15
    info = read_export_info(int4_dir)
    assert info is not None and info.quantization["quantized"] == "18 MatMulNBits, 0 GatherBlockQuantized"
    size = {d: sum(f.stat().st_size for f in d.glob("model.onnx*")) for d in (fp32_dir, int4_dir)}
    assert size[int4_dir] < 0.75 * size[fp32_dir], size  # the fp32 embedding table (45 MiB) is most of what is left
