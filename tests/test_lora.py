"""LoRA fine-tuning of an LLM yes/no reranker: scores move, merged == base + adapter, the yes − no head exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiny_models import DATA, skip_without_shared

pytestmark = pytest.mark.slow

QUERY = "vitamin D and bone density"
DOCS = ["Vitamin D supplements increase bone density in the elderly.", "Bananas are yellow.", "Sleep improves memory."]


@pytest.fixture(scope="module")
def lora_runs(qwen3_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same LoRA run twice: saved as an adapter, and merged."""
    from rerankd.cli import main

    skip_without_shared("data/scifact")
    root = tmp_path_factory.mktemp("lora")
    common = ["train", "--base", str(qwen3_lm), "--data", str(DATA / "scifact"), "--max-train-queries", "8",
              "--max-dev-queries", "3", "--eval-depth", "4", "--negatives", "3", "--max-length", "160",
              "--groups-per-batch", "4", "--epochs", "1", "--lr", "5e-3", "--no-bf16", "--no-progress", "--no-compare",
              "--lora", "r=4,alpha=8,targets=q_proj,v_proj"]
    assert main([*common, "--out", str(root / "adapter")]) == 0
    assert main([*common, "--out", str(root / "merged"), "--merge-lora"]) == 0
    return root / "adapter", root / "merged"


@pytest.fixture(autouse=True)
def merged_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_CACHE", str(tmp_path / "cache"))  # where adapters are merged at load


def _scores(model: Path | str, **kw) -> np.ndarray:  # type: ignore[no-untyped-def]
    from rerankd import Reranker

    return np.array(Reranker.from_pretrained(str(model), device="cpu", dtype="fp32", **kw).score(QUERY, DOCS, raw=True))


def test_adapter_folder_holds_only_the_adapter(lora_runs: tuple[Path, Path]) -> None:
    adapter, merged = lora_runs
    assert (adapter / "adapter_config.json").is_file() and (adapter / "rerankd_adapter.json").is_file()
    assert not (adapter / "config.json").exists()
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    card = (adapter / "README.md").read_text()
    assert "LoRA r=4" in card and "adapter=" in card


def test_lora_moves_scores_and_merged_equals_base_plus_adapter(qwen3_lm: Path, lora_runs: tuple[Path, Path]) -> None:
    adapter, merged = lora_runs
    base = _scores(qwen3_lm)
    with_adapter = _scores(qwen3_lm, adapter=adapter)
    assert np.max(np.abs(with_adapter - base)) > 1e-2  # training moved the scores
    np.testing.assert_allclose(_scores(merged), with_adapter, atol=1e-5)
    np.testing.assert_array_equal(_scores(adapter), with_adapter)  # the adapter folder names its base


def test_unmerged_adapter_scores_like_the_merged_model(qwen3_lm: Path, lora_runs: tuple[Path, Path]) -> None:
    """The peft model as training ran it (adapters beside frozen weights) scores like the merged weights."""
    import peft
    import torch

    from rerankd.training.models import PairTexts, load_trainable

    adapter, merged = lora_runs
    model = load_trainable(qwen3_lm)
    model.net = peft.PeftModel.from_pretrained(model.net, str(adapter))
    model.train(False)
    with torch.no_grad():
        ours = model.forward(model.encode(PairTexts([QUERY] * 3, DOCS, [None] * 3))).scores.numpy()
    np.testing.assert_allclose(ours, _scores(merged), atol=1e-5)


def test_yes_no_head_is_exact_on_the_merged_model(lora_runs: tuple[Path, Path]) -> None:
    """rerankd's score of the merged model is l_yes − l_no of its full vocabulary logits at the answer position."""
    import torch
    from transformers import AutoModelForCausalLM

    from rerankd import Reranker
    from rerankd.documents import Document

    _, merged = lora_runs
    reranker = Reranker.from_pretrained(str(merged), device="cpu", dtype="fp32")
    lm = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    family = reranker.family
    for doc, score in zip(DOCS, reranker.score(QUERY, DOCS, raw=True)):
        ids = family.prepare(Document.text(QUERY), [Document.text(doc)]).sequences[0].input_ids
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([ids])).logits[0, -1]
        assert score == pytest.approx(float(logits[family.yes_id] - logits[family.no_id]), abs=1e-5)


def test_adapter_on_another_base_is_refused(qwen3_lm_untied: Path, lora_runs: tuple[Path, Path], qwen3_lm: Path) -> None:
    from rerankd import Reranker
    from rerankd.errors import InputError

    adapter, _ = lora_runs
    with pytest.raises(InputError, match="trained on a base with revision"):
        Reranker.from_pretrained(str(qwen3_lm_untied), adapter=str(adapter), device="cpu")
    base = Reranker.from_pretrained(str(qwen3_lm), device="cpu", dtype="fp32").fingerprint()
    adapted = Reranker.from_pretrained(str(qwen3_lm), adapter=str(adapter), device="cpu", dtype="fp32").fingerprint()
    assert adapted["revision"] != base["revision"]  # caches of the base never answer for the adapted model


def test_lora_spec_parsing() -> None:
    from rerankd.errors import InputError
    from rerankd.training.lora import LoraSpec, parse_lora

    assert parse_lora("r=16,alpha=32,targets=q_proj,v_proj") == LoraSpec(16, 32, ["q_proj", "v_proj"])
    assert parse_lora("targets=q_proj,k_proj,v_proj,o_proj,r=8", merge=True) == LoraSpec(8, 32, ["q_proj", "k_proj", "v_proj", "o_proj"],
                                                                                        merge=True)
    for bad in ("r=0", "rank=4", "r=x", "q_proj", "dropout=1.5"):
        with pytest.raises(InputError):
            parse_lora(bad)


def test_unknown_lora_target_is_refused_naming_it(qwen3_lm: Path) -> None:
    from rerankd.errors import InputError
    from rerankd.training.lora import apply_lora, parse_lora
    from rerankd.training.models import load_trainable

    with pytest.raises(InputError, match="query_proj"):
        apply_lora(load_trainable(qwen3_lm), parse_lora("targets=query_proj"))


def test_vl_lora_on_the_language_model_merged_equals_base_plus_adapter(qwen3_vl: Path, tmp_path: Path) -> None:
    """LoRA on Qwen3-VL's language model (q_proj, v_proj exist only there; the vision tower's are qkv, proj):
    training moves the scores of text and image documents, merged == base + adapter, and the peft model as
    training ran it scores like the merged weights."""
    import peft
    import torch
    from PIL import Image

    from rerankd.cli import main
    from rerankd.documents import Document
    from rerankd.training.models import PairTexts, load_trainable

    skip_without_shared("data/scifact")
    common = ["train", "--base", str(qwen3_vl), "--data", str(DATA / "scifact"), "--max-train-queries", "4",
              "--max-dev-queries", "2", "--eval-depth", "4", "--negatives", "3", "--max-length", "96",
              "--groups-per-batch", "2", "--epochs", "1", "--lr", "5e-3", "--no-bf16", "--no-progress", "--no-compare",
              "--lora", "r=4,alpha=8,targets=q_proj,v_proj"]
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert main([*common, "--out", str(adapter)]) == 0
    assert main([*common, "--out", str(merged), "--merge-lora"]) == 0
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    assert (merged / "preprocessor_config.json").is_file()
    docs = [*DOCS[:2], Document.image(Image.new("RGB", (64, 48), (200, 40, 40)))]

    def scores(model: Path, **kw) -> np.ndarray:  # type: ignore[no-untyped-def]
        from rerankd import Reranker

        return np.array(Reranker.from_pretrained(str(model), device="cpu", dtype="fp32", **kw).score(QUERY, docs, raw=True))

    base, with_adapter = scores(qwen3_vl), scores(qwen3_vl, adapter=adapter)
    assert np.max(np.abs(with_adapter - base)) > 1e-3  # training moved the scores
    np.testing.assert_allclose(scores(merged), with_adapter, atol=1e-5)
    model = load_trainable(qwen3_vl)
    model.net = peft.PeftModel.from_pretrained(model.net, str(adapter))
    model.train(False)
    with torch.no_grad():
        ours = model.forward(model.encode(PairTexts([QUERY] * 3, docs, [None] * 3))).scores.numpy()
    np.testing.assert_allclose(ours, with_adapter, atol=1e-5)
