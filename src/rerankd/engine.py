"""Reranker: the Python API over one model's :class:`~rerankd.pipeline.Pipeline`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from rerankd.backends.base import Backend
from rerankd.batching import BatchLimits
from rerankd.chunking import ChunkSettings
from rerankd.documents import DocumentLike
from rerankd.errors import InputError
from rerankd.families import Family
from rerankd.pipeline import DEFAULT_MAX_DOCUMENTS, Pipeline, RequestLimits, RequestScores
from rerankd.types import RerankResult


class Reranker:
    """Scores (query, document) pairs with one model, exactly as the model's reference does.

    A query or document is a ``str``, a :class:`rerankd.Document`, or the dict form
    ``{"text": ..., "image": ..., "video": ...}``; a list of documents is one document per element.

    Example:
        >>> from rerankd import Reranker
        >>> reranker = Reranker.from_pretrained()          # the bundled all-MiniLM-L6-v2, offline
        >>> result = reranker.rank("capital of France", ["Paris is the capital of France.", "Bananas are yellow."])
        >>> result.results[0].index
        0
    """

    def __init__(
        self,
        family: Family,
        backend: Backend,
        *,
        name: str = "",
        batch_limits: BatchLimits | None = None,
        limits: RequestLimits | None = None,
        cache: Any = None,
        media: Any = None,
    ) -> None:
        self.pipeline = Pipeline(family, backend, name=name, batch_limits=batch_limits, limits=limits, media=media)
        self._fingerprint: dict[str, str] | None = None
        #: What loading on a GPU chose (memory tier, plan, warm-up); ``None`` when built directly.
        self.gpu: Any = None
        #: Why ``max_memory`` chose this backend and dtype (None without a budget).
        self.memory_choice: str | None = None
        if cache is not None:
            self.pipeline.cache, self.pipeline.fingerprint = cache, self.fingerprint()

    @property
    def family(self) -> Family:
        return self.pipeline.family

    @property
    def backend(self) -> Backend:
        return self.pipeline.backend

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def batch_limits(self) -> BatchLimits:
        return self.pipeline.batch_limits

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        backend: str = "torch",
        batch_tokens: int | None = None,
        max_batch_rows: int | None = None,
        max_documents: int = DEFAULT_MAX_DOCUMENTS,
        cache: Any = None,
        quantization: str | None = None,
        memory_tier: str | None = None,
        gpu_memory_fraction: float | None = None,
        packed: bool | None = None,
        media: Any = None,
        feature_cache_bytes: int | None = None,
        max_memory: int | str | None = None,
        adapter: str | os.PathLike[str] | None = None,
    ) -> "Reranker":
        """Load a reranker from a local directory, a hub id, or (``model=None``) the bundled default.

        Args:
            model: directory (``str`` or ``pathlib.Path``) or hub id; ``None`` for the bundled all-MiniLM-L6-v2.
            revision: hub revision (branch, tag or commit).
            device: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
            dtype: ``auto`` (default: bf16 where the hardware is fast at it, fp16 on MPS, else fp32),
                ``fp32``, ``bf16`` or ``fp16``.
            max_length: tokens per pair; documents are truncated to fit, the query is kept. Default: the
                model's own (:func:`rerankd.families.detect.default_max_length`: a saved student's length).
            backend: ``torch``, or another registered backend name.
            batch_tokens: tokens per forward pass (padded tokens for padded backends).
            max_documents: documents per request.
            cache: a :class:`rerankd.cache.CacheSettings` (or a built ``ResultCache``) to answer repeated
                (query, document) pairs from, keyed by this model's fingerprint; off by default.
            quantization: CUDA weight quantization: ``bnb-4bit``, ``bnb-8bit``, ``int8-weight`` or ``fp8``
                (:mod:`rerankd.gpu_quantization`; the score head stays unquantized).
            memory_tier: ``auto``, ``24gb``, ``16gb`` or ``12gb``: pick precision, quantization and the
                batch budget from the model's size and the GPU's memory (:func:`rerankd.memory_plan.choose_tier`).
            gpu_memory_fraction: the share of the GPU's memory this model may plan for (0.9).
            packed: unpadded batches; ``None`` packs on CPU only, ``True`` also on CUDA (not yet
                verified on a GPU: opt-in).
            media: a :class:`rerankd.media.settings.MediaSettings` (vision-language models): where images
                and videos may come from and how videos are sampled; permissive by default.
            feature_cache_bytes: size of the vision tower's per-image feature cache (vision-language
                models; 512 MiB by default, 0 turns it off).
            max_memory: a memory budget (bytes, or ``"2.5GB"``): the default precision and backend are
                chosen so that the estimated peak fits it (see :mod:`rerankd.memory`).
            adapter: a LoRA adapter folder (``rerankd train --lora``) merged into ``model`` at load
                (see :mod:`rerankd.adapters`); ``model`` may also be the adapter folder itself.
        """
        from rerankd.adapters import adapter_base, is_adapter, merged_model_dir
        from rerankd.backends.registry import create_backend
        from rerankd.device import default_batch_tokens
        from rerankd.families import load_family
        from rerankd.hub import resolve_model

        model_dir, name = resolve_model(os.fspath(model) if model is not None else None, revision)
        from rerankd.gpu_setup import after_load, before_load

        if adapter is None and is_adapter(model_dir):
            adapter, (model_dir, name) = model_dir, resolve_model(adapter_base(model_dir), revision)
        if adapter is not None:
            model_dir, name = merged_model_dir(model_dir, Path(adapter)), f"{name}+{Path(adapter).name}"
        family = load_family(model_dir, max_length)
        memory_choice = None
        if max_memory is not None:
            backend, dtype, memory_choice = _fit_memory(model_dir, backend, dtype, device, max_memory)
        gpu = before_load(family, backend, device, dtype, quantization=quantization, memory_tier=memory_tier,
                          fraction=gpu_memory_fraction, packed=packed)
        options: dict[str, Any] = {"device": gpu.device, "dtype": gpu.dtype}
        if gpu.quantization is not None:
            options["quantization"] = gpu.quantization
        if packed is not None:
            options["packed"] = packed
        # Only a family that reads media has a vision tower to cache (text models ignore the size).
        if feature_cache_bytes is not None and family.modalities - {"text"}:
            options["feature_cache_bytes"] = feature_cache_bytes
        engine_backend = create_backend(backend, family, **options)
        device_name = str(getattr(engine_backend, "device", "cpu"))
        limits = BatchLimits(batch_tokens or default_batch_tokens(device_name), max_batch_rows or BatchLimits().max_rows)
        if cache is not None and not hasattr(cache, "lookup"):
            from rerankd.cache import build_cache

            cache = build_cache(cache)
        reranker = cls(family, engine_backend, name=name, batch_limits=limits,
                       limits=RequestLimits(max_documents=max_documents), cache=cache, media=media)
        after_load(gpu, reranker.pipeline, batch_tokens)
        reranker.gpu = gpu
        reranker.memory_choice = memory_choice
        return reranker

    # -- the public calls ---------------------------------------------------------------------------

    def score(
        self,
        query: DocumentLike,
        documents: Sequence[DocumentLike],
        *,
        instruction: str | None = None,
        raw: bool = False,
        max_doc_tokens: int | None = None,
        chunking: ChunkSettings | bool | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> list[float]:
        """Scores of the documents, in input order (normalized unless ``raw``).

        ``chunking``: score documents longer than the model's input as windows (``True`` for the
        defaults, or :class:`rerankd.chunking.ChunkSettings`) instead of truncating them.
        ``fps`` / ``max_frames``: how video files are sampled (vision-language models; 1 and 64 by default).
        """
        scores = self.score_many([query], [documents], instruction=instruction, max_doc_tokens=max_doc_tokens,
                                 chunking=chunking, fps=fps, max_frames=max_frames)[0]
        return [float(x) for x in (scores.raw if raw else scores.normalized)]

    def score_many(
        self,
        queries: Sequence[DocumentLike],
        documents: Sequence[Sequence[DocumentLike]],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        progress: bool = False,
        chunking: ChunkSettings | bool | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> list[RequestScores]:
        """Score several (query, documents) requests at once; their pairs share batches."""
        requests = self._requests(queries, documents, instruction, max_doc_tokens, chunking, fps, max_frames)
        return self.pipeline.score_many(requests, progress=progress)

    def rank(
        self,
        query: DocumentLike,
        documents: Sequence[DocumentLike],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        progress: bool = False,
        chunking: ChunkSettings | bool | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> RerankResult:
        """The documents ordered best first, cut to ``top_n``."""
        return self.rank_many(
            [query], [documents], top_n=top_n, return_documents=return_documents,
            instruction=instruction, max_doc_tokens=max_doc_tokens, progress=progress, chunking=chunking,
            fps=fps, max_frames=max_frames,
        )[0]

    def rank_many(
        self,
        queries: Sequence[DocumentLike],
        documents: Sequence[Sequence[DocumentLike]],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        progress: bool = False,
        chunking: ChunkSettings | bool | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> list[RerankResult]:
        """:meth:`rank` for many queries, their pairs batched together."""
        if top_n is not None and top_n < 0:
            raise InputError(f"top_n must be 0 or more, got {top_n}")
        requests = self._requests(queries, documents, instruction, max_doc_tokens, chunking, fps, max_frames)
        all_scores = self.pipeline.score_many(requests, progress=progress)
        return [self.pipeline.rank(r, s, top_n=top_n, return_documents=return_documents)
                for r, s in zip(requests, all_scores)]

    def pin_threads(self) -> "Reranker":
        """Run every batch on the same thread count from now on (see ``backends/threads.py``).

        On CPU the torch backends choose threads per batch by measurement, which can move fp32
        scores in their last bits; batch jobs whose output must be reproducible byte for byte call
        this (``rerankd eval``, ``score-run``, teacher scoring do). Backends without a choice ignore it.
        """
        pin = getattr(self.backend, "pin_threads", None)  # optional: ONNX sessions have fixed threads
        if pin is not None:
            pin()
        return self

    def fingerprint(self) -> dict[str, str]:
        """Everything that decides this reranker's scores (see :mod:`rerankd.fingerprint`)."""
        if self._fingerprint is None:
            from rerankd.fingerprint import model_fingerprint

            self._fingerprint = model_fingerprint(self.family, self.backend, self.name)
        return dict(self._fingerprint)

    def describe(self) -> dict[str, Any]:
        from rerankd.memory import peak_rss_bytes

        out = {"model": self.name, **self.family.describe(), **self.backend.describe(),
               "batch_tokens": self.batch_limits.max_tokens, "max_documents": self.pipeline.limits.max_documents,
               "peak_rss_mib": round(peak_rss_bytes() / 2**20), **(self.gpu.describe() if self.gpu is not None else {})}
        if self.memory_choice:
            out["memory_choice"] = self.memory_choice
        return out

    def _requests(self, queries: Sequence[Any], documents: Sequence[Any], instruction: str | None,
                  max_doc_tokens: int | None, chunking: ChunkSettings | bool | None,
                  fps: float | None = None, max_frames: int | None = None) -> list[Any]:
        if isinstance(queries, str) or len(queries) != len(documents):
            raise InputError(f"{len(queries)} queries but {len(documents)} document lists; send one list per query")
        media = self.pipeline.media.with_sampling(fps, max_frames) if fps is not None or max_frames is not None else None
        return [self.pipeline.request(q, docs, instruction=instruction, max_doc_tokens=max_doc_tokens, chunking=chunking,
                                      media=media)
                for q, docs in zip(queries, documents)]


def _fit_memory(model_dir: Any, backend: str, dtype: str | None, device: str | None,
                max_memory: int | str) -> tuple[str, str | None, str | None]:
    """(backend, dtype, why) within a memory budget; the checkpoint's size is read from its headers."""
    from pathlib import Path

    from rerankd import memory
    from rerankd.device import default_dtype, normalize_dtype, resolve_device

    budget = memory.parse_size(max_memory)
    weights = memory.read_weights(Path(model_dir))
    if weights is None:
        return backend, dtype, "--max-memory not applied: the checkpoint is not safetensors, its size is unknown"
    resolved = resolve_device(device)
    options = memory.candidates(backend, normalize_dtype(dtype), resolved, default_dtype(resolved))
    chosen, why = memory.fit_to_budget(weights, options, budget)
    return chosen.backend, None if chosen.dtype == "int8" else chosen.dtype, why
