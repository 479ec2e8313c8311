"""The server's limits and batching knobs, as one frozen value (the CLI fills it; nothing reads env here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rerankd.cache.config import CacheSettings
from rerankd.drift.settings import DriftSettings
from rerankd.errors import InputError
from rerankd.media.fetch import MediaPolicy

LONG_DOCUMENTS = ("truncate", "chunk")


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens, what it accepts, and how long it waits to merge requests into batches.

    Attributes:
        host: interface to bind (loopback by default: exposing a server is a deliberate choice).
        port: TCP port.
        api_key: when set, every API route needs ``Authorization: Bearer <api_key>``.
        max_documents: documents per request; more is answered 413.
        max_body_bytes: request body size; more is answered 413 (checked on Content-Length and while reading).
        max_request_tokens: tokens of one request after tokenization; more is answered 413.
        max_queue: sequences waiting for inference per model; a request that would go over is answered 429.
        max_wait_ms: how long the inference worker waits for more requests before running a part-full batch.
        tokenize_workers: threads that tokenize requests off the event loop.
        log_requests: one JSON log line per request.
        max_pairs: (query, document window) pairs per request, every chunk counted; more is answered 413.
        long_documents: ``truncate`` (keep the start) or ``chunk`` (score windows, keep the best) by
            default; a request may ask for chunking itself (Cohere's ``max_chunks_per_doc``).
        cache: the result cache (off by default).
        drift: the score-drift monitor (on by default).
        strict_model_names: with one model served, a request naming another model is a 404 (by default
            any name is answered by the one model, as TEI does; with several models it is always a 404).
        media: where images and videos may come from and how big they may be (vision-language models).
            The default is the strict policy: inline media only (data: URIs, base64), no remote URLs
            (``--allow-media-domains``), no local paths (``--allowed-local-media-path``), private
            addresses always refused, caps on images, frames, fps, seconds, bytes and pixels.

    Example:
        >>> ServerSettings(max_documents=100).max_documents
        100
    """

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_documents: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    max_request_tokens: int = 1_000_000
    max_queue: int = 16_384
    max_wait_ms: float = 2.0
    tokenize_workers: int = 2
    log_requests: bool = True
    max_pairs: int = 10_000
    long_documents: str = "truncate"
    cache: CacheSettings = field(default_factory=CacheSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    strict_model_names: bool = False
    media: MediaPolicy = field(default_factory=MediaPolicy)

    def __post_init__(self) -> None:
        if self.long_documents not in LONG_DOCUMENTS:
            raise InputError(f"long_documents must be one of {', '.join(LONG_DOCUMENTS)}, got {self.long_documents!r}")
        for name in ("max_documents", "max_body_bytes", "max_request_tokens", "max_queue", "tokenize_workers", "max_pairs"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise InputError(f"max_wait_ms must be 0 or more, got {self.max_wait_ms}")
        if not 0 <= self.port < 65536:
            raise InputError(f"port must be in 0..65535, got {self.port}")


def media_limits(policy: Any) -> dict[str, Any]:
    """A media policy as JSON: what may be fetched and every cap (``/info``, ``rerankd info``)."""
    return {
        "remote_domains": sorted(policy.allow_domains), "local_root": str(policy.allowed_local_root or "") or None,
        "trusted_networks": list(policy.trusted_networks), "max_images_per_request": policy.max_images_per_request,
        "max_frames": policy.max_frames, "max_fps": policy.max_fps, "max_video_seconds": policy.max_video_seconds,
        "max_image_bytes": policy.max_bytes, "max_video_bytes": policy.max_video_bytes,
        "max_pixels": policy.max_pixels, "image_timeout_s": policy.image_timeout_s,
        "video_timeout_s": policy.video_timeout_s, "max_redirects": policy.max_redirects,
    }
