"""The torch backend's weight loader (backends/weights.py) loads exactly what ``from_pretrained`` loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rerankd.backends.weights import _pread_supported, _safetensors_files, load_pretrained  # noqa: E402
from rerankd.compat import transformers_version  # noqa: E402

CASES = [
    ("bert_ce", "sequence-classification", transformers.AutoModelForSequenceClassification),
    ("xlmr_ce", "sequence-classification", transformers.AutoModelForSequenceClassification),
    ("qwen3_lm", "base", transformers.AutoModel),  # tied embeddings, a causal-LM checkpoint into the base model
    ("qwen3_lm_untied", "base", transformers.AutoModel),
    ("qwen3_seq_cls", "sequence-classification", transformers.AutoModelForSequenceClassification),
]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("fixture,kind,auto", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_same_weights_as_from_pretrained(request: pytest.FixtureRequest, fixture: str, kind: str, auto, dtype) -> None:
    model_dir = request.getfixturevalue(fixture)
    _same(load_pretrained(kind, model_dir, dtype=dtype), auto.from_pretrained(str(model_dir), dtype=dtype))


def test_sharded_checkpoint(bert_ce: Path, tmp_path: Path) -> None:
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(bert_ce))
    out = tmp_path / "sharded"
    model.save_pretrained(out, max_shard_size="200KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (bert_ce / name).exists():
            shutil.copy(bert_ce / name, out / name)
    assert len(_safetensors_files(out)) > 1
    _same(load_pretrained("sequence-classification", out), model)


@pytest.mark.skipif(transformers_version() < (5, 0) or not _pread_supported(),
                    reason="the pread loader needs transformers >= 5 and safetensors >= 0.8")
def test_checkpoint_file_is_not_memory_mapped(bert_ce: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the loader: no mmap of the checkpoint (its pages would count in RSS until the end)."""
    import safetensors

    backends = []
    real = safetensors.safe_open

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        backends.append(kwargs.get("backend", "mmap"))
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    load_pretrained("sequence-classification", bert_ce)
    assert backends and set(backends) == {"pread"}


@pytest.mark.skipif(transformers_version() < (5, 0) or not _pread_supported(),
                    reason="the pread loader needs transformers >= 5 and safetensors >= 0.8")
@pytest.mark.parametrize("fixture,kind,auto", CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_blockwise_conversion_is_exact(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                       fixture: str, kind: str, auto) -> None:
    """Large fp32 tensors are read and converted in row blocks (every tensor here, blocks of 7 rows)."""
    from rerankd.backends import weights

    monkeypatch.setattr(weights, "_BLOCKWISE_ABOVE", 0)
    monkeypatch.setattr(weights, "_ROWS_PER_BLOCK", 7)
    converted = []
    real = weights._ConvertingSlice.__getitem__

    def spy(self, key):  # type: ignore[no-untyped-def]
        converted.append(key is Ellipsis)
        return real(self, key)

    monkeypatch.setattr(weights._ConvertingSlice, "__getitem__", spy)
    model_dir = request.getfixturevalue(fixture)
    _same(load_pretrained(kind, model_dir, dtype=torch.bfloat16), auto.from_pretrained(str(model_dir), dtype=torch.bfloat16))
    assert converted and all(converted)


def _embedding_table(model: torch.nn.Module) -> torch.Tensor:
    return model.get_input_embeddings().weight


@pytest.mark.skipif(transformers_version() < (5, 0) or not _pread_supported(),
                    reason="the pread loader needs transformers >= 5 and safetensors >= 0.8")
@pytest.mark.parametrize("fixture,kind,auto", CASES, ids=[c[0] for c in CASES])
def test_embedding_table_in_the_target_dtype_stays_mapped(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                                          fixture: str, kind: str, auto) -> None:
    """An fp32 table loaded in fp32 is the file's own pages (every table here counts as large), with
    exactly the weights ``from_pretrained`` loads, tied output layers included; writing to it never
    reaches the checkpoint."""
    from rerankd.backends import weights

    monkeypatch.setattr(weights, "_BLOCKWISE_ABOVE", 0)
    mapped = []
    real = weights.mapped_tensor
    monkeypatch.setattr(weights, "mapped_tensor", lambda *a: mapped.append(a[0]) or real(*a))
    model_dir = request.getfixturevalue(fixture)
    checkpoint = _safetensors_files(model_dir)[0]
    before = checkpoint.read_bytes()
    model = load_pretrained(kind, model_dir, dtype=torch.float32)
    assert len(mapped) == 1  # the input table only: no other tensor is merely gathered from
    _same(model, auto.from_pretrained(str(model_dir), dtype=torch.float32))
    table = _embedding_table(model)
    with torch.no_grad():
        table.mul_(2.0)  # copy-on-write: the process's pages change, the file does not
    assert checkpoint.read_bytes() == before
    if model.get_output_embeddings() is not None and model.config.tie_word_embeddings:
        assert model.get_output_embeddings().weight.data_ptr() == table.data_ptr()


@pytest.mark.skipif(transformers_version() < (5, 0) or not _pread_supported(),
                    reason="the pread loader needs transformers >= 5 and safetensors >= 0.8")
def test_table_in_another_dtype_is_converted_not_mapped(xlmr_ce: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd.backends import weights

    monkeypatch.setattr(weights, "_BLOCKWISE_ABOVE", 0)
    monkeypatch.setattr(weights, "mapped_tensor", lambda *a: pytest.fail("an fp32 table loaded in bf16 was mapped"))
    model = load_pretrained("sequence-classification", xlmr_ce, dtype=torch.bfloat16)
    assert _embedding_table(model).dtype == torch.bfloat16


@pytest.mark.skipif(transformers_version() < (5, 0) or not _pread_supported(),
                    reason="the pread loader needs transformers >= 5 and safetensors >= 0.8")
@pytest.mark.parametrize("fixture", ["xlmr_ce", "qwen3_lm"])
def test_scores_with_a_mapped_table_equal_the_loaded_ones(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                                          fixture: str, sentences: list[str]) -> None:
    from rerankd import Reranker
    from rerankd.backends import weights

    model_dir = request.getfixturevalue(fixture)
    plain = Reranker.from_pretrained(str(model_dir), dtype="fp32").score(sentences[0], sentences[1:])
    monkeypatch.setattr(weights, "_BLOCKWISE_ABOVE", 0)
    mapped = Reranker.from_pretrained(str(model_dir), dtype="fp32").score(sentences[0], sentences[1:])
    assert mapped == plain
