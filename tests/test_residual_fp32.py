"""bf16 encoders keep their residual stream fp32 (backends/residual_fp32.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.backends.onednn_linear import OneDnnLinear, _in_dtype, onednn_linear_supported
from rerankd.backends.residual_fp32 import Fp32LayerNorm, keep_residual_fp32
from rerankd.backends.torch_backend import TorchBackend

QUERY = "Which city is the capital of France?"
needs_bf16 = pytest.mark.skipif(not onednn_linear_supported(torch.bfloat16), reason="oneDNN does not run bf16 on this CPU")


def _scores(engine: Reranker, docs: list[str]) -> np.ndarray:
    return np.asarray(engine.score(QUERY, docs, raw=True))


def test_fp32_layer_norm_is_layer_norm_in_fp32() -> None:
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(24)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(5, 24).to(torch.bfloat16)
    expected = norm(x.float())
    out = Fp32LayerNorm(norm.to(torch.bfloat16))(x)
    assert out.dtype == torch.float32
    # the weights went through bf16 once; the computation itself is fp32
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x.float(), (24,), norm.weight.float(), norm.bias.float()))
    assert (out - expected).abs().max() < 0.05


@needs_bf16
@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("name", ["bert_ce_wide", "xlmr_ce", "electra_ce"])
def test_bf16_encoder_with_fp32_residual_is_closer_to_fp32(name: str, packed: bool, request: pytest.FixtureRequest,
                                                           sentences: list[str]) -> None:
    model = request.getfixturevalue(name)
    docs = sentences * 3
    reference = _scores(Reranker.from_pretrained(str(model), dtype="fp32"), docs)
    engine = Reranker.from_pretrained(str(model), dtype="bf16", packed=packed)
    layers = engine.family.config["num_hidden_layers"]
    # the embeddings' norm and two per layer: every norm the residual stream passes through
    assert engine.describe()["fp32_residual_norms"] == 1 + 2 * layers
    plain = Reranker(engine.family, TorchBackend(engine.family, device="cpu", dtype="bf16", packed=packed,
                                                 fp32_residual=False))
    assert "fp32_residual_norms" not in plain.describe()
    kept, rounded = np.abs(_scores(engine, docs) - reference), np.abs(_scores(plain, docs) - reference)
    # measured here: mean |Δ| 0.12 vs 0.19 (BERT), 0.015 vs 0.022 (XLM-R), 0.020 vs 0.026 (ELECTRA); the
    # rest is the matrix products' own bf16 rounding
    assert kept.mean() < 0.9 * rounded.mean()
    assert kept.max() <= rounded.max()


@needs_bf16
def test_decoders_and_fp32_models_keep_their_norms(qwen3_lm: Path, bert_ce: Path) -> None:
    # Qwen3 is pre-LN (RMSNorm beside the residual): nothing to keep
    assert "fp32_residual_norms" not in Reranker.from_pretrained(str(qwen3_lm), dtype="bf16").describe()
    assert "fp32_residual_norms" not in Reranker.from_pretrained(str(bert_ce), dtype="fp32").describe()


@needs_bf16
def test_plain_bf16_linear_layers_are_left_alone(bert_ce: Path, sentences: list[str]) -> None:
    # without oneDNN layers a bf16 nn.Linear would refuse the fp32 stream: nothing is changed
    engine = Reranker.from_pretrained(str(bert_ce), dtype="fp32")
    plain = TorchBackend(engine.family, device="cpu", dtype="bf16", onednn=False)
    assert keep_residual_fp32(plain.module) == 0
    assert np.isfinite(Reranker(engine.family, plain).score(QUERY, sentences)).all()


@needs_bf16
def test_one_conversion_per_tensor() -> None:
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    first = _in_dtype(a, torch.bfloat16)
    assert _in_dtype(a, torch.bfloat16) is first  # the query, key and value projections share it
    other = _in_dtype(b, torch.bfloat16)
    assert other is not first and torch.equal(other, b.to(torch.bfloat16))
    assert _in_dtype(other, torch.bfloat16) is other
    layer = OneDnnLinear(torch.nn.Linear(8, 3).to(torch.bfloat16))
    torch.testing.assert_close(layer(a), layer(a.to(torch.bfloat16)))
