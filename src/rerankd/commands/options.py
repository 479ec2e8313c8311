"""Options shared by the subcommands that load a model."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_options(parser: argparse.ArgumentParser, *, model_help: str | None = None) -> None:
    parser.add_argument("--model", "-m", default=None, help=model_help or "model directory or hub id (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--backend", default="torch", help="inference backend (torch, onnx)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per pair (documents are truncated to fit)")
    parser.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per forward pass")
    parser.add_argument("--max-memory", default=None, metavar="SIZE",
                        help="memory budget per model (e.g. 2.5GB): the default precision/backend is chosen to fit it")


def load_reranker(args: argparse.Namespace, model: str | None = None, **extra: Any) -> Any:
    """The reranker the model options name; ``extra`` goes to :meth:`Reranker.from_pretrained` as is."""
    from rerankd.engine import Reranker

    return Reranker.from_pretrained(
        model if model is not None else args.model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        max_memory=getattr(args, "max_memory", None),
        **extra,
    )
