"""Clients as their users run them, pointed at a real server: the Cohere SDK with its own model names,
LangChain's CohereRerank, LiteLLM's rerank through its cohere/, jina_ai/, hosted_vllm/, infinity/ and
voyage/ providers; Voyage, Mixedbread and ``text_pairs`` bodies; the model-name rules.

The server serves the bundled all-MiniLM-L6-v2 (it ranks real text), so "correct" means both: equal to
the offline ranking, and the relevant sentence first.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

# LiteLLM fetches its model cost map from the internet at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from live_server import LiveServer  # noqa: E402

from rerankd import Reranker  # noqa: E402
from rerankd.errors import ModelNotFoundError  # noqa: E402
from rerankd.server import ServerSettings, create_app  # noqa: E402
from rerankd.server.dialects import (  # noqa: E402
    MixedbreadRerankResponse,
    VoyageRerankResponse,
    dialect_of,
)
from rerankd.server.metrics import ServerMetrics  # noqa: E402
from rerankd.server.protocol import ErrorResponse, RerankResponse, ScoreResponse  # noqa: E402
from rerankd.server.service import RerankService  # noqa: E402

# LiteLLM's own TypedDicts make pydantic warn at import; they say nothing about rerankd.
pytestmark = pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning")

API_KEY = "clients-key-42"
SERVED = "minilm"
QUERY = "What is the capital of France?"
TOWER = "When was the Eiffel Tower built?"
# What users leave in their clients' model fields: defaults of LangChain (old) and Cohere, provider names.
CLIENT_NAMES = ["rerank-english-v2.0", "rerank-v3.5", "jina-reranker-v2-base-multilingual", "BAAI/bge-reranker-v2-m3"]


@pytest.fixture(scope="module")
def engine() -> Reranker:
    return Reranker.from_pretrained(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def server(engine: Reranker) -> Iterator[LiveServer]:
    with LiveServer(create_app({SERVED: engine}, ServerSettings(api_key=API_KEY))) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


def offline(engine: Reranker, query: str, docs: list[str], top_n: int | None = None) -> list[tuple[int, float]]:
    return [(r.index, r.score) for r in engine.rank(query, docs, top_n=top_n).results]


def assert_ranked(got: list[tuple[int, float]], want: list[tuple[int, float]], first: int = 0) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-6)
    assert got[0][0] == first  # the relevant sentence wins, not just "the same as offline"


# -- the Cohere SDK, with the names its users send -----------------------------------------------------


def test_cohere_sdk_with_its_own_model_names(server: LiveServer, engine: Reranker, sentences: list[str]) -> None:
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    want = offline(engine, QUERY, sentences, top_n=3)
    v2 = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    res = v2.rerank(model="rerank-v3.5", query=QUERY, documents=sentences, top_n=3)
    assert_ranked([(r.index, r.relevance_score) for r in res.results], want)
    # The v1 client's model is optional: it sends none, and the served model answers.
    v1 = cohere.Client(api_key=API_KEY, base_url=server.url)
    res1 = v1.rerank(query=TOWER, documents=sentences, return_documents=True)
    assert_ranked([(r.index, r.relevance_score) for r in res1.results], offline(engine, TOWER, sentences), first=2)
    assert res1.results[0].document.text == sentences[2]


# -- LangChain -----------------------------------------------------------------------------------------


def test_langchain_cohere_rerank(server: LiveServer, engine: Reranker, sentences: list[str]) -> None:
    langchain_cohere = pytest.importorskip("langchain_cohere", reason="langchain-cohere is not installed")
    from langchain_core.documents import Document

    # "rerank-english-v2.0" was LangChain's default model name; users still copy it from old examples.
    reranker = langchain_cohere.CohereRerank(cohere_api_key=API_KEY, base_url=server.url,
                                             model="rerank-english-v2.0", top_n=3)
    docs = [Document(page_content=s, metadata={"n": i}) for i, s in enumerate(sentences)]
    kept = reranker.compress_documents(docs, QUERY)
    want = offline(engine, QUERY, sentences, top_n=3)
    assert_ranked([(d.metadata["n"], d.metadata["relevance_score"]) for d in kept], want)
    ranked = reranker.rerank(sentences, TOWER, top_n=None)
    assert_ranked([(r["index"], r["relevance_score"]) for r in ranked], offline(engine, TOWER, sentences), first=2)


# -- LiteLLM, through each provider a user would pick ----------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Any:
    return pytest.importorskip("litellm", reason="litellm is not installed")


@pytest.mark.parametrize("model, suffix, extra", [
    ("cohere/rerank-english-v3.0", "", {}),
    ("jina_ai/jina-reranker-v2-base-multilingual", "", {}),
    ("hosted_vllm/BAAI/bge-reranker-v2-m3", "", {}),
    ("voyage/rerank-2", "", {}),
    # voyage/ without top_n sends no field of Voyage's own: its answer comes from the Voyage path.
    ("voyage/rerank-2-lite", "/voyage", {"top_n": None}),
    # infinity/ reads "document" as Infinity's bare string, so documents must not be asked back.
    ("infinity/mixedbread-ai/mxbai-rerank-base-v1", "", {"return_documents": False}),
])
def test_litellm_rerank_providers(litellm: Any, server: LiveServer, engine: Reranker, sentences: list[str],
                                  model: str, suffix: str, extra: dict[str, Any]) -> None:
    kwargs = {"top_n": 3, **extra}
    res = litellm.rerank(model=model, query=QUERY, documents=sentences, api_base=server.url + suffix,
                         api_key=API_KEY, **kwargs)
    got = [(r["index"], r["relevance_score"]) for r in res.results]
    assert_ranked(got, offline(engine, QUERY, sentences, top_n=kwargs["top_n"]))
    if kwargs.get("return_documents", True):  # LiteLLM asks for documents by default
        assert [r["document"]["text"] for r in res.results] == [sentences[i] for i, _ in got]


# -- Voyage, Mixedbread and text_pairs over raw HTTP -----------------------------------------------------


def test_voyage_sdk_body(client: httpx.Client, engine: Reranker, sentences: list[str]) -> None:
    # What voyageai.Client.rerank sends: truncation always, top_k null unless given.
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": sentences, "model": "rerank-2", "top_k": None,
                                        "truncation": True})
    assert r.status_code == 200, r.text
    body = VoyageRerankResponse.model_validate(r.json())
    assert body.object == "list" and body.model == SERVED and body.usage.total_tokens > 0
    assert_ranked([(d.index, d.relevance_score) for d in body.data], offline(engine, QUERY, sentences))
    assert all("document" not in d for d in r.json()["data"])  # left out, not null
    with_docs = client.post("/v1/rerank", json={"query": TOWER, "documents": sentences, "top_k": 2,
                                                "return_documents": True}).json()
    assert [d["document"] for d in with_docs["data"]] == [sentences[d["index"]] for d in with_docs["data"]]
    assert len(with_docs["data"]) == 2 and with_docs["data"][0]["index"] == 2


def test_voyage_truncation_false_refuses_a_document_that_does_not_fit(client: httpx.Client) -> None:
    long_text = "word " * 2000
    body = {"query": QUERY, "documents": [long_text], "truncation": False}
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == 413, r.text
    assert "truncat" in ErrorResponse.model_validate(r.json()).error.message
    assert client.post("/v1/rerank", json={**body, "truncation": True}).status_code == 200


def test_voyage_path_answers_in_voyages_shape(client: httpx.Client, engine: Reranker, sentences: list[str]) -> None:
    r = client.post("/voyage/v1/rerank", json={"query": QUERY, "documents": sentences})
    assert r.status_code == 200, r.text
    body = VoyageRerankResponse.model_validate(r.json())
    assert_ranked([(d.index, d.relevance_score) for d in body.data], offline(engine, QUERY, sentences))


@pytest.mark.parametrize("path", ["/v1/reranking", "/v1/rerank"])
def test_mixedbread_body(client: httpx.Client, engine: Reranker, sentences: list[str], path: str) -> None:
    items: list[Any] = [{"text": s, "id": i} for i, s in enumerate(sentences[:3])] + sentences[3:]
    r = client.post(path, json={"model": "mixedbread-ai/mxbai-rerank-large-v2", "query": QUERY, "input": items,
                                "top_k": 2, "return_input": True})
    assert r.status_code == 200, r.text
    body = MixedbreadRerankResponse.model_validate(r.json())
    assert body.model == SERVED and body.top_k == 2 and body.return_input is True and body.usage.total_tokens > 0
    assert_ranked([(d.index, d.score) for d in body.data], offline(engine, QUERY, sentences, top_n=2))
    assert [d.input for d in body.data] == [items[d.index] for d in body.data]  # as sent: objects stay objects
    assert all(d["object"] == "rank_result" for d in r.json()["data"])
    plain = client.post(path, json={"query": QUERY, "input": sentences}).json()
    assert plain["top_k"] == len(sentences) and plain["return_input"] is False
    assert all("input" not in d for d in plain["data"])


def test_mixedbread_rank_fields_and_refusals(client: httpx.Client, engine: Reranker) -> None:
    items = [{"title": "Fruit", "body": "Bananas are yellow."}, {"title": "France", "body": "Paris is its capital."}]
    r = client.post("/v1/reranking", json={"query": QUERY, "input": items, "rank_fields": ["title", "body"]})
    assert r.status_code == 200, r.text
    texts = [f"title: {d['title']}\nbody: {d['body']}" for d in items]
    assert_ranked([(d["index"], d["score"]) for d in r.json()["data"]], offline(engine, QUERY, texts), first=1)
    no_fields = client.post("/v1/reranking", json={"query": QUERY, "input": items})
    assert no_fields.status_code == 422 and "rank_fields" in no_fields.json()["error"]["message"]
    rewrite = client.post("/v1/reranking", json={"query": QUERY, "input": ["a"], "rewrite_query": True})
    assert rewrite.status_code == 422 and "rewrite_query" in rewrite.json()["error"]["message"]


PAIRS = [[QUERY, "Bananas are a yellow fruit rich in potassium."], [TOWER, "The Eiffel Tower was completed in 1889."],
         [QUERY, "Paris is the capital and largest city of France."], ["yellow fruit", "Bananas are yellow."]]


def _pair_scores(engine: Reranker) -> list[float]:
    return [engine.score(q, [d])[0] for q, d in PAIRS]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_text_pairs_on_rerank_paths_answer_in_input_order(client: httpx.Client, engine: Reranker, path: str) -> None:
    r = client.post(path, json={"model": "anything", "text_pairs": PAIRS})
    assert r.status_code == 200, r.text
    body = RerankResponse.model_validate(r.json())
    assert body.model == SERVED and [x.index for x in body.results] == [0, 1, 2, 3]  # not sorted
    np.testing.assert_allclose([x.relevance_score for x in body.results], _pair_scores(engine), rtol=1e-5, atol=1e-6)
    assert body.meta.api_version.version == ("2" if path.startswith("/v2") else "1")


def test_text_pairs_on_score(client: httpx.Client, engine: Reranker) -> None:
    r = client.post("/score", json={"model": SERVED, "text_pairs": PAIRS})
    assert r.status_code == 200, r.text
    body = ScoreResponse.model_validate(r.json())
    assert [d.index for d in body.data] == [0, 1, 2, 3]
    np.testing.assert_allclose([d.score for d in body.data], _pair_scores(engine), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("send, says", [
    ({"text_pairs": []}, "at least one"),
    ({"text_pairs": [["only a query"]]}, "text_pairs.0"),
    ({"text_pairs": [["q", "d", "extra"]]}, "text_pairs.0"),
])
def test_text_pairs_refusals(client: httpx.Client, send: dict[str, Any], says: str) -> None:
    for path in ("/v1/rerank", "/score"):
        r = client.post(path, json=send)
        assert r.status_code == 422, r.text
        assert says in ErrorResponse.model_validate(r.json()).error.message


def test_existing_dialects_keep_their_shapes(client: httpx.Client) -> None:
    # Cohere/Jina with top_k and object documents (not Voyage: Voyage takes strings), and TEI.
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": [{"text": "Paris"}, {"text": "Bananas"}], "top_k": 1})
    assert "results" in r.json() and RerankResponse.model_validate(r.json()).results[0].index == 0
    tei = client.post("/rerank", json={"query": QUERY, "texts": ["Paris", "Bananas"]}).json()
    assert isinstance(tei, list) and tei[0]["index"] == 0


# -- the dialect discriminator ------------------------------------------------------------------------------


@pytest.mark.parametrize("body, dialect", [
    ({"query": "q", "documents": ["a"]}, "rerank"),                                  # Cohere v2, Jina, vLLM
    ({"query": "q", "documents": ["a"], "top_n": 1}, "rerank"),
    ({"query": "q", "documents": ["a"], "top_n": 1, "top_k": 1}, "rerank"),          # top_n wins
    ({"query": "q", "documents": [{"text": "a"}], "top_k": 1}, "rerank"),            # objects: not Voyage
    ({"query": "q", "documents": ["a"], "top_k": 1}, "voyage"),                      # LiteLLM voyage/
    ({"query": "q", "documents": ["a"], "top_k": None, "truncation": True}, "voyage"),  # Voyage SDK
    ({"query": "q", "documents": ["a"], "truncation": False}, "voyage"),
    ({"query": "q", "input": ["a"]}, "mixedbread"),
    ({"query": "q", "input": [{"text": "a"}], "top_k": 1, "return_input": True}, "mixedbread"),
    ({"query": "q", "texts": ["a"]}, "tei"),
    ({"query": "q", "texts": ["a"], "top_k": 1}, "tei"),
    ({"text_pairs": [["q", "a"]]}, "pairs"),
    ({"query": "q", "documents": ["a"], "input": ["b"]}, "rerank"),                  # documents: not Mixedbread
    ([1, 2], "rerank"),                                                              # RerankRequest says what's wrong
])
def test_dialect_of(body: Any, dialect: str) -> None:
    assert dialect_of(body) == dialect


def test_dialect_examples() -> None:
    import doctest

    from rerankd.server import dialects

    result = doctest.testmod(dialects)
    assert result.attempted >= 5 and result.failed == 0


# -- model names ----------------------------------------------------------------------------------------------


def _service(engines: dict[str, Reranker], **settings: Any) -> RerankService:
    return RerankService(engines, ServerSettings(**settings), ServerMetrics())


def test_one_model_answers_any_name(engine: Reranker) -> None:
    service = _service({SERVED: engine})
    assert [service.resolve(n) for n in [*CLIENT_NAMES, SERVED, None, ""]] == [SERVED] * (len(CLIENT_NAMES) + 3)


def test_strict_model_names_and_several_models_refuse_unknown_names(engine: Reranker) -> None:
    strict = _service({SERVED: engine}, strict_model_names=True)
    assert strict.resolve(SERVED) == SERVED and strict.resolve(None) == SERVED
    with pytest.raises(ModelNotFoundError, match=r"'rerank-english-v2.0' is not served.*'minilm'.*strict-model-names"):
        strict.resolve("rerank-english-v2.0")
    several = _service({SERVED: engine, "other": engine})
    assert several.resolve("other") == "other"
    with pytest.raises(ModelNotFoundError, match=r"'rerank-v3.5' is not served here; served models: 'minilm', 'other'$"):
        several.resolve("rerank-v3.5")


def test_model_name_rules_over_http(server: LiveServer, client: httpx.Client, engine: Reranker,
                                    sentences: list[str]) -> None:
    for name in CLIENT_NAMES:
        r = client.post("/v2/rerank", json={"model": name, "query": QUERY, "documents": sentences, "top_n": 1})
        assert r.status_code == 200 and r.json()["model"] == SERVED  # the response names what answered
    from fastapi.testclient import TestClient

    for engines, settings, served in [({SERVED: engine}, {"strict_model_names": True}, "'minilm'"),
                                      ({SERVED: engine, "other": engine}, {}, "'minilm', 'other'")]:
        with TestClient(create_app(engines, ServerSettings(**settings))) as test_client:
            r = test_client.post("/v1/rerank", json={"model": "rerank-english-v2.0", "query": QUERY, "documents": ["a"]})
            assert r.status_code == 404
            error = ErrorResponse.model_validate(r.json()).error
            assert error.type == "model_not_found" and served in error.message


def test_strict_model_names_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd.cli import build_parser
    from rerankd.commands.serve import settings_from

    assert settings_from(build_parser().parse_args(["serve"])).strict_model_names is False
    assert settings_from(build_parser().parse_args(["serve", "--strict-model-names"])).strict_model_names is True
    monkeypatch.setenv("RERANKD_STRICT_MODEL_NAMES", "1")
    assert settings_from(build_parser().parse_args(["serve"])).strict_model_names is True
