"""ONNX export and the ONNX Runtime backend: fp32 graphs score like torch fp32, for every family."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.errors import InputError
from rerankd.export import METADATA_PATH, export_model, read_export_info
from rerankd.families import load_family

QUERY = "Which city is the capital of France?"
TOL = 1e-4


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.mark.parametrize("fixture", ["bert_ce", "xlmr_ce", "qwen3_lm", "bi_encoder"])
def test_fp32_export_scores_equal_torch(fixture: str, request: pytest.FixtureRequest, exports: Path, sentences: list[str]) -> None:
    source: Path = request.getfixturevalue(fixture)
    out = export_model(str(source), exports / fixture)
    documents = sentences + [" ".join(sentences)]  # one long document: rows of very different lengths
    torch_side = Reranker.from_pretrained(str(source), device="cpu", dtype="fp32")
    # A small token budget splits the request into batches of several shapes: the axes must be dynamic.
    onnx_side = Reranker.from_pretrained(str(out), backend="onnx", batch_tokens=96)
    expected = np.array(torch_side.score(QUERY, documents, raw=True))
    got = np.array(onnx_side.score(QUERY, documents, raw=True))
    assert np.ptp(expected) > 1e-3, "tiny model scores barely differ: parity would pass for the wrong reason"
    np.testing.assert_allclose(got, expected, atol=TOL)
    assert onnx_side.describe()["backend"] == "onnx"


def test_export_directory_loads_back_as_the_same_family(bert_ce: Path, exports: Path) -> None:
    out = exports / "bert_ce"
    if not out.exists():
        export_model(str(bert_ce), out)
    info = read_export_info(out)
    assert info is not None and info.family == "cross-encoder" and info.precision == "fp32" and info.opset >= 17
    assert info.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert "Attention" in info.optimization  # bert's attention is fused by onnxruntime.transformers
    assert load_family(out).kind == load_family(bert_ce).kind
    assert not list(out.glob("*.safetensors")), "the torch weights must not be copied next to the graph"


def test_large_graph_path_fuses_and_scores_like_the_small_one(
    xlmr_ce: Path, exports: Path, tmp_path: Path, sentences: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graphs past protobuf's 2 GB limit take another route (external data, no symbolic shape inference
    in the optimizer, which ran out of memory on the XLM-R large shape); a tiny model sent down that
    route must fuse the same operators and score the same."""
    small = exports / "xlmr_ce"
    if not small.exists():
        export_model(str(xlmr_ce), small)
    import onnxruntime.transformers.optimizer  # noqa: F401  (puts its folder on sys.path, as export does)
    from onnx_model import OnnxModel  # the optimizer's fusions import it under this top-level name

    shape_inference_runs: list[object] = []
    real_infer = OnnxModel.infer_runtime_shape

    def spy(self: object, *args: object, **kwargs: object) -> object:
        helper = real_infer(self, *args, **kwargs)  # None when the optimizer was told not to infer shapes
        if helper is not None:
            shape_inference_runs.append(helper)
        return helper

    monkeypatch.setattr(OnnxModel, "infer_runtime_shape", spy)
    monkeypatch.setattr("rerankd.export._EXTERNAL_DATA_BYTES", 1024)
    big = export_model(str(xlmr_ce), tmp_path / "as-large")
    assert not shape_inference_runs, "symbolic shape inference on a large graph needs several copies of its weights"
    assert (big / "model.onnx.data").is_file(), "the large-graph route keeps the weights in an external file"
    small_info, big_info = read_export_info(small), read_export_info(big)
    assert small_info is not None and big_info is not None
    assert "Attention" in big_info.optimization and big_info.optimization == small_info.optimization
    expected = Reranker.from_pretrained(str(small), backend="onnx").score(QUERY, sentences, raw=True)
    got = Reranker.from_pretrained(str(big), backend="onnx").score(QUERY, sentences, raw=True)
    np.testing.assert_allclose(got, expected, atol=TOL)


def test_qwen_export_has_no_vocabulary_output(qwen3_lm: Path, exports: Path) -> None:
    import onnx

    out = exports / "qwen3_lm"
    if not out.exists():
        export_model(str(qwen3_lm), out)
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    (output,) = graph.output
    dims = [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]
    assert output.name == "scores" and dims == ["batch"]
    vocab = json.loads((qwen3_lm / "config.json").read_text())["vocab_size"]
    assert all(vocab not in [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in graph.value_info)


def test_int8_export_is_smaller_and_recorded(bert_ce: Path, exports: Path, sentences: list[str]) -> None:
    out = export_model(str(bert_ce), exports / "bert-int8", precision="int8")
    info = read_export_info(out)
    assert info is not None and info.precision == "int8" and info.quantization["per_channel"] is True
    scores = Reranker.from_pretrained(str(out), backend="onnx").score(QUERY, sentences)
    assert len(scores) == len(sentences) and all(0.0 <= s <= 1.0 for s in scores)


def test_int8_llm_export_runs_and_ranks_like_fp32(qwen3_lm: Path, tmp_path: Path, sentences: list[str]) -> None:
    """The yes−no head is a product with a vector, which ONNX Runtime cannot run per-channel quantized."""
    out = export_model(str(qwen3_lm), tmp_path / "qwen-int8", precision="int8")
    info = read_export_info(out)
    assert info is not None and info.quantization is not None
    assert "1 products with a vector" in info.quantization["kept_fp32"]
    fp32 = np.array(Reranker.from_pretrained(str(qwen3_lm), device="cpu", dtype="fp32").score(QUERY, sentences, raw=True))
    int8 = np.array(Reranker.from_pretrained(str(out), backend="onnx").score(QUERY, sentences, raw=True))
    assert np.corrcoef(fp32, int8)[0, 1] > 0.9


def test_export_refuses_bad_precision_and_existing_dir(bert_ce: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="bf16"):
        export_model(str(bert_ce), tmp_path / "x", precision="bf16")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_model(str(bert_ce), tmp_path / "taken")
    assert (tmp_path / "taken" / "file").read_text() == "mine"


def test_hub_sentence_transformers_onnx_layout(bi_encoder: Path, tmp_path: Path, sentences: list[str]) -> None:
    """A hub repo with onnx/model.onnx (token embeddings out): pooling and normalization run in the backend."""
    import torch
    from transformers import AutoModel

    repo = tmp_path / "hub-repo"
    shutil.copytree(bi_encoder, repo)
    (repo / "onnx").mkdir()
    model = AutoModel.from_pretrained(str(repo), attn_implementation="eager").eval()

    class TokenEmbeddings(torch.nn.Module):  # keyword call: positional order is not part of HF's API
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    ids, mask = torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)
    torch.onnx.export(TokenEmbeddings().eval(), (ids, mask, torch.zeros_like(ids)), str(repo / "onnx" / "model.onnx"),
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
                      dynamic_axes={n: {0: "b", 1: "s"} for n in ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]},
                      opset_version=17, dynamo=False)
    expected = Reranker.from_pretrained(str(repo), dtype="fp32").score(QUERY, sentences, raw=True)
    got = Reranker.from_pretrained(str(repo), backend="onnx").score(QUERY, sentences, raw=True)
    np.testing.assert_allclose(got, expected, atol=TOL)
    assert not (repo / METADATA_PATH).exists()


def test_int4_llm_export_quantizes_every_weight_matrix_and_the_embedding_table(
    qwen3_lm: Path, exports: Path, tmp_path: Path, sentences: list[str]
) -> None:
    import onnx

    fp32_dir = exports / "qwen3_lm"
    if not fp32_dir.exists():
        export_model(str(qwen3_lm), fp32_dir)
    out = export_model(str(qwen3_lm), tmp_path / "qwen-int4", precision="int4")
    info = read_export_info(out)
    assert info is not None and info.precision == "int4" and info.opset == 21
    fp32_graph = onnx.load(str(fp32_dir / "model.onnx")).graph
    weights = {t.name: len(t.dims) for t in fp32_graph.initializer}
    matrices = sum(n.op_type == "MatMul" and weights.get(n.input[1]) == 2 for n in fp32_graph.node)
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert matrices > 0 and ops.count("MatMulNBits") == matrices and ops.count("GatherBlockQuantized") == 1
    assert info.quantization == {"weight_type": "int4", "block_size": 32, "symmetric": True, "accuracy_level": 4,
                                 "quantized": f"{matrices} MatMulNBits, 1 GatherBlockQuantized",
                                 "kept_fp32": "1 products with a vector"}
    size = {d: sum(f.stat().st_size for f in d.glob("model.onnx*")) for d in (fp32_dir, out)}
    assert size[out] < 0.3 * size[fp32_dir], size
    int4 = Reranker.from_pretrained(str(out), backend="onnx")
    assert int4.describe()["dtype"] == "int4"
    fp32 = np.array(Reranker.from_pretrained(str(fp32_dir), backend="onnx").score(QUERY, sentences, raw=True))
    got = np.array(int4.score(QUERY, sentences, raw=True))
    assert np.corrcoef(fp32, got)[0, 1] > 0.95  # measured 0.994 on this tiny random model


@pytest.mark.parametrize(("dtype", "expected"), [(None, "model.onnx"), ("fp32", "model.onnx"), ("fp16", "model_fp16.onnx"),
                                                 ("int8", "model_quantized.onnx"), ("int4", "model_q4.onnx"), ("q4", "model_q4.onnx")])
def test_hub_onnx_folder_picks_the_graph_of_the_asked_precision(tmp_path: Path, dtype: str | None, expected: str) -> None:
    """Hub layouts name graphs by precision (sentence-transformers' model_quantized, transformers.js' model_q4/model_fp16)."""
    from rerankd.backends.onnx_backend import find_onnx_file

    (tmp_path / "onnx").mkdir()
    for name in ("model.onnx", "model_fp16.onnx", "model_quantized.onnx", "model_q4.onnx", "model_q4f16.onnx"):
        (tmp_path / "onnx" / name).write_bytes(b"")
    assert find_onnx_file(tmp_path, dtype).name == expected
    with pytest.raises(InputError, match="int4"):
        find_onnx_file(tmp_path, "int3")
