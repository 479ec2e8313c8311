"""Every user mistake raises one exception from rerankd.errors, naming the problem and the fix."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import rerankd
from rerankd import (
    EmptyDocumentsError,
    EmptyQueryError,
    InputError,
    InputTooLargeError,
    InvalidDocumentError,
    MissingDependencyError,
    ModelNotFoundError,
    Reranker,
    RerankdError,
    TooManyDocumentsError,
    UnsupportedModelError,
)


@pytest.fixture(scope="module")
def engine(bert_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(bert_ce), dtype="fp32", max_documents=5)


@pytest.mark.parametrize(
    ("query", "documents", "error", "message"),
    [
        ("", ["a doc"], EmptyQueryError, "query is empty"),
        ("   \n", ["a doc"], EmptyQueryError, "query is empty"),
        (None, ["a doc"], EmptyQueryError, "query must be a string, a rerankd.Document or a dict, got NoneType"),
        ("q", [], EmptyDocumentsError, "documents is empty"),
        ("q", "just one string", InvalidDocumentError, r"documents must be a list \(one document per element\)"),
        ("q", ["ok", 3], InvalidDocumentError, "document 1 is a int, not text"),
        ("q", ["ok", None], InvalidDocumentError, "document 1 is a NoneType, not text"),
        ("q", [{"title": "x"}], InvalidDocumentError, r"document 0 has unknown field\(s\) \['title'\]"),
        ("q", ["ok", "\ud800"], InvalidDocumentError, "document 1 is not valid Unicode text: it holds a lone surrogate"),
        ("q", ["ok", {"image": b"png"}], InvalidDocumentError, "document 1 holds image but .* reads only text"),
        ("q", ["ok", "  "], InvalidDocumentError, "document 1 is empty"),
        ("q", ["d"] * 6, TooManyDocumentsError, "6 documents were sent but the limit is 5 per request"),
        ("\ud800", ["a doc"], InvalidDocumentError, "query is not valid Unicode.* lone surrogate .*at character 0"),
        ("q", ["ok", "ab\udfff"], InvalidDocumentError, "document 1 is not valid Unicode.* lone surrogate .*at character 2"),
    ],
)
def test_bad_requests(engine: Reranker, query: object, documents: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        engine.rank(query, documents)  # type: ignore[arg-type]


def test_dict_and_document_forms_score_like_plain_text(engine: Reranker) -> None:
    from rerankd import Document

    plain = engine.score("capital of France", ["Paris is in France.", "Bananas."], raw=True)
    forms = engine.score(Document.text("capital of France"), [{"text": "Paris is in France."}, Document.text("Bananas.")], raw=True)
    assert forms == plain


def test_lone_surrogate_instruction_is_refused_and_nul_is_text(engine: Reranker) -> None:
    with pytest.raises(InvalidDocumentError, match="instruction is not valid Unicode.* at character 6"):
        engine.rank("q", ["d"], instruction="judge \udc00")
    # NUL is valid Unicode and every tokenizer takes it: scored like any other character.
    assert len(engine.rank("a\x00b", ["x\x00y", "\x00"]).results) == 2


def test_negative_top_n(engine: Reranker) -> None:
    with pytest.raises(InputError, match="top_n must be 0 or more, got -1"):
        engine.rank("q", ["d"], top_n=-1)


def test_query_longer_than_the_model(bert_ce: Path) -> None:
    engine = Reranker.from_pretrained(str(bert_ce), dtype="fp32", max_length=16)
    with pytest.raises(InputTooLargeError, match=r"the query is \d+ tokens but this model takes at most 12 tokens"):
        engine.rank("a very long query " * 10, ["d"])


def test_missing_directory() -> None:
    with pytest.raises(ModelNotFoundError, match="model directory ./no/such/model does not exist"):
        Reranker.from_pretrained("./no/such/model")


def test_directory_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="is not a model directory: it has no config.json"):
        Reranker.from_pretrained(str(tmp_path))


def test_file_instead_of_directory(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file, not a model directory"):
        Reranker.from_pretrained(str(tmp_path / "weights.bin"))


def test_unknown_hub_model_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="'nobody/no-such-reranker' could not be found .*HF_HUB_OFFLINE"):
        Reranker.from_pretrained("nobody/no-such-reranker")


def _copy_with_config(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_architecture_rerankd_cannot_score(bert_ce: Path, tmp_path: Path) -> None:
    model = _copy_with_config(bert_ce, tmp_path / "mlm", architectures=["BertForMaskedLM"])
    with pytest.raises(UnsupportedModelError, match=r"BertForMaskedLM.*is not a model rerankd can score; supported: cross-encoders"):
        Reranker.from_pretrained(str(model))


def test_classifier_with_three_labels(bert_ce: Path, tmp_path: Path) -> None:
    model = _copy_with_config(bert_ce, tmp_path / "nli", id2label={"0": "a", "1": "b", "2": "c"})
    with pytest.raises(UnsupportedModelError, match="classifier with 3 labels; rerankd scores models with 1 label"):
        Reranker.from_pretrained(str(model))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "int3"}, "unknown dtype 'int3'; use one of auto, fp32, bf16, fp16"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'; available: "),
        ({"max_length": 2}, "max_length must be at least 8 tokens"),
    ],
)
def test_bad_settings(bert_ce: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Reranker.from_pretrained(str(bert_ce), **kwargs)


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd._optional import require

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'rerankd\[onnx\]'"):
        require("onnxruntime")


def test_every_error_is_a_rerankd_error() -> None:
    for name in rerankd.__all__:
        obj = getattr(rerankd, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, RerankdError)


def test_import_is_light() -> None:
    # What is exported is checked against vars(rerankd) in test_exported_members.py.
    import subprocess

    code = "import sys, rerankd; heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'fastapi', 'ray', 'pyarrow') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"import rerankd pulled in {out}"
