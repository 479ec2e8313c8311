"""Serving logic between the routes and the pipelines: resolve the model, run each request through its
model's :class:`~rerankd.pipeline.Pipeline` (validation and tokenization off the event loop, batches
from the cross-request scheduler), and shape each dialect's answer from the ranked result."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

from rerankd.engine import Reranker
from rerankd.errors import InputError, ModelNotFoundError
from rerankd.pipeline import Pipeline, Request, RequestLimits, RequestScores
from rerankd.server.errors import ClientDisconnected
from rerankd.server.metrics import ServerMetrics
from rerankd.server.protocol import RerankParams, ScoreParams
from rerankd.server.scheduler import BatchScheduler
from rerankd.server.settings import ServerSettings
from rerankd.types import RerankResult

log = logging.getLogger("rerankd.server")
T = TypeVar("T")

WARMUP_QUERY = "warm up"
WARMUP_DOCUMENTS = ["rerankd warms each model with one small batch before it reports ready."]


class RerankService:
    """The served models' pipelines (under the server's limits), their schedulers and the tokenizer pool.

    Example:
        >>> service = RerankService({"m": reranker}, ServerSettings(), ServerMetrics())    # doctest: +SKIP
        >>> name, result = await service.rerank(params)                                    # doctest: +SKIP
    """

    def __init__(self, engines: Mapping[str, Reranker], settings: ServerSettings, metrics: ServerMetrics) -> None:
        if not engines:
            raise InputError("serve at least one model")
        self.engines = dict(engines)
        self.default_model = next(iter(self.engines))
        self.settings = settings
        self.metrics = metrics
        self.ready = False
        self.created = int(time.time())
        from rerankd.cache import build_cache
        from rerankd.chunking import ChunkSettings
        from rerankd.drift import monitors_for

        limits = RequestLimits(max_documents=settings.max_documents, max_request_tokens=settings.max_request_tokens,
                               max_pairs=settings.max_pairs)
        fingerprints = {name: engine.fingerprint() for name, engine in self.engines.items()}
        #: One result cache for every served model (keys hold each model's fingerprint); None when off.
        self.cache = build_cache(settings.cache)
        for warning in getattr(self.cache, "warnings", ()):
            log.warning("result cache: %s", warning)
        #: Score-drift monitors per served model (empty when --no-drift).
        self.drift = monitors_for(settings.drift, {name: (fingerprints[name], engine.family.kind)
                                                   for name, engine in self.engines.items()})
        chunking = ChunkSettings() if settings.long_documents == "chunk" else None
        from rerankd.media.settings import MediaSettings

        # The server's strict media policy replaces the Python API's permissive one for every model;
        # the default sampling (1 fps, 64 frames) is kept within its caps (--max-video-fps/-frames).
        defaults = MediaSettings()
        media = MediaSettings(policy=settings.media, fps=min(defaults.fps, settings.media.max_fps),
                              max_frames=max(2, min(defaults.max_frames, settings.media.max_frames)))
        self.pipelines: dict[str, Pipeline] = {
            name: engine.pipeline.with_limits(limits, observers=[self.drift[name]] if name in self.drift else [],
                                              cache=self.cache, fingerprint=fingerprints[name], chunking=chunking,
                                              media=media)
            for name, engine in self.engines.items()
        }
        self.schedulers = {
            name: BatchScheduler(pipeline, name=name, max_wait_s=settings.max_wait_ms / 1000.0,
                                 max_queue=settings.max_queue, observer=metrics)
            for name, pipeline in self.pipelines.items()
        }
        self._stand_ins: set[str] = set()  # names answered by the one served model, logged once each
        self._pool = ThreadPoolExecutor(settings.tokenize_workers, thread_name_prefix="rerankd-tokenize")

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.start()

    async def warm_up(self) -> None:
        """One small batch through each model, then ``ready``; a model that fails leaves it false."""
        loop = asyncio.get_running_loop()
        try:
            for name, pipeline in self.pipelines.items():
                started = time.perf_counter()
                await loop.run_in_executor(self._pool, _warm, pipeline)
                log.info("model %s warmed in %.2fs", name, time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - logged; /ready stays false so no traffic is routed here
            log.exception("warm-up failed; /ready stays false")
            return
        self.ready = True
        self.metrics.ready.set(1)

    def close(self) -> None:
        """Let queued work finish, then stop the workers (called after the HTTP server drained)."""
        self.ready = False
        self.metrics.ready.set(0)
        for scheduler in self.schedulers.values():
            scheduler.close()
        self._pool.shutdown(wait=True)
        if self.cache is not None:
            self.cache.close()

    # -- scoring -------------------------------------------------------------------------------------

    def resolve(self, model: str | None) -> str:
        """The served name a request's ``model`` field picks (the first served model when omitted).

        With one model served, any name picks it (TEI's rule: clients send their own defaults, such as
        LangChain's ``rerank-english-v2.0``, or whatever their user typed), unless
        ``strict_model_names``; with several, an unknown name is a 404 that lists the served ones.
        """
        if model is None or model == "":
            return self.default_model
        if model in self.engines:
            return model
        if len(self.engines) == 1 and not self.settings.strict_model_names:
            if len(self._stand_ins) < 64 and model not in self._stand_ins:  # once per name, bounded
                self._stand_ins.add(model)
                log.info("requests for model %r are answered by %r, the one model served "
                         "(--strict-model-names refuses them instead)", model, self.default_model)
            return self.default_model
        served = ", ".join(repr(name) for name in self.engines)
        strict = " (--strict-model-names is on)" if len(self.engines) == 1 else ""
        raise ModelNotFoundError(f"model {model!r} is not served here; served models: {served}{strict}")

    async def score(
        self,
        name: str,
        query: Any,
        documents: Sequence[Any],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        truncate: bool = True,
        chunking: Any = None,
        cache_policy: Any = None,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> tuple[Request, RequestScores]:
        """One request through its model's pipeline: validated, looked up in the result cache and tokenized
        in the pool (a Redis lookup may block up to its timeout), inferred in shared batches, finished."""
        pipeline = self.pipelines[name]
        started = time.perf_counter()
        loop = asyncio.get_running_loop()

        def plan() -> Any:
            media = pipeline.media.with_sampling(fps, max_frames) if fps is not None or max_frames is not None else None
            request = pipeline.request(query, documents, instruction=instruction, max_doc_tokens=max_doc_tokens,
                                       truncate=truncate, chunking=chunking, media=media)
            return pipeline.plan(request, cache_policy=cache_policy)

        planned = await loop.run_in_executor(self._pool, plan)
        self.metrics.tokenized(name, time.perf_counter() - started)
        try:
            outputs = await self.schedulers[name].submit(planned.sequences)
            # Waiting on pairs another request is scoring blocks: do it off the event loop.
            scores = (await loop.run_in_executor(self._pool, pipeline.finish, planned, outputs) if planned.waits
                      else pipeline.finish(planned, outputs))
        except BaseException:
            pipeline.abandon(planned)
            raise
        self.metrics.scored(name, len(planned.request.documents), planned.tokens)
        return planned.request, scores

    async def rerank(self, params: RerankParams, cache_policy: Any = None) -> tuple[str, RerankResult]:
        name = self.resolve(params.model)
        request, scores = await self.score(name, params.query, params.documents, instruction=params.instruction,
                                           max_doc_tokens=params.max_doc_tokens, truncate=params.truncate,
                                           chunking=params.chunking, cache_policy=cache_policy,
                                           fps=params.fps, max_frames=params.max_frames)
        return name, self.pipelines[name].rank(request, scores, top_n=params.top_n)

    async def score_pairs(self, params: ScoreParams, cache_policy: Any = None) -> tuple[str, list[float], int]:
        """vLLM ``/score``: one score per pair in input order, pairs grouped by query to share tokenization."""
        name = self.resolve(params.model)
        self.pipelines[name].check_document_count(len(params.pairs))
        groups: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(params.pairs):
            # a multimodal query (a dict) is grouped by its JSON: equal queries share one request
            key = query if isinstance(query, str) else json.dumps(query, sort_keys=True)
            groups.setdefault(key, []).append(i)
        results = await asyncio.gather(*(
            self.score(name, params.pairs[rows[0]][0], [params.pairs[i][1] for i in rows], instruction=params.instruction,
                       max_doc_tokens=params.max_doc_tokens, cache_policy=cache_policy)
            for rows in groups.values()
        ))
        values = [0.0] * len(params.pairs)
        for rows, (_, scores) in zip(groups.values(), results):
            chosen = scores.raw if params.raw_scores else scores.normalized
            for row, value in zip(rows, chosen):
                values[row] = float(value)
        return name, values, sum(s.total_tokens for _, s in results)

    def describe(self) -> dict[str, Any]:
        return {name: engine.describe() for name, engine in self.engines.items()}

    def media_limits(self) -> dict[str, Any]:
        """The server's media policy, for ``/info`` (remote domains, the local root, every cap)."""
        from rerankd.server.settings import media_limits

        return media_limits(self.settings.media)



# -- the answer of each dialect ------------------------------------------------------------------------


def rerank_response(request_id: str, name: str, result: RerankResult, params: RerankParams, api_version: str) -> dict[str, Any]:
    """Cohere / Jina / vLLM body; ``document`` is left out, not null, unless it was asked for."""
    return {
        "id": request_id,
        "model": name,
        "results": _result_items(result, params, "relevance_score", "document", params.returned),
        "usage": {"prompt_tokens": result.total_tokens, "total_tokens": result.total_tokens},
        "meta": {"api_version": {"version": api_version},
                 "billed_units": {"search_units": max(1, math.ceil(len(params.documents) / 100))}},
    }


def tei_response(result: RerankResult, params: RerankParams) -> list[dict[str, Any]]:
    """TEI's bare array, best first."""
    return _result_items(result, params, "score", "text", params.documents)


def _result_items(result: RerankResult, params: RerankParams, score_key: str, document_key: str,
                  documents: Sequence[Any]) -> list[dict[str, Any]]:
    items = []
    for r in result.results:
        item: dict[str, Any] = {"index": r.index, score_key: r.raw_score if params.raw_scores else r.score}
        if params.return_documents:  # only then: a null document breaks strict clients
            item[document_key] = documents[r.index]
        if params.chunking:  # only for requests that asked for chunks: how many, and which one won
            item["chunks"], item["best_chunk"] = r.chunks, r.best_chunk
        items.append(item)
    return items


def score_response(request_id: str, name: str, values: list[float], tokens: int, created: int) -> dict[str, Any]:
    return {
        "id": f"score-{request_id}", "object": "list", "created": created, "model": name,
        "data": [{"index": i, "object": "score", "score": v} for i, v in enumerate(values)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# -- helpers ----------------------------------------------------------------------------------------------


async def unless_disconnected(receive: Callable[[], Awaitable[dict[str, Any]]], work: Awaitable[T]) -> T:
    """Run ``work`` but give up (cancelling it, so its queued sequences are dropped) if the client leaves.

    ``receive`` is the ASGI receive channel after the body was read: its next message is
    ``http.disconnect`` when the client closes the connection.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientDisconnected("the client closed the connection before the answer was ready")


async def _wait_for_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _warm(pipeline: Pipeline) -> None:
    pipeline.forward(pipeline.prepare(WARMUP_QUERY, WARMUP_DOCUMENTS).sequences)
