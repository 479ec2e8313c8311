"""``rerankd distill``: score training pairs with a teacher (any family), train a smaller student on them.

Examples:
    rerankd distill --teacher runs/ce --student layers:0,5 --data data/scifact --out runs/student-2l
    rerankd distill --teacher Qwen/Qwen3-Reranker-4B --student Qwen/Qwen3-Reranker-0.6B --loss hybrid \\
        --feature-weight 0.3:0.7 --feature-schedule cosine --instructions tasks.txt --data data/mine --out runs/q06
    rerankd distill --teacher Qwen/Qwen3-Reranker-0.6B --student runs/minilm --loss kl --temperature 2 ...

Every run ends with OUT/comparison.{md,json,png}: the first stage, teacher and student(s) on held-out queries.
"""

from __future__ import annotations

import argparse
from typing import Any

from rerankd.commands.train import (
    add_data_options, add_lora_options, add_loop_options, closing_comparison, data_settings, lora_spec, loop_config,
)


def _layers(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x.strip()]


def register(sub: Any) -> None:
    parser = sub.add_parser("distill", help="distill a teacher reranker into a smaller student", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="any model rerankd can run (directory or hub id)")
    parser.add_argument("--student", required=True,
                        help="layers:I,J,... keeps those teacher layers; or a model directory or hub id (same family smaller, or another family)")
    parser.add_argument("--student-family", choices=["auto", "cross-encoder", "llm-yes-no", "bi-encoder"], default="auto",
                        help="what the student trains as (auto: LLM rerankers and cross-encoders as they are, an encoder or bi-encoder as a cross-encoder)")
    parser.add_argument("--out", required=True, help="output folder: student, teacher scores, card, curves, comparison")
    parser.add_argument("--loss", choices=["margin-mse", "kl", "feature", "hybrid"], default="hybrid")
    parser.add_argument("--response", choices=["margin-mse", "kl"], default="margin-mse", help="response part of --loss hybrid")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the kl loss")
    parser.add_argument("--feature-kind", choices=["mse", "cosine"], default="mse")
    parser.add_argument("--feature-layers", type=_layers, default=None, help="student layers to match (default: all)")
    parser.add_argument("--feature-pooling", choices=["position", "mean"], default="position",
                        help="one vector per pair and layer: the scoring position (first token; an LLM's last) or the masked mean")
    parser.add_argument("--feature-weight", default="0.3→0.7",
                        help="hybrid feature weight START→END (or START:END, or one constant) over the steps")
    parser.add_argument("--feature-schedule", choices=["linear", "cosine"], default="linear", help="how the feature weight moves")
    parser.add_argument("--negatives", type=int, default=7, help="negatives per positive in each group")
    parser.add_argument("--teacher-backend", default="torch")
    parser.add_argument("--teacher-device", default=None)
    parser.add_argument("--teacher-dtype", default=None)
    parser.add_argument("--teacher-max-length", type=int, default=None)
    parser.add_argument("--teacher-batch-tokens", type=int, default=None)
    parser.add_argument("--compare-with", action="append", default=[], metavar="NAME=MODEL",
                        help="another model for the comparison table (e.g. an earlier student); repeatable")
    add_lora_options(parser)
    add_data_options(parser)
    add_loop_options(parser, lr=1e-4)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.cli import print_json
    from rerankd.errors import InputError
    from rerankd.training.distill import DistillSettings, TeacherSettings, distill

    extra = {}
    for item in args.compare_with:
        if "=" not in item:
            raise InputError(f"--compare-with {item!r} is not NAME=MODEL")
        name, model = item.rsplit("=", 1)
        extra[name] = model
    settings = DistillSettings(
        teacher=args.teacher, student=args.student, out=args.out, data=data_settings(args), loss=args.loss,
        response=args.response, temperature=args.temperature, feature_kind=args.feature_kind,
        feature_layers=args.feature_layers, feature_pooling=args.feature_pooling, feature_weight=args.feature_weight,
        feature_schedule=args.feature_schedule, student_family=args.student_family, lora=lora_spec(args),
        negatives=args.negatives,
        teacher_run=TeacherSettings(args.teacher_backend, args.teacher_device, args.teacher_dtype,
                                    args.teacher_max_length, args.teacher_batch_tokens),
        train=loop_config(args),
    )
    result = distill(settings, resume=args.resume, progress=not args.no_progress)
    report: dict[str, Any] = {"out": args.out, "steps": result.steps, "completed": result.completed, "best": result.best}
    if result.completed and not args.no_compare:
        models = {"teacher": args.teacher, "student": args.out, **extra}
        report["comparison"] = closing_comparison(args, models, settings.data, settings.train.seed)
    print_json(report)
    return 0
