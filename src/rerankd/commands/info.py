"""``rerankd info``: what a model is and how rerankd will run it."""

from __future__ import annotations

import argparse
from typing import Any

from rerankd.commands.options import add_model_options, load_reranker


def register(sub: Any) -> None:
    parser = sub.add_parser("info", help="print a model's family, architecture, size, device, dtype", description=__doc__)
    add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.cli import print_json

    reranker = load_reranker(args)
    config = reranker.family.config
    from rerankd.tuning import tuning_summary

    out = {**reranker.describe(), "architecture": (config.get("architectures") or [None])[0],
           "model_type": config.get("model_type"), "path": str(reranker.family.model_dir),
           **tuning_summary(reranker.family.model_dir)}
    if reranker.family.modalities - {"text"}:
        out["media"] = media_summary(reranker)
    print_json(out)
    return 0


def media_summary(reranker: Any) -> dict[str, Any]:
    """A media-reading family's limits: image size bounds, video sampling, and what a server accepts by default."""
    from rerankd.media.fetch import MediaPolicy
    from rerankd.server.settings import media_limits

    vision = getattr(reranker.family, "vision", None)
    media = reranker.pipeline.media
    return {
        "modalities": sorted(reranker.family.modalities),
        "image_pixels": [getattr(vision, "min_pixels", None), getattr(vision, "max_pixels", None)],
        "patch_size": getattr(vision, "patch_size", None), "merge_size": getattr(vision, "merge_size", None),
        "video_fps": media.fps, "video_max_frames": media.max_frames,
        "python_api_policy": "permissive (any URL or path; pixel cap only)",
        "server_defaults": media_limits(MediaPolicy()),
    }
