"""Every transformers version rerankd declares scores exactly: the default CPU path (packed where the
version allows it) equals the padded path and the reference computed with transformers itself.

These tests need only rerankd's core and torch extra (no sentence-transformers), so that
scripts/test_lowest.sh can run them in an environment with the lowest supported versions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models
from rerankd import Reranker, compat
from rerankd.backends import packed
from rerankd.backends.torch_backend import TorchBackend
from rerankd.errors import UnsupportedModelError

QUERY = "Which city is the capital of France?"
TOL = 1e-4  # against the reference, as in test_parity
SAME = 1e-5  # packed against padded: the same weights and tokens, another kernel order


def _engines(path: Path) -> tuple[Reranker, Reranker]:
    default = Reranker.from_pretrained(str(path), device="cpu", dtype="fp32")
    padded = Reranker(default.family, TorchBackend(default.family, device="cpu", dtype="fp32", packed=False))
    return default, padded


def _expect_packed(default: Reranker, encoder: bool) -> None:
    # The packing decision itself is part of what differs between versions (rerankd.compat).
    assert default.describe()["packed"] is (compat.packing_supported(encoder=True) if encoder else True)


def _cross_encoder_logits(path: Path, documents: list[str]) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), **compat.dtype_kwarg(torch.float32)).eval()
    batch = tokenizer([QUERY] * len(documents), documents, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].numpy()


@pytest.mark.parametrize("fixture", ["bert_ce", "xlmr_ce"])
def test_cross_encoder_scores_exactly(fixture: str, request: pytest.FixtureRequest, sentences: list[str]) -> None:
    path: Path = request.getfixturevalue(fixture)
    default, padded = _engines(path)
    _expect_packed(default, encoder=True)
    docs = sentences * 2
    ours = default.score(QUERY, docs, raw=True)
    assert np.ptp(ours) > 1e-3, f"tiny model scores barely differ: {ours}"
    np.testing.assert_allclose(ours, _cross_encoder_logits(path, docs), atol=TOL)
    np.testing.assert_allclose(ours, padded.score(QUERY, docs, raw=True), atol=SAME)


@pytest.mark.parametrize("fixture", ["qwen3_lm", "qwen3_seq_cls"])
def test_qwen3_scores_exactly(fixture: str, request: pytest.FixtureRequest, qwen3_lm: Path, sentences: list[str]) -> None:
    from test_parity import official_qwen3_scores

    path: Path = request.getfixturevalue(fixture)
    default, padded = _engines(path)
    _expect_packed(default, encoder=False)
    ours = default.score(QUERY, sentences)  # six documents share a long prefix: the shared-prefix path
    np.testing.assert_allclose(ours, official_qwen3_scores(qwen3_lm, QUERY, sentences), atol=TOL)
    np.testing.assert_allclose(default.score(QUERY, sentences, raw=True), padded.score(QUERY, sentences, raw=True), atol=SAME)
    assert packed._PACKING.get() is None  # no boundaries left behind for a later call


def _plain_bi_encoder(out: Path) -> Path:
    """A tiny BERT in the sentence-transformers layout, written by hand (no sentence-transformers here)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tiny_models.skip_without_shared(f"tokenizers/{tiny_models.MINILM_TOKENIZER.name}")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models.MINILM_TOKENIZER))
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, initializer_range=tiny_models.INIT_RANGE)
    tiny_models._save(BertModel(cfg), tokenizer, out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return out


def _mean_pooled_cosine(path: Path, documents: list[str]) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path), **compat.dtype_kwarg(torch.float32)).eval()
    batch = tokenizer([QUERY, *documents], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    return (pooled[1:] @ pooled[0]).numpy()


def test_bi_encoder_scores_exactly(tmp_path: Path, sentences: list[str]) -> None:
    path = _plain_bi_encoder(tmp_path / "bi")
    default, padded = _engines(path)
    _expect_packed(default, encoder=True)
    ours = default.score(QUERY, sentences)
    np.testing.assert_allclose(ours, _mean_pooled_cosine(path, sentences), atol=TOL)
    np.testing.assert_allclose(ours, padded.score(QUERY, sentences), atol=SAME)


@pytest.mark.skipif(compat.packing_supported(encoder=True), reason="encoders pack on this transformers")
def test_packing_an_encoder_that_would_ignore_the_boundaries_is_refused(bert_ce: Path) -> None:
    family = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32").family
    with pytest.raises(UnsupportedModelError, match="encoders pack from transformers 5.0"):
        TorchBackend(family, device="cpu", dtype="fp32", packed=True)


def test_dtype_keyword_loads_in_that_dtype(bert_ce: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(bert_ce), **compat.dtype_kwarg(torch.bfloat16))
    assert next(model.parameters()).dtype == torch.bfloat16


def test_tokenizer_json_is_used_when_transformers_cannot_read_the_tokenizer_config(bert_ce: Path, tmp_path: Path, sentences: list[str]) -> None:
    # As transformers 4.x fails on a tokenizer_config.json written by 5.x.
    import shutil

    copy = tmp_path / "unreadable-config"
    shutil.copytree(bert_ce, copy)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "NoSuchTokenizerClass"
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    expected = Reranker.from_pretrained(str(bert_ce), dtype="fp32").score(QUERY, sentences)
    np.testing.assert_allclose(Reranker.from_pretrained(str(copy), dtype="fp32").score(QUERY, sentences), expected, atol=1e-6)
