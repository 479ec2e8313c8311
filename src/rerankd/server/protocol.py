"""Request and response models of every rerank dialect the server speaks (pydantic only, no serving logic).

Each request model converts itself into the server's internal parameters with ``to_params()``, so the
routes stay thin and every dialect goes through the same scoring path. The response models are the
contract the tests check responses against.

Dialects (see ../shared/API.md): Cohere v1/v2, Jina, vLLM and Infinity share :class:`RerankRequest`;
text-embeddings-inference (TEI) sends ``texts`` and gets a bare array (:class:`TeiRerankRequest`);
vLLM's ``/score`` takes ``text_1``/``text_2`` or ``queries``/``documents`` (:class:`ScoreRequest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel

from rerankd.chunking import ChunkSettings
from rerankd.errors import EmptyQueryError, InputError, InvalidDocumentError
from rerankd.server.echo import check_echoable
from rerankd.server.multimodal import content_documents, is_multimodal, native
from rerankd.text_checks import check_text

# -- internal parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RerankParams:
    """One (query, documents) request in the server's own terms, whatever dialect it came in."""

    model: str | None
    query: Any
    #: one per document: its text, or the native dict form (``{"image": ...}``) of a media document.
    documents: list[Any]
    #: what ``return_documents`` echoes back, one per document: ``{"text": ...}`` or the object as sent.
    returned: list[dict[str, Any]]
    top_n: int | None = None
    return_documents: bool = False
    raw_scores: bool = False
    instruction: str | None = None
    max_doc_tokens: int | None = None
    #: False: a document that does not fit is an error (TEI's ``truncate: false``), not silently cut.
    truncate: bool = True
    #: Long documents as windows: settings, False (truncate), or None (the server's --long-documents).
    chunking: Any = None
    #: Video sampling asked for by the request (``None``: the server's); checked against its caps.
    fps: float | None = None
    max_frames: int | None = None


@dataclass(frozen=True)
class ScoreParams:
    """vLLM ``/score``: (query, document) pairs, scored in input order."""

    model: str | None
    #: (query, document); either side text, or the native dict of a multimodal item (``/score`` content parts).
    pairs: list[tuple[Any, Any]]
    raw_scores: bool = False
    instruction: str | None = None
    max_doc_tokens: int | None = None


def _document_of(index: int, document: str | dict[str, Any], rank_fields: list[str] | None) -> Any:
    """A request document as the pipeline takes it: text, or the dict form of a media document."""
    if isinstance(document, str):
        return document
    if rank_fields:
        # Cohere v1: the selected fields are ranked as "field: value" lines, in the order asked for.
        missing = [f for f in rank_fields if f not in document]
        if missing:
            raise InvalidDocumentError(f"document {index} has no field {missing[0]!r} named in rank_fields")
        return "\n".join(f"{field}: {document[field]}" for field in rank_fields)
    if is_multimodal(document):
        # Jina's {"image": ...}, vLLM's {"content": [...]}, the native dict; the pipeline refuses
        # media for models that read text only, and reads it under the server's media policy.
        return native(document, f"document {index}")
    text = document.get("text")
    if isinstance(text, str):
        return text
    kinds = ", ".join(sorted(k for k in document if k != "text")) or "no fields"
    raise InvalidDocumentError(
        f'document {index} is an object without a "text" string ({kinds}); send text documents '
        'as strings or {"text": "..."}'
    )


def _documents_list(value: Any) -> Any:
    """vLLM's ``documents: {"content": [parts]}`` as a list, one document per part; other objects refused."""
    if isinstance(value, dict):
        documents = content_documents(value)
        if documents is None:
            raise InvalidDocumentError(
                'documents must be a list, one document per element (or vLLM\'s {"content": [parts]}, one document '
                "per part)")
        return documents
    return value


def query_of(query: str | dict[str, Any]) -> Any:
    """A request's query as the pipeline takes it: text, or the native dict of a multimodal query."""
    if isinstance(query, str):
        return query
    if is_multimodal(query):
        return native(query, "the query")
    if isinstance(query.get("text"), str):
        return query["text"]
    raise InvalidDocumentError('the query is an object without "text", "image", "video" or "content"; send a string '
                               'or {"text": ...}')


class ChunkingOptions(BaseModel):
    """rerankd's extension object: score long documents as token windows (see rerankd.chunking)."""

    model_config = ConfigDict(extra="forbid")

    max_chunks: int = Field(ChunkSettings.max_chunks, ge=1, le=1000, description="windows per document at most")
    overlap: int = Field(ChunkSettings.overlap, ge=0, description="tokens shared by neighbouring windows")
    aggregation: Literal["max", "first", "mean"] = Field(ChunkSettings.aggregation,
                                                         description="how window scores become the document's")

    def to_settings(self) -> Any:
        return ChunkSettings(self.max_chunks, self.overlap, self.aggregation)


def chunking_of(options: bool | ChunkingOptions | None, max_chunks_per_doc: int | None) -> Any:
    """A request's long-document choice: its own options, Cohere's ``max_chunks_per_doc``, or the server's."""
    if isinstance(options, ChunkingOptions):
        return options.to_settings()
    if options is not None:
        return bool(options)
    if max_chunks_per_doc is not None:
        return ChunkSettings(max_chunks=max_chunks_per_doc)
    return None


def _not_a_boolean(value: Any) -> Any:
    # pydantic's lax mode reads true as 1: "top_n": true would silently mean "the best one".
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    return value


#: A count field (top_n, max_tokens_per_doc): an integer; numeric strings pass, booleans do not.
Count = Annotated[int, BeforeValidator(_not_a_boolean)]


# -- requests -----------------------------------------------------------------------------------------


class RerankRequest(BaseModel):
    """Cohere v1/v2, Jina, vLLM and Infinity rerank request.

    Example:
        >>> RerankRequest(query="q", documents=["a", {"text": "b"}], top_n=1).to_params().documents
        ['a', 'b']
    """

    # Clients send their own extras (vLLM's truncate_prompt_tokens, Cohere's max_chunks_per_doc...):
    # ignore them rather than fail a client that works against the other servers.
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="served model name; the first served model when omitted")
    query: Union[str, dict[str, Any]] = Field(
        description='the text to rank documents against; vision-language models also take {"image": ...}, '
                    '{"content": [parts]} or {"text", "image", "video"}')
    documents: Annotated[list[Union[str, dict[str, Any]]], BeforeValidator(_documents_list)] = Field(
        description='strings, or objects: {"text"}, Jina {"image": url | data URI | base64}, vLLM {"content": [parts]}, '
                    'native {"text", "image", "video"}; one document per element (vLLM\'s single {"content": [...]} '
                    'object: one document per part)')
    top_n: Count | None = Field(None, ge=0, description="keep the best N (0 or omitted: all)")
    top_k: Count | None = Field(None, ge=0, description="alias of top_n (Voyage, Mixedbread)")
    return_documents: bool = Field(False, description="echo each document back in its result")
    max_tokens_per_doc: Count | None = Field(None, ge=1, description="cut each document to this many tokens")
    instruction: str | None = Field(None, description="task instruction for LLM rerankers")
    raw_scores: bool = Field(False, description="return the model's raw score (logit) instead of the normalized one")
    rank_fields: list[str] | None = Field(None, description="Cohere v1: which fields of object documents to rank on")
    max_chunks_per_doc: int | None = Field(None, ge=1, le=1000,
                                           description="Cohere v1: score long documents as up to N windows, keep the best")
    chunking: Union[bool, ChunkingOptions, None] = Field(
        None, description="rerankd: long documents as windows ({max_chunks, overlap, aggregation}), or false to truncate")
    fps: float | None = Field(None, gt=0, description="rerankd: frames per second sampled from videos (default 1)")
    max_frames: int | None = Field(None, ge=2, description="rerankd: frames a video is sampled to at most (default 64)")

    def to_params(self) -> RerankParams:
        documents = self.documents
        texts = [_document_of(i, d, self.rank_fields) for i, d in enumerate(documents)]
        returned = [d if isinstance(d, dict) else {"text": d} for d in documents]
        if self.return_documents:  # objects come back as sent: they must be writable as JSON
            for i, d in enumerate(documents):
                check_echoable(d, f"document {i}")
        return RerankParams(
            model=self.model, query=query_of(self.query), documents=texts, returned=returned,
            top_n=self.top_n if self.top_n is not None else self.top_k,
            return_documents=self.return_documents, raw_scores=self.raw_scores,
            instruction=self.instruction, max_doc_tokens=self.max_tokens_per_doc,
            chunking=chunking_of(self.chunking, self.max_chunks_per_doc), fps=self.fps, max_frames=self.max_frames,
        )


class TeiRerankRequest(BaseModel):
    """text-embeddings-inference rerank request (it is recognised by its ``texts`` field).

    Example:
        >>> TeiRerankRequest(query="q", texts=["a"], return_text=True).to_params().return_documents
        True
    """

    model_config = ConfigDict(extra="ignore")

    query: str
    texts: list[str]
    model: str | None = None
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = Field(None, description="false: a text longer than the model's limit is an error")
    truncation_direction: str = Field("right", description="only right truncation (keep the start) is supported")
    top_n: Count | None = Field(None, ge=0, description="not in TEI itself: keep the best N")

    def to_params(self) -> RerankParams:
        if self.truncation_direction.lower() != "right":
            raise InputError(
                f"truncation_direction {self.truncation_direction!r} is not supported; rerankd keeps the start "
                'of a document ("right")'
            )
        _check_texts("texts", self.texts, empty=InvalidDocumentError)
        return RerankParams(
            model=self.model, query=self.query, documents=list(self.texts), returned=[{"text": t} for t in self.texts],
            top_n=self.top_n, return_documents=self.return_text, raw_scores=self.raw_scores,
            truncate=self.truncate is not False,
        )


def is_tei_body(body: Any) -> bool:
    """TEI requests are the ones that send ``texts`` (API.md: answer in TEI's shape only then)."""
    return isinstance(body, dict) and "texts" in body


class ScoreRequest(BaseModel):
    """vLLM ``/score``: ``text_1`` against ``text_2`` (or ``queries`` against ``documents``).

    One query against N documents, or N queries paired with N documents one to one.

    Example:
        >>> ScoreRequest(text_1="q", text_2=["a", "b"]).to_params().pairs
        [('q', 'a'), ('q', 'b')]
    """

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    #: Strings, or vLLM's multimodal ``{"content": [parts]}`` (one item per part; vision-language models).
    text_1: Union[str, list[str], dict[str, Any], None] = None
    text_2: Union[str, list[str], dict[str, Any], None] = None
    queries: Union[str, list[str], dict[str, Any], None] = None
    documents: Union[str, list[str], dict[str, Any], None] = None
    raw_scores: bool = False
    instruction: str | None = None
    max_tokens_per_doc: Count | None = Field(None, ge=1)

    def to_params(self) -> ScoreParams:
        left = self.text_1 if self.text_1 is not None else self.queries
        right = self.text_2 if self.text_2 is not None else self.documents
        if left is None or right is None:
            raise InputError("send text_1 and text_2 (or queries and documents)")
        lefts = _score_items("text_1" if self.text_1 is not None else "queries", left)
        rights = _score_items("text_2" if self.text_2 is not None else "documents", right)
        if not lefts or not rights:
            raise InputError("text_1 and text_2 must not be empty lists")
        if len(lefts) == 1:
            lefts = lefts * len(rights)
        if len(lefts) != len(rights):
            raise InputError(
                f"text_1 has {len(lefts)} texts and text_2 has {len(rights)}; send one text_1, or as many as text_2"
            )
        # Checked here, by position: the service groups pairs by query, so a later check could only
        # name a position inside a group.
        if not isinstance(left, dict):
            _check_texts("text_1" if self.text_1 is not None else "queries", left, empty=EmptyQueryError)
        if not isinstance(right, dict):
            _check_texts("text_2" if self.text_2 is not None else "documents", right, empty=InvalidDocumentError)
        return ScoreParams(model=self.model, pairs=list(zip(lefts, rights)), raw_scores=self.raw_scores,
                           instruction=self.instruction, max_doc_tokens=self.max_tokens_per_doc)


def _score_items(field: str, value: str | list[str] | dict[str, Any]) -> list[Any]:
    """One side of a ``/score`` body as items: strings, or each part of vLLM's ``{"content": [parts]}``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        items = content_documents(value)
        if items is None:
            raise InvalidDocumentError(f'{field} must be a string, a list of strings, or {{"content": [parts]}}')
        return [native(item, f"{field}[{i}]") for i, item in enumerate(items)]
    return list(value)


def _check_texts(field: str, value: str | list[str], *, empty: type[InputError]) -> None:
    """Refuse an empty or invalid text, naming it as the dialect does (``texts[3]``, ``text_2[3]``)."""
    named = [(field, value)] if isinstance(value, str) else [(f"{field}[{i}]", text) for i, text in enumerate(value)]
    for where, text in named:
        if not text.strip():
            raise empty(f"{where} is empty; send its text")
        check_text(text, where)


# -- responses ----------------------------------------------------------------------------------------


class ResultDocument(BaseModel):
    """A returned document: ``{"text": ...}``, or the object the client sent."""

    model_config = ConfigDict(extra="allow")

    text: str | None = None


class RankedItem(BaseModel):
    index: int
    relevance_score: float
    #: Left out (not null) unless the request asked for documents: strict clients reject null.
    document: ResultDocument | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class RerankResponse(BaseModel):
    """Cohere v1/v2 + Jina + vLLM response (each reads the fields it knows)."""

    id: str
    model: str
    results: list[RankedItem]
    usage: Usage
    meta: Meta


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class TeiRerankResponse(RootModel[list[TeiRank]]):
    """TEI's bare array, best first."""


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rerankd"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelEntry]


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    """``{"error": {"type": ..., "message": ...}}``: every error outside TEI-shaped requests."""

    error: ErrorDetail


class TeiErrorResponse(BaseModel):
    """TEI's error shape, for TEI-shaped requests."""

    error: str
    error_type: Literal["validation", "tokenizer", "backend", "overloaded", "empty", "unauthorized", "unavailable"]
