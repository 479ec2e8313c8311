"""rerankd's scores equal the reference implementation of each family (fp32, within 1e-4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rerankd import Reranker

QUERY = "Which city is the capital of France?"
TOL = 1e-4


def _distinct(scores: list[float]) -> None:
    # Guards the parity tests themselves: near-constant scores would match for the wrong reason.
    assert np.ptp(scores) > 1e-3, f"tiny model scores barely differ: {scores}"


@pytest.mark.parametrize("fixture", ["bert_ce", "xlmr_ce", "bert_ce_2label"])
def test_cross_encoder_matches_sentence_transformers(fixture: str, request: pytest.FixtureRequest, sentences: list[str]) -> None:
    from sentence_transformers import CrossEncoder

    path: Path = request.getfixturevalue(fixture)
    reference = CrossEncoder(str(path), device="cpu")
    expected = reference.predict([(QUERY, s) for s in sentences])
    if expected.ndim == 2:  # two labels: CrossEncoder returns both; rerankd scores softmax[positive]
        expected = torch.softmax(torch.tensor(expected), dim=1)[:, 1].numpy() if fixture == "bert_ce_2label" else expected
    ours = Reranker.from_pretrained(str(path), device="cpu", dtype="fp32").score(QUERY, sentences)
    _distinct(ours)
    np.testing.assert_allclose(ours, expected, atol=TOL)


def test_two_label_raw_score_is_log_odds(bert_ce_2label: Path, sentences: list[str]) -> None:
    from sentence_transformers import CrossEncoder

    logits = CrossEncoder(str(bert_ce_2label), device="cpu", activation_fn=torch.nn.Identity()).predict([(QUERY, s) for s in sentences])
    raw = Reranker.from_pretrained(str(bert_ce_2label), dtype="fp32").score(QUERY, sentences, raw=True)
    np.testing.assert_allclose(raw, logits[:, 1] - logits[:, 0], atol=TOL)


def test_cross_encoder_declared_identity_activation(bert_ce: Path, tmp_path: Path, sentences: list[str]) -> None:
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(bert_ce), activation_fn=torch.nn.Identity()).save(str(tmp_path / "identity"))
    reference = CrossEncoder(str(tmp_path / "identity"))
    expected = reference.predict([(QUERY, s) for s in sentences])
    ours = Reranker.from_pretrained(str(tmp_path / "identity"), dtype="fp32")
    assert ours.family.activation == "identity"
    np.testing.assert_allclose(ours.score(QUERY, sentences), expected, atol=TOL)


# -- Qwen3-Reranker: the official usage code from the QwenLM/Qwen3-Embedding README -------------------

def official_qwen3_scores(model_dir: Path, query: str, documents: list[str], instruction: str | None = None, max_length: int = 8192) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rerankd.compat import dtype_kwarg  # the official code's dtype=, as transformers < 4.56 spells it

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **dtype_kwarg(torch.float32)).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix = "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_tokens = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(suffix, add_special_tokens=False)

    def format_instruction(instruction, query, doc):  # type: ignore[no-untyped-def]
        if instruction is None:
            instruction = "Given a web search query, retrieve relevant passages that answer the query"
        return "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(instruction=instruction, query=query, doc=doc)

    def process_inputs(pairs):  # type: ignore[no-untyped-def]
        inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                           max_length=max_length - len(prefix_tokens) - len(suffix_tokens))
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        return tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)

    @torch.no_grad()
    def compute_logits(inputs):  # type: ignore[no-untyped-def]
        batch_scores = model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()

    pairs = [format_instruction(instruction, query, doc) for doc in documents]
    return compute_logits(process_inputs(pairs))


@pytest.mark.parametrize("fixture", ["qwen3_lm", "qwen3_lm_untied"])
def test_qwen3_reranker_matches_official_code(fixture: str, request: pytest.FixtureRequest, sentences: list[str]) -> None:
    path: Path = request.getfixturevalue(fixture)
    expected = official_qwen3_scores(path, QUERY, sentences)
    ours = Reranker.from_pretrained(str(path), device="cpu", dtype="fp32")
    assert ours.family.kind == "llm-yes-no"
    scores = ours.score(QUERY, sentences)
    _distinct(scores)
    np.testing.assert_allclose(scores, expected, atol=TOL)


def test_qwen3_instruction_and_truncation_match_official_code(qwen3_lm: Path, sentences: list[str]) -> None:
    instruction = "Given a question, find the passage that answers it"
    long_doc = " ".join(sentences * 10)
    docs = sentences[:2] + [long_doc]
    expected = official_qwen3_scores(qwen3_lm, QUERY, docs, instruction=instruction, max_length=160)
    ours = Reranker.from_pretrained(str(qwen3_lm), dtype="fp32", max_length=160)
    result = ours.rank(QUERY, docs, instruction=instruction)
    by_index = {r.index: r for r in result.results}
    np.testing.assert_allclose([by_index[i].score for i in range(3)], expected, atol=TOL)
    assert by_index[2].truncated and not by_index[0].truncated
    assert by_index[2].tokens == 160


def test_qwen3_seq_cls_form_matches_causal_lm(qwen3_lm: Path, qwen3_seq_cls: Path, sentences: list[str]) -> None:
    expected = official_qwen3_scores(qwen3_lm, QUERY, sentences)
    ours = Reranker.from_pretrained(str(qwen3_seq_cls), dtype="fp32")
    assert ours.family.kind == "llm-yes-no"
    np.testing.assert_allclose(ours.score(QUERY, sentences), expected, atol=TOL)


# -- bi-encoders -----------------------------------------------------------------------------------

def _st_cosine(path: Path, query: str, documents: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    q = model.encode([query], convert_to_numpy=True, normalize_embeddings=True)
    d = model.encode(documents, convert_to_numpy=True, normalize_embeddings=True)
    return (d @ q.T).reshape(-1)


def test_tiny_bi_encoder_matches_sentence_transformers(bi_encoder: Path, sentences: list[str]) -> None:
    ours = Reranker.from_pretrained(str(bi_encoder), dtype="fp32")
    assert ours.family.kind == "bi-encoder"
    scores = ours.score(QUERY, sentences)
    _distinct(scores)
    np.testing.assert_allclose(scores, _st_cosine(bi_encoder, QUERY, sentences), atol=TOL)


def test_bundled_bi_encoder_matches_sentence_transformers(sentences: list[str]) -> None:
    from rerankd.hub import bundled_model_dir

    ours = Reranker.from_pretrained(dtype="fp32").score(QUERY, sentences)
    np.testing.assert_allclose(ours, _st_cosine(bundled_model_dir(), QUERY, sentences), atol=TOL)


@pytest.mark.parametrize("model_type", ["electra", "deberta-v2", "modernbert"])
def test_other_encoder_architectures_match_sentence_transformers(model_type: str, models_dir: Path, sentences: list[str]) -> None:
    from sentence_transformers import CrossEncoder

    import tiny_models

    tiny_models.skip_without_shared("tokenizers/ms-marco-MiniLM-L-6-v2")
    path = models_dir / f"ce-{model_type}"
    if not (path / "config.json").exists():
        tiny_models.encoder_cross_encoder(path, model_type)
    expected = CrossEncoder(str(path), device="cpu").predict([(QUERY, s) for s in sentences])
    ours = Reranker.from_pretrained(str(path), dtype="fp32")
    assert ours.family.kind == "cross-encoder"
    scores = ours.score(QUERY, sentences)
    _distinct(scores)
    np.testing.assert_allclose(scores, expected, atol=TOL)
