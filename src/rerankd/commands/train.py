"""``rerankd train``: fine-tune a cross-encoder on a BEIR dataset (qrels + mined hard negatives).

Example:
    rerankd train --base sentence-transformers/all-MiniLM-L6-v2 --data data/scifact --out runs/scifact-ce
"""

from __future__ import annotations

import argparse
from typing import Any


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Dataset, split and first-stage options shared by ``train`` and ``distill``."""
    parser.add_argument("--data", required=True, help="BEIR-format dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="train", help="qrels split to train on (default: train)")
    parser.add_argument("--dev-split", default=None, help="qrels split to evaluate on (default: hold out --dev-fraction of the training queries)")
    parser.add_argument("--dev-fraction", type=float, default=0.2, help="share of training queries held out as dev when there is no --dev-split")
    parser.add_argument("--retriever", choices=["bm25", "dense"], default="bm25", help="first stage that mines negatives and dev candidates")
    parser.add_argument("--dense-model", default=None, help="bi-encoder for --retriever dense (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--pool-depth", type=int, default=30, help="hard negatives are drawn from the first stage's top-N")
    parser.add_argument("--eval-depth", type=int, default=100, help="dev queries: rerank the first stage's top-N")
    parser.add_argument("--max-train-queries", type=int, default=None, help="use only the first N training queries")
    parser.add_argument("--max-dev-queries", type=int, default=None, help="use only the first N dev queries")
    parser.add_argument("--cache-dir", default=None, help="cache for first-stage indexes")
    parser.add_argument("--title-queries", type=int, default=0,
                        help="add N corpus titles as training queries, each document's abstract as their positive (in-domain data beyond the qrels)")


def add_loop_options(parser: argparse.ArgumentParser, *, lr: float) -> None:
    """Optimisation and run-control options shared by ``train`` and ``distill``."""
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--groups-per-batch", type=int, default=4, help="query groups per optimizer step")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (linear warmup, linear decay)")
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-length", type=int, default=256, help="tokens per (query, document) pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--no-bf16", action="store_true", help="train in fp32 instead of bf16 autocast")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between resumable checkpoints")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after N steps (checkpointed; continue with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def loop_config(args: argparse.Namespace) -> Any:
    from rerankd.device import cpu_has_fast_bf16, resolve_device
    from rerankd.training.trainer import TrainConfig

    device = resolve_device(args.device)
    if device.startswith("cuda"):
        import torch

        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = device == "cpu" and cpu_has_fast_bf16()
    return TrainConfig(
        epochs=args.epochs, groups_per_batch=args.groups_per_batch, lr=args.lr, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, max_length=args.max_length, seed=args.seed, device=device,
        bf16=bf16 and not args.no_bf16, checkpoint_every=args.checkpoint_every, stop_after=args.stop_after,
    )


def data_settings(args: argparse.Namespace) -> Any:
    from rerankd.training.finetune import DataSettings

    return DataSettings(
        data=args.data, split=args.split, dev_split=args.dev_split, dev_fraction=args.dev_fraction,
        retriever=args.retriever, dense_model=args.dense_model, pool_depth=args.pool_depth, eval_depth=args.eval_depth,
        max_train_queries=args.max_train_queries, max_dev_queries=args.max_dev_queries, cache_dir=args.cache_dir,
        title_queries=args.title_queries,
    )


def register(sub: Any) -> None:
    parser = sub.add_parser("train", help="fine-tune a cross-encoder on BEIR qrels", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None, help="encoder or cross-encoder to start from (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--out", required=True, help="output folder: best model, model card, curves, checkpoint")
    parser.add_argument("--loss", choices=["listwise", "binary"], default="listwise")
    parser.add_argument("--negatives", type=int, default=7, help="hard negatives per positive")
    add_data_options(parser)
    add_loop_options(parser, lr=3e-5)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.cli import print_json
    from rerankd.training.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(base=args.base, out=args.out, data=data_settings(args), loss=args.loss,
                                negatives=args.negatives, train=loop_config(args))
    result = finetune(settings, resume=args.resume, progress=not args.no_progress)
    print_json({"out": args.out, "steps": result.steps, "completed": result.completed, "best": result.best, "evals": result.evals})
    return 0
