"""The dialects told apart by their body fields: Voyage, Mixedbread and ``text_pairs``, and the one
discriminator that picks a request model for every rerank body.

Which body is which (first match wins; see ../shared/API.md):

====================  =======================================================================
dialect               recognised by
====================  =======================================================================
``pairs``             ``text_pairs`` (``{"model": ..., "text_pairs": [[query, document], ...]}``)
``tei``               ``texts`` (text-embeddings-inference)
``mixedbread``        ``input`` and no ``documents`` (Mixedbread's ``/v1/reranking``)
``voyage``            ``documents`` that are all strings, no ``top_n``, and ``top_k`` or
                      ``truncation`` (the Voyage SDK always sends ``truncation``; LiteLLM's
                      voyage/ provider sends ``top_k`` when given ``top_n``)
``rerank``            anything else: Cohere v1/v2, Jina, vLLM, Infinity (:class:`RerankRequest`)
====================  =======================================================================

A Cohere/Jina body with ``top_k`` instead of ``top_n`` and object documents stays ``rerank`` (Voyage
takes strings only), so ``top_k`` keeps working as an alias there. A Voyage client whose body carries
none of Voyage's own fields (LiteLLM's voyage/ without ``top_n``) can post to ``/voyage/v1/rerank``,
which always answers in Voyage's shape.

Answers: Voyage ``{"object": "list", "data": [{"index", "relevance_score", "document"?}], "model",
"usage": {"total_tokens"}}``; Mixedbread ``{"object": "list", "model", "data": [{"index", "score",
"input"?, "object": "rank_result"}], "top_k", "return_input", "usage": {"prompt_tokens", "total_tokens"}}``
(the shape of mixedbread's Python SDK ``RerankResponse``); ``text_pairs`` on a rerank path answers the
Cohere/Jina :class:`~rerankd.server.protocol.RerankResponse` with one result per pair **in input
order** (``results[i]`` is pair ``i``, not sorted, no ``top_n``), and on ``/score`` vLLM's score answer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from rerankd.errors import InputError, InvalidDocumentError
from rerankd.server.protocol import (
    RerankParams,
    RerankRequest,
    ScoreParams,
    ScoreRequest,
    TeiRerankRequest,
    _document_of,
)
from rerankd.types import RerankResult

#: Every tag the discriminators below put in a validation error's location (left out of messages).
DIALECT_TAGS = frozenset({"pairs", "tei", "mixedbread", "voyage", "rerank", "score"})


def dialect_of(body: Any) -> str:
    """The dialect of a rerank body (a parsed JSON object, or a request model already built).

    Example:
        >>> dialect_of({"query": "q", "documents": ["a"], "top_k": 1})
        'voyage'
        >>> dialect_of({"query": "q", "documents": [{"text": "a"}], "top_k": 1})
        'rerank'
        >>> dialect_of({"query": "q", "input": ["a"]})
        'mixedbread'
    """
    for cls, tag in _TAG_OF_MODEL.items():
        if isinstance(body, cls):
            return tag
    if not isinstance(body, dict):
        return "rerank"  # not an object: RerankRequest's validation says what is wrong
    if "text_pairs" in body:
        return "pairs"
    if "texts" in body:
        return "tei"
    if "input" in body and "documents" not in body:
        return "mixedbread"
    documents = body.get("documents")
    if ("top_n" not in body and ("top_k" in body or "truncation" in body)
            and isinstance(documents, list) and all(isinstance(d, str) for d in documents)):
        return "voyage"
    return "rerank"


def score_dialect_of(body: Any) -> str:
    """``/score`` takes vLLM's ``text_1``/``text_2`` (or ``queries``/``documents``), or ``text_pairs``."""
    if isinstance(body, TextPairsRequest) or (isinstance(body, dict) and "text_pairs" in body):
        return "pairs"
    return "score"


# -- requests -----------------------------------------------------------------------------------------


class VoyageRerankRequest(BaseModel):
    """Voyage AI rerank request (``POST /v1/rerank`` on api.voyageai.com).

    Example:
        >>> VoyageRerankRequest(query="q", documents=["a", "b"], top_k=1).to_params().top_n
        1
    """

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="served model name; any name when one model is served")
    query: str = Field(description="the text to rank documents against")
    documents: list[str] = Field(description="the documents, as strings")
    top_k: int | None = Field(None, ge=1, description="keep the best K (omitted: all)")
    truncation: bool = Field(True, description="false: a document longer than the model's input is an error")
    return_documents: bool = Field(False, description="echo each document (a string) back in its result")
    instruction: str | None = Field(None, description="rerankd: task instruction for LLM rerankers")
    raw_scores: bool = Field(False, description="rerankd: the model's raw score instead of the normalized one")

    def to_params(self) -> RerankParams:
        return RerankParams(
            model=self.model, query=self.query, documents=list(self.documents),
            returned=[{"text": d} for d in self.documents], top_n=self.top_k,
            return_documents=self.return_documents, raw_scores=self.raw_scores, instruction=self.instruction,
            truncate=self.truncation,
        )

    def answer(self, name: str, result: RerankResult, params: RerankParams) -> dict[str, Any]:
        return voyage_response(name, result, params)


class MixedbreadRerankRequest(BaseModel):
    """Mixedbread rerank request (``POST /v1/reranking``): documents come as ``input``.

    Example:
        >>> MixedbreadRerankRequest(query="q", input=["a", {"text": "b"}]).to_params().documents
        ['a', 'b']
    """

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="served model name; any name when one model is served")
    query: str = Field(description="the text to rank the input against")
    input: list[Union[str, dict[str, Any]]] = Field(description='strings, or objects (ranked on "text" or rank_fields)')
    rank_fields: list[str] | None = Field(None, description="which fields of object inputs to rank on")
    top_k: int | None = Field(None, ge=1, description="keep the best K (omitted: all)")
    return_input: bool = Field(False, description="echo each input back in its result")
    rewrite_query: bool = Field(False, description="not supported: rerankd ranks the query as sent")
    instruction: str | None = Field(None, description="task instruction for LLM rerankers")
    raw_scores: bool = Field(False, description="rerankd: the model's raw score instead of the normalized one")

    def to_params(self) -> RerankParams:
        if self.rewrite_query:
            raise InputError("rewrite_query is not supported: rerankd ranks the query as sent; leave it out or "
                             "send false")
        documents = []
        for i, item in enumerate(self.input):
            if isinstance(item, dict) and not self.rank_fields and not isinstance(item.get("text"), str) \
                    and not any(item.get(k) is not None for k in ("image", "video")):
                fields = ", ".join(sorted(item)) or "no fields"
                raise InvalidDocumentError(
                    f'input {i} is an object without a "text" string ({fields}); name the fields to rank on '
                    "with rank_fields, or send the input as strings")
            documents.append(_document_of(i, item, self.rank_fields))
        return RerankParams(
            model=self.model, query=self.query, documents=documents,
            returned=[d if isinstance(d, dict) else {"text": d} for d in self.input], top_n=self.top_k,
            return_documents=self.return_input, raw_scores=self.raw_scores, instruction=self.instruction,
        )

    def answer(self, name: str, result: RerankResult, params: RerankParams) -> dict[str, Any]:
        return mixedbread_response(name, result, params, self)


class TextPairsRequest(BaseModel):
    """``{"model": ..., "text_pairs": [[query, document], ...]}``: one score per pair, in input order.

    Pairs that share a query are scored as one request (tokenized once, batched together).

    Example:
        >>> TextPairsRequest(text_pairs=[["q", "a"], ["p", "b"]]).to_params().pairs
        [('q', 'a'), ('p', 'b')]
    """

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="served model name; any name when one model is served")
    text_pairs: list[tuple[str, str]] = Field(description="[query, document] pairs")
    raw_scores: bool = Field(False, description="the model's raw score (logit) instead of the normalized one")
    instruction: str | None = Field(None, description="task instruction for LLM rerankers")
    max_tokens_per_doc: int | None = Field(None, ge=1, description="cut each document to this many tokens")

    def to_params(self) -> ScoreParams:
        if not self.text_pairs:
            raise InputError("text_pairs is empty; send at least one [query, document] pair")
        return ScoreParams(model=self.model, pairs=list(self.text_pairs), raw_scores=self.raw_scores,
                           instruction=self.instruction, max_doc_tokens=self.max_tokens_per_doc)


_TAG_OF_MODEL: dict[type, str] = {
    TextPairsRequest: "pairs", TeiRerankRequest: "tei", MixedbreadRerankRequest: "mixedbread",
    VoyageRerankRequest: "voyage", RerankRequest: "rerank",
}

#: One body for every rerank route, chosen by :func:`dialect_of`.
RerankBody = Annotated[
    Union[
        Annotated[TextPairsRequest, Tag("pairs")],
        Annotated[TeiRerankRequest, Tag("tei")],
        Annotated[MixedbreadRerankRequest, Tag("mixedbread")],
        Annotated[VoyageRerankRequest, Tag("voyage")],
        Annotated[RerankRequest, Tag("rerank")],
    ],
    Discriminator(dialect_of),
]

#: ``/score``'s body: vLLM's, or ``text_pairs``.
ScoreBody = Annotated[
    Union[Annotated[TextPairsRequest, Tag("pairs")], Annotated[ScoreRequest, Tag("score")]],
    Discriminator(score_dialect_of),
]


# -- responses ----------------------------------------------------------------------------------------


class VoyageRankedItem(BaseModel):
    index: int
    relevance_score: float
    #: A string, and only with ``return_documents`` (left out, not null, otherwise).
    document: str | None = None


class VoyageUsage(BaseModel):
    total_tokens: int


class VoyageRerankResponse(BaseModel):
    """Voyage's answer: best first under ``data``."""

    object: Literal["list"] = "list"
    data: list[VoyageRankedItem]
    model: str
    usage: VoyageUsage


class MixedbreadRankedItem(BaseModel):
    index: int
    score: float
    #: The input as sent (string or object), only with ``return_input``.
    input: Any = None
    object: Literal["rank_result"] = "rank_result"


class MixedbreadUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class MixedbreadRerankResponse(BaseModel):
    """Mixedbread's answer: best first under ``data``, with the request's ``top_k`` and ``return_input``."""

    object: Literal["list"] = "list"
    model: str
    data: list[MixedbreadRankedItem]
    top_k: int
    return_input: bool
    usage: MixedbreadUsage


def _score(params: RerankParams, raw: float, normalized: float) -> float:
    return raw if params.raw_scores else normalized


def voyage_response(name: str, result: RerankResult, params: RerankParams) -> dict[str, Any]:
    """Voyage's body; ``document`` (the string) only when asked for."""
    data = []
    for r in result.results:
        item: dict[str, Any] = {"index": r.index, "relevance_score": _score(params, r.raw_score, r.score)}
        if params.return_documents:
            item["document"] = params.returned[r.index]["text"]
        data.append(item)
    return {"object": "list", "data": data, "model": name, "usage": {"total_tokens": result.total_tokens}}


def mixedbread_response(name: str, result: RerankResult, params: RerankParams,
                        body: MixedbreadRerankRequest) -> dict[str, Any]:
    """Mixedbread's body; ``input`` (as sent) only when asked for; ``top_k`` is the request's, else all."""
    data = []
    for r in result.results:
        item: dict[str, Any] = {"index": r.index, "score": _score(params, r.raw_score, r.score)}
        if params.return_documents:
            item["input"] = body.input[r.index]
        item["object"] = "rank_result"
        data.append(item)
    return {
        "object": "list", "model": name, "data": data,
        "top_k": body.top_k if body.top_k is not None else len(body.input), "return_input": body.return_input,
        "usage": {"prompt_tokens": result.total_tokens, "total_tokens": result.total_tokens},
    }


def pairs_rerank_response(request_id: str, name: str, values: list[float], tokens: int, documents: int,
                          api_version: str) -> dict[str, Any]:
    """``text_pairs`` on a rerank path: the Cohere/Jina body, one result per pair in input order."""
    return {
        "id": request_id,
        "model": name,
        "results": [{"index": i, "relevance_score": v} for i, v in enumerate(values)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "meta": {"api_version": {"version": api_version},
                 "billed_units": {"search_units": max(1, -(-documents // 100))}},
    }
