"""The packed pair classifier runs its last encoder layer on each sequence's first token only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.backends.packed import PackedPairClassifierScore

QUERY = "Which city is the capital of France?"


def _scores_both_ways(engine: Reranker, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    module = engine.backend.module
    assert isinstance(module, PackedPairClassifierScore) and module.last_layer is not None
    cut = np.array(engine.score(QUERY, docs, raw=True))
    last, module.last_layer = module.last_layer, None
    try:
        full = np.array(engine.score(QUERY, docs, raw=True))
    finally:
        module.last_layer = last
    return cut, full


@pytest.mark.parametrize("name", ["bert_ce", "xlmr_ce", "electra_ce"])
def test_first_rows_last_layer_scores_as_the_full_layer(name: str, request: pytest.FixtureRequest,
                                                        sentences: list[str]) -> None:
    engine = Reranker.from_pretrained(str(request.getfixturevalue(name)), dtype="fp32")
    cut, full = _scores_both_ways(engine, sentences * 2)
    np.testing.assert_allclose(cut, full, atol=1e-5)
    assert np.ptp(full) > 1e-3  # the documents score differently: a wrong row would show


def test_last_layer_feed_forward_sees_one_row_per_sequence(bert_ce: Path, sentences: list[str]) -> None:
    engine = Reranker.from_pretrained(str(bert_ce), dtype="fp32")
    module = engine.backend.module
    rows: list[int] = []
    handle = module.last_layer.intermediate.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[-2]))
    try:
        engine.score(QUERY, sentences)
        assert sum(rows) == len(sentences)
        rows.clear()
        last, module.last_layer = module.last_layer, None
        engine.score(QUERY, sentences)
        module.last_layer = last
        tokens = sum(len(s) for s in engine.pipeline.prepare(QUERY, sentences).sequences)
        assert sum(rows) == tokens > len(sentences)
    finally:
        handle.remove()


def test_a_model_wrapped_twice_still_scores_exactly(bert_ce: Path, sentences: list[str]) -> None:
    engine = Reranker.from_pretrained(str(bert_ce), dtype="fp32")
    module = engine.backend.module
    sequences = engine.pipeline.prepare(QUERY, sentences).sequences
    with torch.inference_mode():
        expected = module(sequences).numpy()
        twice = PackedPairClassifierScore(module.model, module.num_labels)  # a second pre-hook on the same layer
        np.testing.assert_allclose(twice(sequences).numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(module(sequences).numpy(), expected, atol=1e-6)
