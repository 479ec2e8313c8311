"""``rerankd train``: fine-tune a reranker on a BEIR dataset (qrels + mined hard negatives).

Examples:
    rerankd train --base sentence-transformers/all-MiniLM-L6-v2 --data data/scifact --out runs/scifact-ce
    rerankd train --base Qwen/Qwen3-Reranker-0.6B --lora r=16,alpha=32,targets=q_proj,v_proj --lr 2e-4 \\
        --data data/mine --out runs/qwen-lora

Every run ends with OUT/comparison.{md,json,png} (first stage, base, trained model on held-out queries).
"""

from __future__ import annotations

import argparse
from pathlib import Path
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
    parser.add_argument("--sentence-queries", type=int, default=0,
                        help="add one sentence of N abstracts as training queries, the rest of each document as their positive")
    parser.add_argument("--instructions", default=None, metavar="FILE",
                        help="task instructions, one per line: each query gets one, drawn by seed (teacher and student alike)")
    parser.add_argument("--no-compare", action="store_true", help="skip the closing comparison table")
    parser.add_argument("--compare-split", default=None,
                        help="qrels split for the closing comparison, e.g. test (default: the held-out dev queries)")
    parser.add_argument("--compare-depth", type=int, default=100, help="the comparison reranks the first stage's top-N")


def add_lora_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora", default=None, metavar="SPEC",
                        help="train LoRA adapters (peft) instead of every weight: r=16,alpha=32,targets=q_proj,v_proj[,dropout=0.05]")
    parser.add_argument("--merge-lora", action="store_true",
                        help="save the merged model instead of the adapter (default: the adapter, loaded with "
                             "Reranker.from_pretrained(base, adapter=OUT))")


def lora_spec(args: argparse.Namespace) -> Any:
    if args.lora is None:
        if args.merge_lora:
            from rerankd.errors import InputError

            raise InputError("--merge-lora needs --lora")
        return None
    from rerankd.training.lora import parse_lora

    return parse_lora(args.lora, merge=args.merge_lora)


def closing_comparison(args: argparse.Namespace, models: dict[str, str], data: Any, seed: int) -> list[dict[str, Any]]:
    """OUT/comparison.{md,json,png}: the first stage and ``models`` on held-out queries."""
    import sys

    from rerankd.training.compare import compare_run, models_table

    rows = compare_run(Path(args.out), models, data, seed, depth=args.compare_depth, split=args.compare_split,
                       progress=not args.no_progress)
    print(models_table(rows), file=sys.stderr)
    return [r.as_dict() for r in rows]


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
        title_queries=args.title_queries, sentence_queries=args.sentence_queries, instructions=args.instructions,
    )


def register(sub: Any) -> None:
    parser = sub.add_parser("train", help="fine-tune a reranker (cross-encoder, LLM yes/no, bi-encoder; LoRA) on BEIR qrels",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None,
                        help="model to start from: an encoder, cross-encoder, LLM reranker or bi-encoder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--family", choices=["auto", "cross-encoder", "llm-yes-no", "bi-encoder"], default="auto",
                        help="what the base trains as (auto: LLM rerankers and cross-encoders as they are, an encoder or bi-encoder as a cross-encoder)")
    parser.add_argument("--out", required=True, help="output folder: best model, model card, curves, checkpoint")
    parser.add_argument("--loss", choices=["listwise", "binary"], default="listwise")
    parser.add_argument("--negatives", type=int, default=7, help="hard negatives per positive")
    add_lora_options(parser)
    add_data_options(parser)
    add_loop_options(parser, lr=3e-5)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.cli import print_json
    from rerankd.training.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(base=args.base, out=args.out, data=data_settings(args), loss=args.loss,
                                negatives=args.negatives, family=args.family, lora=lora_spec(args), train=loop_config(args))
    result = finetune(settings, resume=args.resume, progress=not args.no_progress)
    report: dict[str, Any] = {"out": args.out, "steps": result.steps, "completed": result.completed, "best": result.best,
                              "evals": result.evals}
    if result.completed and not args.no_compare:
        models = {"trained": args.out}
        if settings.lora is not None or _is_reranker(args.base):
            models = {"base": args.base, **models}
        report["comparison"] = closing_comparison(args, models, settings.data, settings.train.seed)
    print_json(report)
    return 0


def _is_reranker(model: str | None) -> bool:
    """Whether the base scores pairs as it is (a bare encoder or bi-encoder base gets a new head)."""
    from rerankd.errors import UnsupportedModelError
    from rerankd.families.base import read_json
    from rerankd.families.detect import detect_kind
    from rerankd.hub import resolve_model

    if not model:
        return False
    model_dir, _ = resolve_model(model)
    try:
        return detect_kind(model_dir, read_json(model_dir / "config.json")) in ("cross-encoder", "llm-yes-no")
    except UnsupportedModelError:  # a bare encoder: not a reranker by itself
        return False
