"""``rerankd distill``: score first-stage candidates with a teacher, train a smaller student on them.

Examples:
    rerankd distill --teacher runs/ce --student layers:0,5 --data data/scifact --out runs/student-2l
    rerankd distill --teacher Qwen/Qwen3-Reranker-0.6B --student runs/minilm --loss kl --temperature 2 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rerankd.commands.train import add_data_options, add_loop_options, data_settings, loop_config


def _layers(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x.strip()]


def register(sub: Any) -> None:
    parser = sub.add_parser("distill", help="distill a teacher reranker into a smaller student", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="any model rerankd can run (directory or hub id)")
    parser.add_argument("--student", required=True,
                        help="layers:I,J,... keeps those teacher layers; or an encoder/cross-encoder directory or hub id")
    parser.add_argument("--out", required=True, help="output folder: student, teacher scores, card, curves, comparison")
    parser.add_argument("--loss", choices=["margin-mse", "kl", "feature", "hybrid"], default="hybrid")
    parser.add_argument("--response", choices=["margin-mse", "kl"], default="margin-mse", help="response part of --loss hybrid/feature")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the kl loss")
    parser.add_argument("--feature-kind", choices=["mse", "cosine"], default="mse")
    parser.add_argument("--feature-layers", type=_layers, default=None, help="student layers to match (default: all)")
    parser.add_argument("--hybrid-start", type=float, default=0.3, help="feature weight at the start of hybrid training")
    parser.add_argument("--hybrid-end", type=float, default=0.7, help="feature weight at the end of hybrid training")
    parser.add_argument("--negatives", type=int, default=7, help="negatives per positive in each group")
    parser.add_argument("--teacher-backend", default="torch")
    parser.add_argument("--teacher-device", default=None)
    parser.add_argument("--teacher-dtype", default=None)
    parser.add_argument("--teacher-max-length", type=int, default=None)
    parser.add_argument("--teacher-batch-tokens", type=int, default=None)
    parser.add_argument("--no-compare", action="store_true", help="skip the side-by-side evaluation of teacher and student")
    parser.add_argument("--compare-depth", type=int, default=100, help="rerank the first stage's top-N for the comparison")
    add_data_options(parser)
    add_loop_options(parser, lr=1e-4)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.cli import print_json
    from rerankd.training.distill import DistillSettings, TeacherSettings, distill

    settings = DistillSettings(
        teacher=args.teacher, student=args.student, out=args.out, data=data_settings(args), loss=args.loss,
        response=args.response, temperature=args.temperature, feature_kind=args.feature_kind,
        feature_layers=args.feature_layers, hybrid_start=args.hybrid_start, hybrid_end=args.hybrid_end,
        negatives=args.negatives,
        teacher_run=TeacherSettings(args.teacher_backend, args.teacher_device, args.teacher_dtype,
                                    args.teacher_max_length, args.teacher_batch_tokens),
        train=loop_config(args),
    )
    result = distill(settings, resume=args.resume, progress=not args.no_progress)
    report: dict[str, Any] = {"out": args.out, "steps": result.steps, "completed": result.completed, "best": result.best}
    if result.completed and not args.no_compare:
        report["comparison"] = _compare(args, settings)
    print_json(report)
    return 0


def _compare(args: argparse.Namespace, settings: Any) -> list[dict[str, Any]]:
    """Teacher vs student on the dev split (first-stage top-N), written to OUT/comparison.{json,md}."""
    from rerankd.training.compare import compare_models, models_table
    from rerankd.training.data import ranked_ids
    from rerankd.training.finetune import prepare_data

    data = settings.data
    data.eval_depth = max(data.eval_depth, args.compare_depth)
    prepared = prepare_data(data, settings.train.seed)
    candidates = {q: ranked_ids(prepared.run, q, args.compare_depth) for q in prepared.split.dev}
    rows = compare_models({"teacher": args.teacher, "student": args.out}, prepared.texts, prepared.qrels, candidates,
                   progress=not args.no_progress)
    out = Path(args.out)
    (out / "comparison.json").write_text(json.dumps([r.as_dict() for r in rows], indent=2), encoding="utf-8")
    (out / "comparison.md").write_text(models_table(rows) + "\n", encoding="utf-8")
    print(models_table(rows), file=sys.stderr)
    return [r.as_dict() for r in rows]
