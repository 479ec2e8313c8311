"""Bad and odd requests against a running server: each one a 4xx naming the problem, or a correct 200.

Never a 5xx, never Python internals in the body, and after every case the server still ranks a good
request correctly. The model is the bundled all-MiniLM-L6-v2, so this table needs nothing from
../shared. Bodies are written by hand (``json.dumps`` keeps lone surrogates as ``\\ud800`` escapes and
writes NaN literals, which is what a careless client sends).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from live_server import LiveServer  # noqa: E402
from rerankd import Reranker  # noqa: E402
from rerankd.server import ServerSettings, create_app  # noqa: E402

API_KEY = "bad-input-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {"content-type": "application/json"}
QUERY = "What is the capital of France?"
DOCS = ["Bananas are a yellow fruit.", "Paris is the capital and largest city of France.", "The stock market fell."]
MAX_DOCUMENTS = 64
MAX_BODY_BYTES = 256 * 1024
MAX_REQUEST_TOKENS = 4096
LONG_DOC = "the city of Paris " * 60  # about 240 tokens
PNG_URI = "data:image/png;base64,iVBORw0KGgo="

# What must never reach a client: tracebacks, exception class names, source paths.
INTERNALS = re.compile(r"Traceback|\b[A-Z][A-Za-z]*(Error|Exception)\b|\.py\b|site-packages|File \"")

Check = Callable[[Any, Reranker], None]


def body(obj: Any) -> bytes:
    """JSON as a careless client writes it: lone surrogates escaped, NaN/Infinity as literals."""
    return json.dumps(obj).encode("utf-8")


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- what a correct 200 looks like ------------------------------------------------------------------


def ranked(query: str, docs: list[str], top_n: int | None = None) -> Check:
    """The Cohere/Jina answer equals the offline ranking of the same texts."""

    def check(got: Any, engine: Reranker) -> None:
        want = engine.rank(query, docs, top_n=top_n).results
        assert [r["index"] for r in got["results"]] == [w.index for w in want]
        np.testing.assert_allclose([r["relevance_score"] for r in got["results"]], [w.score for w in want], rtol=1e-5, atol=1e-6)

    return check


def tei_ranked(query: str, texts: list[str]) -> Check:
    def check(got: Any, engine: Reranker) -> None:
        want = engine.rank(query, texts).results
        assert [r["index"] for r in got] == [w.index for w in want]
        np.testing.assert_allclose([r["score"] for r in got], [w.score for w in want], rtol=1e-5, atol=1e-6)

    return check


def echoed(document: Any) -> Check:
    def check(got: Any, engine: Reranker) -> None:
        assert got["results"][0]["document"] == document

    return check


def fresh_request_id(sent: str) -> Check:
    def check(got: Any, engine: Reranker) -> None:
        assert got["id"] != sent and len(got["id"]) <= 128

    return check


@dataclass(frozen=True)
class Case:
    """One request and what the server must answer.

    ``kind`` is the error type (``error.type``, or TEI's ``error_type`` when ``tei``); every string in
    ``words`` must be in the message. A 200 case gives ``check`` instead.
    """

    name: str
    content: bytes | None = None
    path: str = "/v1/rerank"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    status: int = 422
    kind: str | None = None
    words: tuple[str, ...] = ()
    tei: bool = False
    check: Check | None = None
    #: Send the body in chunks without a Content-Length (the server must count while reading).
    chunked: bool = False


def bad(name: str, obj: Any, status: int, kind: str, *words: str, path: str = "/v1/rerank", tei: bool = False) -> Case:
    return Case(name, body(obj), path=path, status=status, kind=kind, words=words, tei=tei)


def good(name: str, obj: Any, check: Check, path: str = "/v1/rerank", headers: dict[str, str] | None = None) -> Case:
    return Case(name, body(obj), path=path, status=200, check=check, headers={**JSON, **(headers or {})})


SURROGATE = "lone surrogate"
REQ = {"query": QUERY, "documents": DOCS}

CASES = [
    # -- malformed JSON: 400 ----------------------------------------------------------------------------
    Case("truncated json", b'{"query": "x", "documents": [', status=400, kind="invalid_json", words=("not valid JSON",)),
    Case("trailing garbage", body(REQ) + b" xyz", status=400, kind="invalid_json", words=("not valid JSON",)),
    Case("single quotes", b"{'query': 'x', 'documents': ['a']}", status=400, kind="invalid_json", words=("not valid JSON",)),
    Case("empty body", b"", status=400, kind="invalid_json", words=("body is empty",)),
    Case("latin-1 bytes", b'{"query": "caf\xe9", "documents": ["a"]}', status=400, kind="invalid_json", words=("not UTF-8", "byte 14")),
    Case("10k nested arrays in documents", b'{"query": "q", "documents": ["a", ' + nested(10_000) + b"]}", status=400,
         kind="invalid_json", words=("too deeply",)),
    Case("5k nested objects in a document", b'{"query": "q", "documents": [{"text": "a", "x": ' + b'{"a": ' * 5000 + b"1"
         + b"}" * 5000 + b"}]}", status=400, kind="invalid_json", words=("too deeply",)),
    Case("utf-8 bom", b"\xef\xbb\xbf" + body(REQ), status=200, check=ranked(QUERY, DOCS)),
    good("charset parameter", REQ, ranked(QUERY, DOCS), headers={"content-type": "application/json; charset=utf-8"}),
    Case("duplicate key: the last wins", b'{"query": "bananas", "query": "' + QUERY.encode() + b'", "documents": '
         + json.dumps(DOCS).encode() + b"}", status=200, check=ranked(QUERY, DOCS)),
    # -- valid JSON that is not a request object: 422 / 415 ----------------------------------------------
    Case("bare string", b'"rank these"', kind="invalid_request", words=("body",)),
    Case("bare array", b'["a", "b"]', kind="invalid_request", words=("body",)),
    Case("bare number", b"42", kind="invalid_request", words=("body",)),
    Case("null", b"null", kind="invalid_request", words=("body",)),
    Case("text/plain", body(REQ), headers={"content-type": "text/plain"}, status=415, kind="unsupported_media_type",
         words=("'text/plain'", "Content-Type: application/json")),
    Case("form encoded", b"query=x&documents=a", headers={"content-type": "application/x-www-form-urlencoded"}, status=415,
         kind="unsupported_media_type", words=("application/x-www-form-urlencoded",)),
    # -- NaN / Infinity literals ---------------------------------------------------------------------
    bad("NaN top_n", {**REQ, "top_n": float("nan")}, 422, "invalid_request", "top_n", "finite"),
    bad("Infinity max_tokens_per_doc", {**REQ, "max_tokens_per_doc": float("inf")}, 422, "invalid_request", "max_tokens_per_doc"),
    bad("-Infinity top_k", {**REQ, "top_k": float("-inf")}, 422, "invalid_request", "top_k"),
    bad("NaN as a document", {"query": QUERY, "documents": ["a", float("nan")]}, 422, "invalid_request", "documents.1"),
    bad("NaN in an echoed document", {"query": QUERY, "documents": [{"text": "a", "score": float("nan")}], "return_documents": True},
        422, "invalid_document", "document 0 field 'score'", "nan"),
    # -- lone surrogates: 422 naming the field -------------------------------------------------------
    bad("surrogate query", {"query": "\ud800", "documents": DOCS}, 422, "invalid_document", "query", SURROGATE, "character 0"),
    bad("surrogate mid-query", {"query": "Paris \udc00 France", "documents": DOCS}, 422, "invalid_document", "query", "character 6"),
    bad("surrogate document", {"query": QUERY, "documents": ["a", "b", "x\ud800"]}, 422, "invalid_document", "document 2",
        SURROGATE, "character 1"),
    bad("surrogate document object", {"query": QUERY, "documents": ["a", {"text": "\udfff"}]}, 422, "invalid_document", "document 1"),
    bad("surrogate in an echoed field", {"query": QUERY, "documents": [{"text": "a", "meta": ["ok", "\ud800"]}], "return_documents": True},
        422, "invalid_document", "document 0 field 'meta'[1]"),
    bad("surrogate in an echoed key", {"query": QUERY, "documents": [{"text": "a", "\ud800": 1}], "return_documents": True},
        422, "invalid_document", "field name in document 0"),
    bad("surrogate rank_fields value", {"query": QUERY, "documents": [{"title": "\ud800"}], "rank_fields": ["title"]},
        422, "invalid_document", "document 0"),
    bad("surrogate instruction", {**REQ, "instruction": "judge \ud800"}, 422, "invalid_document", "instruction", "character 6"),
    # One model served: any name is answered by it (clients send their own defaults; issue 15).
    good("surrogate model name", {**REQ, "model": "\ud800"}, ranked(QUERY, DOCS)),
    bad("surrogate TEI text", {"query": QUERY, "texts": ["a", "b", "c", "\ud800"]}, 422, "validation", "texts[3]", tei=True),
    bad("surrogate TEI query", {"query": "\udbff", "texts": ["a"]}, 422, "validation", "query", SURROGATE, tei=True),
    bad("surrogate score text_2", {"text_1": QUERY, "text_2": ["a", "\ud800"]}, 422, "invalid_document", "text_2[1]", path="/score"),
    bad("surrogate score text_1", {"text_1": "\ud800", "text_2": ["a"]}, 422, "invalid_document", "text_1", SURROGATE, path="/score"),
    good("surrogate pair is an emoji", {"query": QUERY, "documents": ["Paris \ud83d\ude00", "bananas"]},
         ranked(QUERY, ["Paris \U0001F600", "bananas"])),
    # -- NUL characters: valid Unicode, scored like any other text -------------------------------------
    good("NUL in query", {"query": "capital\u0000of France", "documents": DOCS}, ranked("capital\u0000of France", DOCS)),
    good("NUL in documents", {"query": QUERY, "documents": ["Paris\u0000is in France", "\u0000", "bananas"]},
         ranked(QUERY, ["Paris\u0000is in France", "\u0000", "bananas"])),
    good("NUL in TEI text", {"query": QUERY, "texts": ["a\u0000b", "Paris"]}, tei_ranked(QUERY, ["a\u0000b", "Paris"]), path="/rerank"),
    # -- huge bodies: 413 before anything is parsed ----------------------------------------------------
    Case("body over the limit (Content-Length)", body({"query": QUERY, "documents": ["x" * 100_000] * 3}), status=413,
         kind="input_too_large", words=(str(MAX_BODY_BYTES), "--max-body-bytes")),
    Case("body over the limit (chunked)", body({"query": QUERY, "documents": ["y" * 100_000] * 3}), status=413,
         kind="input_too_large", words=(str(MAX_BODY_BYTES), "--max-body-bytes"), chunked=True),
    Case("chunked body under the limit", body(REQ), status=200, check=ranked(QUERY, DOCS), chunked=True),
    good("50-deep object echoed as sent", {"query": QUERY, "documents": [{"text": "Paris", "x": json.loads(nested(50))}],
                                           "return_documents": True}, echoed({"text": "Paris", "x": json.loads(nested(50))})),
    # -- wrong types, per dialect ----------------------------------------------------------------------
    bad("v2 documents a string", {"query": QUERY, "documents": "Paris"}, 422, "invalid_request", "documents", path="/v2/rerank"),
    bad("v2 documents numbers", {"query": QUERY, "documents": [1, 2]}, 422, "invalid_request", "documents.0", path="/v2/rerank"),
    bad("v2 missing query", {"documents": DOCS}, 422, "invalid_request", "query", "Field required", path="/v2/rerank"),
    bad("v1 documents nested lists", {"query": QUERY, "documents": [["a"]]}, 422, "invalid_request", "documents.0"),
    bad("v1 query a list", {"query": [QUERY], "documents": DOCS}, 422, "invalid_request", "query"),
    bad("v1 model a number", {**REQ, "model": 5}, 422, "invalid_request", "model"),
    bad("v1 rank_fields a string", {**REQ, "rank_fields": "title"}, 422, "invalid_request", "rank_fields"),
    bad("v1 rank_fields names a missing field", {"query": QUERY, "documents": [{"title": "a"}], "rank_fields": ["body"]},
        422, "invalid_document", "document 0 has no field 'body'"),
    bad("jina document without text", {"query": QUERY, "documents": [{"title": "Paris"}]}, 422, "invalid_document", "document 0", "title"),
    bad("jina document text a number", {"query": QUERY, "documents": ["a", {"text": 3}]}, 422, "invalid_document", "document 1"),
    bad("top_n a boolean", {**REQ, "top_n": True}, 422, "invalid_request", "top_n", "not true or false"),
    bad("top_n negative", {**REQ, "top_n": -1}, 422, "invalid_request", "top_n", "greater than or equal to 0"),
    bad("top_n a word", {**REQ, "top_n": "three"}, 422, "invalid_request", "top_n"),
    bad("top_n a fraction", {**REQ, "top_n": 1.5}, 422, "invalid_request", "top_n", "fractional"),
    good("top_n a numeric string", {**REQ, "top_n": "2"}, ranked(QUERY, DOCS, top_n=2)),
    good("top_n a whole float", {**REQ, "top_n": 2.0}, ranked(QUERY, DOCS, top_n=2)),
    bad("max_tokens_per_doc 0", {**REQ, "max_tokens_per_doc": 0}, 422, "invalid_request", "max_tokens_per_doc"),
    bad("max_tokens_per_doc a boolean", {**REQ, "max_tokens_per_doc": True}, 422, "invalid_request", "max_tokens_per_doc"),
    bad("TEI texts a string", {"query": QUERY, "texts": "Paris"}, 422, "validation", "texts", path="/rerank", tei=True),
    bad("TEI texts numbers", {"query": QUERY, "texts": [1, 2]}, 422, "validation", "texts.0", path="/rerank", tei=True),
    bad("TEI truncate a word", {"query": QUERY, "texts": ["a"], "truncate": "maybe"}, 422, "validation", "truncate", tei=True),
    bad("TEI left truncation", {"query": QUERY, "texts": ["a"], "truncation_direction": "left"}, 422, "validation",
        "truncation_direction 'left'", tei=True),
    bad("TEI top_n a boolean", {"query": QUERY, "texts": ["a"], "top_n": False}, 422, "validation", "top_n", tei=True),
    bad("score text_1 a number", {"text_1": 3, "text_2": ["a"]}, 422, "invalid_request", "text_1", path="/score"),
    bad("score text_2 missing", {"text_1": QUERY}, 422, "invalid_request", "text_1 and text_2", path="/score"),
    bad("score text_2 nested", {"text_1": QUERY, "text_2": [["a"]]}, 422, "invalid_request", "text_2", path="/score"),
    bad("score text_2 empty list", {"text_1": QUERY, "text_2": []}, 422, "invalid_request", "must not be empty", path="/score"),
    bad("score lengths differ", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, 422, "invalid_request",
        "text_1 has 2 texts and text_2 has 3", path="/score"),
    bad("score paired, an empty document", {"queries": ["q1", "q2", "q3"], "documents": ["a", "b", "  "]}, 422,
        "invalid_document", "documents[2] is empty", path="/score"),
    bad("score max_tokens_per_doc 0", {"text_1": QUERY, "text_2": ["a"], "max_tokens_per_doc": 0}, 422, "invalid_request",
        "max_tokens_per_doc", path="/score"),
    # -- limits ------------------------------------------------------------------------------------------
    bad("too many documents", {"query": QUERY, "documents": ["d"] * (MAX_DOCUMENTS + 1)}, 413, "too_many_documents",
        f"{MAX_DOCUMENTS + 1} documents", f" {MAX_DOCUMENTS} ", "--max-documents"),
    bad("too many TEI texts", {"query": QUERY, "texts": ["d"] * (MAX_DOCUMENTS + 1)}, 413, "validation", f" {MAX_DOCUMENTS} ",
        "--max-documents", path="/rerank", tei=True),
    bad("too many score pairs", {"text_1": QUERY, "text_2": ["d"] * (MAX_DOCUMENTS + 1)}, 413, "too_many_documents",
        f" {MAX_DOCUMENTS} ", "--max-documents", path="/score"),
    bad("over max_request_tokens", {"query": QUERY, "documents": [LONG_DOC] * 20}, 413, "input_too_large",
        f" {MAX_REQUEST_TOKENS} ", "--max-request-tokens"),
    bad("empty query", {"query": "", "documents": DOCS}, 422, "empty_query", "query is empty"),
    bad("whitespace query", {"query": " \t\n ", "documents": DOCS}, 422, "empty_query", "query is empty"),
    bad("empty documents", {"query": QUERY, "documents": []}, 422, "empty_documents", "documents is empty"),
    bad("whitespace document", {"query": QUERY, "documents": ["ok", " \n\t"]}, 422, "invalid_document", "document 1 is empty"),
    bad("whitespace TEI text", {"query": QUERY, "texts": ["ok", "   "]}, 422, "validation", "texts[1] is empty", tei=True),
    bad("whitespace score text_1", {"text_1": "  ", "text_2": ["a"]}, 422, "empty_query", "text_1 is empty", path="/score"),
    # -- media and content parts on a text model (the media policy itself: tests/test_server_media.py) --
    bad("jina image document, text model", {"query": QUERY, "documents": ["a", {"image": PNG_URI}]}, 422, "invalid_document",
        "document 1 holds image", "reads only text"),
    bad("vllm image_url part, text model", {"query": QUERY, "documents": [{"content": [
        {"type": "image_url", "image_url": {"url": PNG_URI}}]}]}, 422, "invalid_document", "document 0 holds image"),
    bad("image query, text model", {"query": {"image": PNG_URI}, "documents": DOCS}, 422, "invalid_document",
        "query holds image"),
    bad("video frames, text model", {"query": QUERY, "documents": [{"video": [PNG_URI, PNG_URI]}]}, 422,
        "invalid_document", "document 0 holds video"),
    bad("vllm part of an unknown type", {"query": QUERY, "documents": ["a", {"content": [{"type": "audio_url", "audio_url": {}}]}]},
        422, "invalid_document", "document 1 content[0]", "'audio_url'", "image_url"),
    bad("vllm image_url without a url", {"query": QUERY, "documents": [{"content": [{"type": "image_url", "image_url": {}}]}]},
        422, "invalid_document", "document 0 content[0]", "'image_url.url'"),
    bad("vllm part without a type", {"query": QUERY, "documents": [{"content": [{"text": "a"}]}]}, 422, "invalid_document",
        "document 0 content[0]", '"type"'),
    bad("vllm content an empty list", {"query": QUERY, "documents": [{"content": []}]}, 422, "invalid_document",
        "document 0", "non-empty list"),
    bad("documents one object that is not content", {"query": QUERY, "documents": {"text": "a"}}, 422, "invalid_request",
        "documents must be a list"),
    bad("query object without text or media", {"query": {"title": "x"}, "documents": DOCS}, 422, "invalid_document",
        "the query is an object"),
    bad("fps zero", {**REQ, "fps": 0}, 422, "invalid_request", "fps"),
    bad("fps over the server's cap", {**REQ, "fps": 100}, 413, "media_too_large", "fps 100", "limit is 2"),
    bad("max_frames 1", {**REQ, "max_frames": 1}, 422, "invalid_request", "max_frames"),
    good("vllm text parts score as text", {"query": {"content": [{"type": "text", "text": QUERY}]},
                                           "documents": [{"content": [{"type": "text", "text": d}]} for d in DOCS]},
         ranked(QUERY, DOCS)),
    good("vllm one-object documents: one per part", {"query": QUERY, "documents": {"content": [
        {"type": "text", "text": d} for d in DOCS]}}, ranked(QUERY, DOCS)),
    # -- routes, methods, headers ----------------------------------------------------------------------
    Case("unknown route", body(REQ), path="/v3/rerank", status=404, kind="not_found", words=("/v3/rerank",)),
    Case("route below a route", body(REQ), path="/rerank/extra", status=404, kind="not_found", words=("/rerank/extra",)),
    Case("GET a POST route", None, path="/v1/rerank", method="GET", status=405, kind="method_not_allowed", words=("GET", "/v1/rerank")),
    Case("DELETE /score", None, path="/score", method="DELETE", status=405, kind="method_not_allowed", words=("DELETE",)),
    Case("PUT /v1/models", b"{}", path="/v1/models", method="PUT", status=405, kind="method_not_allowed", words=("PUT",)),
    good("a 200-character request id is replaced", REQ, fresh_request_id("r" * 200), headers={"x-request-id": "r" * 200}),
]


@pytest.fixture(scope="module")
def engine() -> Reranker:
    return Reranker.from_pretrained(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def server(engine: Reranker) -> Iterator[LiveServer]:
    settings = ServerSettings(api_key=API_KEY, max_documents=MAX_DOCUMENTS, max_body_bytes=MAX_BODY_BYTES,
                              max_request_tokens=MAX_REQUEST_TOKENS, log_requests=False)
    with LiveServer(create_app({"minilm": engine}, settings)) as live:
        yield live


def _send(server: LiveServer, case: Case) -> httpx.Response:
    content: Any = case.content
    if case.chunked:
        payload = case.content or b""
        content = (payload[i : i + 16384] for i in range(0, len(payload), 16384))  # no Content-Length
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        return client.request(case.method, case.path, content=content, headers=case.headers)


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 45
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_or_odd_request(server: LiveServer, engine: Reranker, case: Case) -> None:
    r = _send(server, case)
    text = r.content.decode("utf-8")  # strict: the answer is valid UTF-8 whatever the request held
    assert r.status_code < 500, text
    assert r.status_code == case.status, text
    if case.check is not None:
        case.check(r.json(), engine)
    else:
        got = r.json()
        kind, message = (got["error_type"], got["error"]) if case.tei else (got["error"]["type"], got["error"]["message"])
        assert kind == case.kind, text
        for words in case.words:
            assert words in message, message
        assert not INTERNALS.search(message), message
    # The server keeps serving, and serving right.
    ok = httpx.post(f"{server.url}/v1/rerank", headers=AUTH, json=REQ, timeout=60)
    assert ok.status_code == 200, ok.text
    ranked(QUERY, DOCS)(ok.json(), engine)
    assert ok.json()["results"][0]["index"] == 1
