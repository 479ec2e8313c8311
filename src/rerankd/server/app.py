"""The HTTP app: thin routes over :class:`~rerankd.server.service.RerankService`, one error table,
a guard middleware (auth, body limit, request id, access log, request metrics) and the lifespan.

Example:
    >>> from rerankd import Reranker
    >>> from rerankd.server import ServerSettings, create_app
    >>> app = create_app({"minilm": Reranker.from_pretrained()}, ServerSettings())   # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8080)                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator, Mapping, Union

from rerankd._optional import require

# This module is the server itself, imported only when an app is made: fail here with the install hint.
require("fastapi")
require("prometheus_client")

from fastapi import Body, FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from rerankd.engine import Reranker  # noqa: E402
from rerankd.server.dialects import (  # noqa: E402
    DIALECT_TAGS,
    MixedbreadRerankRequest,
    MixedbreadRerankResponse,
    RerankBody,
    ScoreBody,
    TextPairsRequest,
    VoyageRerankRequest,
    VoyageRerankResponse,
    pairs_rerank_response,
)
from rerankd.errors import RerankdError  # noqa: E402
from rerankd.server.errors import (  # noqa: E402
    MalformedBodyError,
    MethodNotAllowedError,
    RequestValidationFailed,
    RouteNotFoundError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    error_body,
    error_status,
    public_message,
)
from rerankd.server.metrics import ServerMetrics  # noqa: E402
from rerankd.server.protocol import (  # noqa: E402
    ErrorResponse,
    ModelList,
    RerankResponse,
    ScoreResponse,
    TeiErrorResponse,
    TeiRerankRequest,
    TeiRerankResponse,
    is_tei_body,
)
from rerankd.server.service import RerankService, rerank_response, score_response, tei_response, unless_disconnected  # noqa: E402
from rerankd.server.settings import ServerSettings  # noqa: E402

access_log = logging.getLogger("rerankd.access")
log = logging.getLogger("rerankd.server")

#: Routes anyone may call, even with --api-key set: probes, metrics scrapers, the API docs.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
#: /v1/reranking is Mixedbread's (and llama.cpp's) path; the body still says which dialect it is.
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank", "/v1/reranking")
#: Always answered in Voyage's shape, for Voyage clients whose body carries none of Voyage's own fields.
VOYAGE_PATH = "/voyage/v1/rerank"
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why}
    for status, why in {401: "missing or wrong API key", 404: "unknown model", 413: "over a size limit",
                        422: "invalid request", 429: "overloaded, retry later", 500: "server error"}.items()
}


@dataclass
class RequestContext:
    """What one request's access-log line and metrics say; the handler fills in model/documents/tokens."""

    id: str
    route: str
    started: float
    tei: bool = False
    model: str | None = None
    documents: int | None = None
    tokens: int | None = None
    error_kind: str | None = None


def create_app(engines: Mapping[str, Reranker], settings: ServerSettings | None = None) -> Any:
    """A FastAPI app serving ``engines`` (served name → loaded reranker; the first is the default).

    Models are warmed in the background after start-up; ``/ready`` turns true when they all are.
    """
    settings = settings or ServerSettings()
    metrics = ServerMetrics()
    service = RerankService(engines, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        import asyncio

        service.start()
        warm = asyncio.create_task(service.warm_up())
        try:
            yield
        finally:
            # uvicorn has stopped accepting and drained in-flight requests by now; let queued work finish.
            warm.cancel()
            await asyncio.to_thread(service.close)

    app = FastAPI(title="rerankd", version=_version(), lifespan=lifespan,
                  description="Reranking over the Cohere, Jina, TEI, vLLM, Voyage and Mixedbread APIs, "
                              "with dynamic batching.")
    app.state.service = service
    app.state.metrics = metrics
    app.state.settings = settings

    def error_response(request: Request, exc: BaseException) -> Response:
        ctx: RequestContext | None = request.scope.get("state", {}).get("ctx")
        request_id = ctx.id if ctx else "-"
        status, kind, tei_type = error_status(exc)
        if status >= 500:
            log.error("request %s failed: %r", request_id, exc, exc_info=exc)
        if ctx:
            ctx.error_kind = kind
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        body = error_body(kind, tei_type, public_message(exc, status, request_id), tei=bool(ctx and ctx.tei))
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RerankdError)
    async def on_rerankd_error(request: Request, exc: RerankdError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        ctx = request.scope.get("state", {}).get("ctx")
        if ctx is not None:
            ctx.tei = is_tei_body(exc.body)
        content_type = request.headers.get("content-type", "")
        if content_type and not _is_json(content_type):  # FastAPI left the body unparsed
            return error_response(request, UnsupportedMediaTypeError(
                f"the request body was sent as {content_type.split(';')[0].strip()!r}; send JSON with the header "
                "'Content-Type: application/json'"))
        return error_response(request, _validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(request, RouteNotFoundError(f"no route {request.url.path}; see /docs for the API"))
        if exc.status_code == 405:
            return error_response(request, MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}"))
        if exc.status_code == 400:  # FastAPI could not read the body; its cause says why
            return error_response(request, _unreadable_body(exc.__cause__))
        return error_response(request, RequestValidationFailed(str(exc.detail)))

    # -- rerank: Cohere v1/v2, Jina, vLLM, Infinity; TEI, Voyage, Mixedbread, text_pairs by their fields --

    async def rerank(request: Request, body: Annotated[RerankBody, Body()]) -> Response:
        ctx: RequestContext = request.state.ctx
        if isinstance(body, TextPairsRequest):  # one score per pair, in input order
            name, values, tokens = await scored_pairs(request, body)
            version = "2" if request.url.path.startswith("/v2") else "1"
            return JSONResponse(pairs_rerank_response(ctx.id, name, values, tokens, len(values), version))
        ctx.tei = isinstance(body, TeiRerankRequest)
        params = body.to_params()
        ctx.model, ctx.documents = params.model or service.default_model, len(params.documents)
        name, result = await unless_disconnected(request.receive, service.rerank(params, cache_policy(request)))
        ctx.model, ctx.tokens = name, result.total_tokens
        if ctx.tei:
            return JSONResponse(tei_response(result, params))
        if isinstance(body, (VoyageRerankRequest, MixedbreadRerankRequest)):
            return JSONResponse(body.answer(name, result, params))
        version = "2" if request.url.path.startswith("/v2") else "1"
        return JSONResponse(rerank_response(ctx.id, name, result, params, version))

    for path in RERANK_PATHS:
        app.add_api_route(path, rerank, methods=["POST"], tags=["rerank"], summary="Rerank documents against a query",
                          responses={200: {"model": Union[RerankResponse, TeiRerankResponse, VoyageRerankResponse,
                                                           MixedbreadRerankResponse]}, **_ERROR_RESPONSES,
                                     "4XX": {"model": TeiErrorResponse,
                                             "description": "TEI-shaped requests (they send texts) get TEI's error shape"}})

    @app.post(VOYAGE_PATH, tags=["rerank"], summary="Voyage rerank, whatever fields the body carries",
              responses={200: {"model": VoyageRerankResponse}, **_ERROR_RESPONSES})
    async def rerank_voyage(request: Request, body: VoyageRerankRequest) -> Response:
        return await rerank(request, body)

    async def scored_pairs(request: Request, body: Any) -> tuple[str, list[float], int]:
        ctx: RequestContext = request.state.ctx
        params = body.to_params()
        ctx.model, ctx.documents = params.model or service.default_model, len(params.pairs)
        name, values, tokens = await unless_disconnected(request.receive, service.score_pairs(params, cache_policy(request)))
        ctx.model, ctx.tokens = name, tokens
        return name, values, tokens

    @app.post("/score", tags=["rerank"], summary="vLLM score: text_1 against text_2, or text_pairs",
              responses={200: {"model": ScoreResponse}, **_ERROR_RESPONSES})
    async def score(request: Request, body: Annotated[ScoreBody, Body()]) -> Response:
        name, values, tokens = await scored_pairs(request, body)
        return JSONResponse(score_response(request.state.ctx.id, name, values, tokens, int(time.time())))

    # -- models, probes, metrics ----------------------------------------------------------------------

    @app.get("/v1/models", tags=["info"], response_model=ModelList)
    async def models() -> dict[str, Any]:
        return {"object": "list",
                "data": [{"id": name, "object": "model", "created": service.created, "owned_by": "rerankd"}
                         for name in service.engines]}

    @app.get("/health", tags=["probes"], summary="alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"], summary="models loaded and warmed")
    async def ready() -> Response:
        if service.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/info", tags=["info"])
    async def info() -> dict[str, Any]:
        limits = {k: getattr(settings, k) for k in ("max_documents", "max_body_bytes", "max_request_tokens",
                                                    "max_queue", "max_wait_ms")}
        return {"version": _version(), "ready": service.ready, "default_model": service.default_model,
                "models": service.describe(), "limits": limits, "media": service.media_limits(),
                "auth": settings.api_key is not None}

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics_route() -> Response:
        content, content_type = metrics.render()
        return Response(content, media_type=content_type)

    from rerankd.server.metrics import FeatureCacheCollector, MemoryCollector

    metrics.registry.register(MemoryCollector(service.pipelines))
    if service.cache is not None:
        from rerankd.cache.metrics import register_cache_metrics

        register_cache_metrics(service.cache, metrics.registry)
    metrics.registry.register(FeatureCacheCollector(service.engines))
    if service.drift:
        from rerankd.drift import DriftCollector

        metrics.registry.register(DriftCollector(service.drift))

    def cache_policy(request: Request) -> Any:
        """``Cache-Control: no-cache`` reads through the cache, ``no-store`` writes nothing."""
        if service.cache is None:
            return None
        from rerankd.cache import CachePolicy

        return CachePolicy.from_cache_control(request.headers.get("cache-control"))

    known_paths = {route.path for route in app.routes}
    app.add_middleware(RequestGuard, settings=settings, metrics=metrics, render_error=error_response,
                       known_paths=known_paths)
    return app


class RequestGuard:
    """Pure ASGI middleware (so disconnects still reach the handler): request id, API key, body limit,
    one JSON access-log line and the request metrics per HTTP request."""

    def __init__(self, app: Any, *, settings: ServerSettings, metrics: ServerMetrics, render_error: Any,
                 known_paths: set[str]) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.render_error = render_error
        self.known_paths = known_paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        ctx = RequestContext(id=_request_id(headers.get("x-request-id")),
                             route=path if path in self.known_paths else "other", started=time.perf_counter())
        scope.setdefault("state", {})["ctx"] = ctx
        status_box = {"status": 500, "started": False}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box["status"], status_box["started"] = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", ctx.id.encode("latin-1")))
            await send(message)

        async def reject(exc: BaseException) -> None:
            response = self.render_error(Request(scope), exc)
            await response(scope, receive, send_with_id)

        try:
            if not self._authorized(path, headers):
                await reject(UnauthorizedError(
                    "this server needs an API key: send the header 'Authorization: Bearer <key>' with the key "
                    "it was started with (--api-key)" if "authorization" not in headers
                    else "the API key in the Authorization header is not this server's key"))
                return
            body = await self._read_body(headers, receive)
            if isinstance(body, BaseException):
                await reject(body)
                return
            if body is None:  # the client left while sending its body
                status_box["status"] = 499
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        except Exception as exc:  # noqa: BLE001 - last line of defence: a 500 without internals, and a log line
            if status_box["started"]:
                log.exception("request %s failed after its response started", ctx.id)
            else:
                await reject(exc)  # logs it with the traceback
        finally:
            self._finish(ctx, scope, int(status_box["status"]))

    def _authorized(self, path: str, headers: dict[str, str]) -> bool:
        key = self.settings.api_key
        if key is None or path in OPEN_PATHS:
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), key.encode())

    async def _read_body(self, headers: dict[str, str], receive: Any) -> bytes | BaseException | None:
        """The whole body, or the error to answer when it is over --max-body-bytes (declared or sent)."""
        from rerankd.errors import InputTooLargeError

        limit = self.settings.max_body_bytes

        def too_large(size: str) -> InputTooLargeError:
            return InputTooLargeError(f"the request body is {size} but this server takes at most {limit} bytes "
                                      "(--max-body-bytes); send fewer or shorter documents per request")

        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_large(f"{int(declared)} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large(f"over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _finish(self, ctx: RequestContext, scope: dict[str, Any], status: int) -> None:
        seconds = time.perf_counter() - ctx.started
        self.metrics.answered(ctx.route, status, seconds, ctx.error_kind)
        if self.settings.log_requests and ctx.route not in {"/metrics", "/health", "/ready"}:
            access_log.info(json.dumps({
                "event": "request", "id": ctx.id, "method": scope.get("method"), "route": ctx.route,
                "model": ctx.model, "documents": ctx.documents, "tokens": ctx.tokens,
                "latency_ms": round(seconds * 1000, 2), "status": status, "error": ctx.error_kind,
            }))


def _replay(body: bytes, receive: Any) -> Any:
    """A receive channel that yields the already-read body once, then the client's own messages
    (so the handler still hears ``http.disconnect``)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _request_id(given: str | None) -> str:
    # A caller's own id is kept (tracing across services) when it is short and printable.
    if given and len(given) <= 128 and given.isprintable():
        return given
    return str(uuid.uuid4())


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _unreadable_body(cause: BaseException | None) -> Exception:
    """The 400 for a body that did not decode: not UTF-8, or nested deeper than the JSON parser goes."""
    if isinstance(cause, UnicodeDecodeError):
        return MalformedBodyError(f"the request body is not UTF-8 (byte {cause.start} cannot be decoded); "
                                  "send JSON encoded as UTF-8")
    if isinstance(cause, RecursionError):
        return MalformedBodyError("the request body nests arrays or objects too deeply to parse; send documents "
                                  "as strings or flat objects")
    return MalformedBodyError("the request body could not be read as JSON; send a JSON object")


def _validation_error(exc: Any) -> Exception:
    """One readable message from pydantic's errors: malformed JSON is 400, the rest 422."""
    errors = exc.errors()
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return MalformedBodyError("the request body is empty; send a JSON object")
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return MalformedBodyError(f"the request body is not valid JSON ({detail}); send a JSON object")
    parts = []
    for e in errors[:5]:
        loc = [str(p) for p in e.get("loc", ()) if p != "body" and p not in DIALECT_TAGS]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return RequestValidationFailed("invalid request: " + "; ".join(parts) + more)


def _version() -> str:
    from rerankd import __version__

    return __version__
