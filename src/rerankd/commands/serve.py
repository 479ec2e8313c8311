"""``rerankd serve``: serve rerankers over HTTP (Cohere, Jina, TEI and vLLM APIs) with dynamic batching.

Every option can also be set as ``RERANKD_<OPTION>``, e.g. ``RERANKD_API_KEY=...`` or
``RERANKD_MODEL=bge=/models/bge,qwen=/models/qwen3`` (comma-separated for repeated options).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from rerankd.commands.options import add_model_options
from rerankd.errors import InputError


def register(sub: Any) -> None:
    defaults = _defaults()
    parser = sub.add_parser("serve", help="serve rerankers over HTTP", description=__doc__,
                            conflict_handler="resolve", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(parser)
    # Replaces the single --model of add_model_options: a server may serve several models.
    parser.add_argument("--model", "-m", action="append", default=None, metavar="[NAME=]MODEL",
                        help="model directory or hub id, optionally with the name clients select it by; repeat to "
                             "serve several (the first is the default). Default: the bundled all-MiniLM-L6-v2")
    parser.add_argument("--host", default=defaults.host, help="interface to bind (0.0.0.0 to expose on the network)")
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>' on the API routes")
    parser.add_argument("--max-documents", type=int, default=defaults.max_documents, help="documents per request")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes, help="request body size")
    parser.add_argument("--max-request-tokens", type=int, default=defaults.max_request_tokens,
                        help="tokens per request after tokenization")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="sequences waiting for inference per model before requests get 429")
    parser.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                        help="how long to wait for more requests to merge into a part-full batch")
    parser.add_argument("--tokenize-workers", type=int, default=defaults.tokenize_workers,
                        help="threads tokenizing requests off the event loop")
    parser.add_argument("--max-pairs", type=int, default=defaults.max_pairs,
                        help="(query, document window) pairs per request, every chunk counted")
    parser.add_argument("--long-documents", choices=["truncate", "chunk"], default=defaults.long_documents,
                        help="documents longer than the model's input: keep their start, or score them as windows "
                             "(the best counts); a request may ask for chunks itself (max_chunks_per_doc)")
    cache = parser.add_argument_group("result cache (pairs already scored are answered without inference)")
    cache.add_argument("--cache", choices=["off", "memory", "redis"], default="off",
                       help="memory: an LRU in this process; redis: that LRU in front of a shared Redis")
    cache.add_argument("--cache-size", type=int, default=defaults.cache.size, help="entries in the in-process LRU")
    cache.add_argument("--redis-url", default=None, help="redis://host:port/db for --cache redis")
    cache.add_argument("--cache-ttl", type=int, default=defaults.cache.ttl_s, metavar="SECONDS",
                       help="how long Redis keeps an entry")
    cache.add_argument("--redis-timeout-ms", type=float, default=defaults.cache.timeout_ms,
                       help="a Redis read slower than this is a miss, never an error")
    cache.add_argument("--cache-namespace", default=defaults.cache.namespace,
                       help="key prefix in Redis (rerankd:<namespace>:), to share or separate deployments")
    add_media_arguments(parser, defaults.media)
    from rerankd.drift.options import add_drift_arguments

    add_drift_arguments(parser)
    parser.add_argument("--strict-model-names", action="store_true",
                        help="with one model served, answer a request naming another model with 404 (by default "
                             "any name is served by it, so clients' own default names work)")
    ray = parser.add_argument_group("Ray Serve (rerankd[ray]): the same app as replicas on a Ray cluster")
    ray.add_argument("--ray", action="store_true", help="serve as a Ray Serve deployment (a local Ray, or RAY_ADDRESS)")
    ray.add_argument("--replicas", type=int, default=1, help="replicas to run (each loads every model)")
    ray.add_argument("--autoscale", default=None, metavar="MIN,MAX",
                     help="let Serve scale between MIN and MAX replicas instead of --replicas")
    ray.add_argument("--target-ongoing-requests", type=float, default=8.0,
                     help="with --autoscale: requests in flight per replica that Serve aims for")
    ray.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs per replica (= its torch threads)")
    ray.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs per replica")
    ray.add_argument("--ray-address", default=None, help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--no-access-log", action="store_true", help="no JSON log line per request")
    parser.set_defaults(run=run)


def add_media_arguments(parser: argparse.ArgumentParser, policy: Any) -> None:
    """The media flags: the server's defaults are safe (inline media only; every cap on)."""
    from rerankd.backends.feature_cache import DEFAULT_FEATURE_CACHE_BYTES

    media = parser.add_argument_group("media (vision-language models; the defaults accept inline data: URIs only)")
    media.add_argument("--allow-media-domains", default="", metavar="DOMAIN[,DOMAIN...]",
                       help="hosts image/video URLs may be fetched from (a name allows its subdomains; '*' any host); "
                            "private, loopback and link-local addresses are refused whatever the name. Default: "
                            "remote URLs off")
    media.add_argument("--allowed-local-media-path", default=None, metavar="DIR",
                       help="directory local media paths may name (compared after resolving symlinks). Default: off")
    media.add_argument("--trusted-media-networks", default="", metavar="CIDR[,CIDR...]",
                       help="address blocks exempt from the public-address rule (an internal media host you vouch "
                            "for); its domain must still be allowed")
    media.add_argument("--max-images-per-request", type=int, default=policy.max_images_per_request,
                       help="images in one request, query and documents together")
    media.add_argument("--max-video-frames", type=int, default=policy.max_frames,
                       help="frames a video may be sampled to (and frames a frame-list video may have)")
    media.add_argument("--max-video-fps", type=float, default=policy.max_fps, help="highest video sampling rate a request may ask")
    media.add_argument("--max-video-seconds", type=float, default=policy.max_video_seconds, help="longest video accepted")
    media.add_argument("--max-image-bytes", type=int, default=policy.max_bytes, help="bytes of one image, however sent")
    media.add_argument("--max-video-bytes", type=int, default=policy.max_video_bytes, help="bytes of one video file")
    media.add_argument("--max-image-pixels", type=int, default=policy.max_pixels,
                       help="width x height of an image or frame, checked before decoding (decompression bombs)")
    media.add_argument("--image-timeout", type=float, default=policy.image_timeout_s, metavar="SECONDS",
                       help="whole fetch of one image URL, redirects included")
    media.add_argument("--video-timeout", type=float, default=policy.video_timeout_s, metavar="SECONDS",
                       help="whole fetch of one video URL")
    media.add_argument("--vision-cache-bytes", type=int, default=DEFAULT_FEATURE_CACHE_BYTES,
                       help="image-feature cache: the vision tower's output per image, reused across queries (0: off)")


def media_policy_from(args: argparse.Namespace) -> Any:
    """The server's :class:`~rerankd.media.MediaPolicy` from the media flags (private addresses never allowed)."""
    import re

    from rerankd.media.fetch import MediaPolicy

    networks = tuple(n for n in re.split(r"[,\s]+", args.trusted_media_networks or "") if n)
    root = args.allowed_local_media_path
    if root is not None and not os.path.isdir(root):
        raise InputError(f"--allowed-local-media-path {root!r} is not a directory")
    return MediaPolicy(
        allow_domains=args.allow_media_domains or frozenset(), allowed_local_root=root, trusted_networks=networks,
        image_timeout_s=args.image_timeout, video_timeout_s=args.video_timeout, max_bytes=args.max_image_bytes,
        max_video_bytes=args.max_video_bytes, max_pixels=args.max_image_pixels,
        max_images_per_request=args.max_images_per_request, max_frames=args.max_video_frames, max_fps=args.max_video_fps,
        max_video_seconds=args.max_video_seconds,
    )


def parse_model_spec(spec: str) -> tuple[str | None, str]:
    """``NAME=MODEL`` → (NAME, MODEL); ``MODEL`` → (None, MODEL): the model's own name is served.

    Example:
        >>> parse_model_spec("bge=/models/bge-reranker-v2-m3")
        ('bge', '/models/bge-reranker-v2-m3')
        >>> parse_model_spec("BAAI/bge-reranker-v2-m3")
        (None, 'BAAI/bge-reranker-v2-m3')
    """
    name, sep, model = spec.partition("=")
    if sep and name and "/" not in name:
        if not model:
            raise InputError(f"--model {spec!r} names no model after '='; use NAME=MODEL")
        return name, model
    return None, spec


def settings_from(args: argparse.Namespace) -> Any:
    from rerankd.cache import CacheSettings
    from rerankd.drift.options import drift_settings_from
    from rerankd.server.settings import ServerSettings

    try:
        cache = CacheSettings(mode=args.cache, size=args.cache_size, redis_url=args.redis_url, ttl_s=args.cache_ttl,
                              timeout_ms=args.redis_timeout_ms, namespace=args.cache_namespace)
        return ServerSettings(
            host=args.host, port=args.port, api_key=args.api_key or None, max_documents=args.max_documents,
            max_body_bytes=args.max_body_bytes, max_request_tokens=args.max_request_tokens, max_queue=args.max_queue,
            max_wait_ms=args.max_wait_ms, tokenize_workers=args.tokenize_workers, log_requests=not args.no_access_log,
            max_pairs=args.max_pairs, long_documents=args.long_documents, cache=cache, drift=drift_settings_from(args),
            strict_model_names=args.strict_model_names, media=media_policy_from(args),
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def serve_load_options(args: argparse.Namespace) -> dict[str, Any]:
    """:meth:`Reranker.from_pretrained`'s arguments for every served model (the model itself aside)."""
    from rerankd.commands.options import load_options

    options = load_options(args)
    options.pop("model")
    return {**options, "feature_cache_bytes": args.vision_cache_bytes}


def load_engines(models: list[str] | None, load_options: dict[str, Any]) -> dict[str, Any]:
    """Served name → loaded reranker, in the order given (fails fast, before the port opens).

    ``models``: ``--model`` values (``NAME=MODEL`` or ``MODEL``; None: the bundled model);
    ``load_options``: :func:`serve_load_options` (also what each Ray Serve replica loads with).
    """
    from rerankd.engine import Reranker

    engines: dict[str, Any] = {}
    for spec in models or [None]:
        name, model = parse_model_spec(spec) if spec else (None, None)
        reranker = Reranker.from_pretrained(model, **load_options)
        name = name or reranker.name
        if name in engines:
            raise InputError(f"two models are served as {name!r}; give them distinct names with NAME=MODEL")
        engines[name] = reranker
        logging.getLogger("rerankd.server").info("loaded %s as %r: %s", model or "the bundled model", name,
                                                 reranker.describe())
    return engines


def run(args: argparse.Namespace) -> int:
    from rerankd._optional import require

    uvicorn = require("uvicorn")
    from rerankd.server.app import create_app

    settings = settings_from(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(message)s")
    if args.ray:
        return run_on_ray(args, settings)
    engines = load_engines(args.model, serve_load_options(args))
    app = create_app(engines, settings)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown: stop accepting, finish in-flight requests,
    # then the app's lifespan lets the inference workers drain. Afterwards uvicorn re-raises the signal
    # to the handler it found; ours ignores it, because a drained server has exited cleanly: status 0.
    previous = _swap_sigterm(_drained)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, access_log=False,
                    timeout_graceful_shutdown=30)
    finally:
        _swap_sigterm(previous)
    return 0


def run_on_ray(args: argparse.Namespace, settings: Any) -> int:
    """Serve the app as a Ray Serve deployment on --host/--port until SIGINT/SIGTERM, then tear it down."""
    import signal
    import threading

    from rerankd.ray.serving import build_app, parse_autoscale

    autoscale = parse_autoscale(args.autoscale) if args.autoscale else None
    options = serve_load_options(args)
    # Checked here, before Ray starts: a bad value fails in a second, with exit status 2.
    app = build_app(args.model, settings, load_options=options, replicas=args.replicas, autoscale=autoscale,
                    target_ongoing_requests=args.target_ongoing_requests, replica_cpus=args.replica_cpus,
                    replica_gpus=args.replica_gpus)
    from rerankd.ray.cluster import connect

    ray = connect(args.ray_address)
    from ray import serve

    log = logging.getLogger("rerankd.server")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(app, name="rerankd", route_prefix="/")
        log.info("serving on http://%s:%d with Ray Serve (%s)", settings.host, settings.port,
                 f"autoscale {autoscale[0]}..{autoscale[1]}" if autoscale else f"{args.replicas} replicas")
        stop.wait()
        log.info("shutting down the Ray Serve deployment")
        serve.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        ray.shutdown()
    return 0


def _drained(signum: int, frame: Any) -> None:
    logging.getLogger("rerankd.server").info("shut down cleanly after signal %d", signum)


def _swap_sigterm(handler: Any) -> Any:
    import signal
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _defaults() -> Any:
    from rerankd.server.settings import ServerSettings

    return ServerSettings()
