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

    print_json({**reranker.describe(), "architecture": (config.get("architectures") or [None])[0],
                "model_type": config.get("model_type"), "path": str(reranker.family.model_dir),
                **tuning_summary(reranker.family.model_dir)})
    return 0
