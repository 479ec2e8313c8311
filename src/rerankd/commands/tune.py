"""``rerankd tune``: measure torch bf16, torch int8, ONNX Runtime fp32 and int8 on this machine, record the fastest
whose scores stay within the accuracy bound; ``--backend auto`` then uses it."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("tune", help="pick the fastest correct backend and precision for a model on this machine",
                            description=__doc__)
    parser.add_argument("--model", "-m", default=None, help="model directory or hub id (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--docs", type=int, default=16, help="documents in the tuning workload")
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions per candidate (median)")
    parser.add_argument("--min-spearman", type=float, default=0.99, help="accuracy bound: Spearman against torch fp32")
    parser.add_argument("--max-abs-delta", type=float, default=0.05, help="accuracy bound: max |Δ normalized score|")
    parser.add_argument("--candidates", default=None,
                        help="comma-separated backend:dtype pairs (default: torch:bf16,torch-int8:int8,onnx:fp32,onnx:int8)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.cli import print_json
    from rerankd.errors import InputError
    from rerankd.tuning import CANDIDATES, AccuracyBound, BackendChoice, tune

    candidates = CANDIDATES
    if args.candidates:
        try:
            candidates = tuple(BackendChoice(*item.strip().split(":")) for item in args.candidates.split(",") if item.strip())
        except TypeError as exc:
            raise InputError(f"--candidates {args.candidates!r} must be backend:dtype pairs, e.g. onnx:int8,torch:bf16") from exc
    if args.docs < 2:
        raise InputError(f"--docs must be at least 2 to compare rankings, got {args.docs}")
    record = tune(args.model, candidates=candidates, bound=AccuracyBound(args.min_spearman, args.max_abs_delta),
                  n_docs=args.docs, reps=args.reps)
    print_json(record)
    return 0
