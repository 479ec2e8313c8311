"""``rerankd eval``: measure rerank quality on IR benchmarks.

    rerankd eval run --data DIR [--split test] [--first-stage bm25|dense|all|run:FILE] [--k 100] [-m MODEL] --out DIR
    rerankd eval compare --data DIR --candidate name=MODEL[,backend=onnx,dtype=int8,label=X] ... --out DIR
    rerankd eval score --qrels QRELS --run A.trec [--run B.trec ...]

``run`` and ``compare`` retrieve candidates (BM25, a bi-encoder, or a given run file), rerank the
top-k with the model(s), and write TREC runs, metrics.json, report.md and PNG charts to ``--out``;
a killed run resumes from its score cache there. ``--data`` may be an image corpus (corpus.jsonl
lines with an ``image`` path, or a captions folder such as coco-mini: caption→image retrieval) for
vision-language rerankers; its first stage is every image (``all``) unless a run file is given. ``score`` evaluates existing run files and tests
each against the first (paired t-test and bootstrap).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rerankd.commands.options import add_engine_options, add_model_options, chunk_engine, load_reranker
from rerankd.errors import InputError

DEFAULT_METRICS = "ndcg@10,mrr@10,map@100,recall@100,p@10"


def register(sub: Any) -> None:
    parser = sub.add_parser("eval", help="measure rerank quality on IR benchmarks (NDCG, MRR, MAP, recall)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    run_parser = actions.add_parser("run", help="first stage + rerank with one model, report and charts")
    _add_data_options(run_parser)
    add_model_options(run_parser)
    add_engine_options(run_parser)
    run_parser.add_argument("--label", default="", help="name of the reranker in reports (default: model backend/dtype)")
    run_parser.set_defaults(run=run_one)

    compare_parser = actions.add_parser("compare", help="several models/backends/precisions in one table")
    _add_data_options(compare_parser)
    compare_parser.add_argument("--candidate", "-c", action="append", required=True,
                                help="name=MODEL[,backend=onnx][,dtype=int8][,label=TEXT][,max_length=N]; repeat per candidate "
                                     "(name=bundled is the bundled all-MiniLM-L6-v2)")
    compare_parser.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per forward pass")
    compare_parser.add_argument("--throughput-pairs", type=int, default=256,
                                help="time every candidate on these first pairs, interleaved (0: time the rerank itself)")
    compare_parser.add_argument("--repeats", type=int, default=3, help="timing repetitions (median)")
    compare_parser.set_defaults(run=run_compare)

    score_parser = actions.add_parser("score", help="metrics of existing run files, with paired tests against the first")
    score_parser.add_argument("--qrels", required=True, help="BEIR qrels .tsv or TREC qrels file")
    score_parser.add_argument("--run", dest="runs", action="append", required=True, help="TREC run file; repeat to compare")
    score_parser.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated (default {DEFAULT_METRICS})")
    score_parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    score_parser.set_defaults(run=run_score)

    from rerankd.cli import apply_env_defaults

    for action_parser in (run_parser, compare_parser, score_parser):
        apply_env_defaults(action_parser, os.environ)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data and first stage")
    data.add_argument("--data", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; corpus lines may "
                                     "carry an image path), or a captions folder (captions.jsonl: image + captions)")
    data.add_argument("--split", default="test", help="qrels split (default test)")
    data.add_argument("--mteb", help="MTEB-reranking JSONL (query, positive, negative); its lists are the candidates")
    data.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N judged queries")
    data.add_argument("--first-stage", default=None,
                      help="bm25, dense, all (every document a candidate; small corpora) or run:FILE (a TREC run "
                           "file). Default: bm25, or all for an image corpus (no BM25 over images)")
    data.add_argument("--k", "--top-k", dest="top_k", type=int, default=100, help="candidates per query to rerank (default 100)")
    data.add_argument("--stemmer", default="english", help="BM25 stemmer language, or none")
    data.add_argument("--stopwords", default="en", help="BM25 stopword list, or none")
    data.add_argument("--dense-model", default=None, help="bi-encoder for --first-stage dense (default: bundled)")
    data.add_argument("--dense-dtype", default=None, help="precision of the dense first stage (auto, fp32, bf16)")
    data.add_argument("--cache-dir", default=None, help="index and embedding cache (default ~/.cache/rerankd/eval)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", "-o", required=True, help="output folder (runs, metrics.json, report.md, charts, score cache)")
    out.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated (default {DEFAULT_METRICS})")
    out.add_argument("--chunk-pairs", type=int, default=1024, help="pairs scored and cached per step (default 1024)")
    out.add_argument("--instruction", default=None, help="task instruction (LLM rerankers)")
    out.add_argument("--chunking", default=None, metavar="SPEC",
                     help="score long documents as windows: 'on' or 'max_chunks=10,overlap=32,aggregation=max' "
                          "(default: truncate them)")
    out.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() in {"", "none", "off"} else value


def _metrics(text: str) -> list[str]:
    from rerankd.evaluation.metrics import parse_metric

    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    for name in names:
        parse_metric(name)
    if not names:
        raise InputError("--metrics is empty; give e.g. ndcg@10,mrr@10")
    return names


def default_cache_dir() -> Path:
    from rerankd.hub import cache_root

    return cache_root() / "eval"


def load_inputs(args: argparse.Namespace) -> tuple[Any, str, dict[str, dict[str, float]]]:
    """The dataset (cut to --max-queries) and the first-stage candidates with their label."""
    from rerankd.evaluation.datasets import load_beir, load_mteb_reranking, mteb_as_beir
    from rerankd.evaluation.first_stage import first_stage_run

    if bool(args.data) == bool(args.mteb):
        raise InputError("give exactly one of --data (a BEIR folder) or --mteb (an MTEB-reranking JSONL file)")
    if args.top_k < 1:
        raise InputError(f"--k must be at least 1, got {args.top_k}")
    if args.mteb:
        data, candidates = mteb_as_beir(load_mteb_reranking(args.mteb), name=Path(args.mteb).stem)
        label = "given"
    else:
        data = load_beir(args.data, args.split)
    if args.max_queries is not None:
        data = data.subset(list(data.queries)[: args.max_queries])
    if not args.mteb:
        from rerankd.evaluation.datasets import is_image_corpus

        first_stage = args.first_stage or ("all" if is_image_corpus(data.corpus) else "bm25")
        if first_stage == "all":  # every document is a candidate: rerank them all, whatever --k says
            args.top_k = max(args.top_k, len(data.corpus))
        label, candidates = first_stage_run(
            first_stage, data.corpus, data.queries, k=args.top_k, cache_dir=args.cache_dir or default_cache_dir(),
            stemmer=_none(args.stemmer), stopwords=_none(args.stopwords), dense_model=args.dense_model,
            dtype=args.dense_dtype, progress=not args.no_progress,
        )
    return data, label, {q: candidates[q] for q in data.queries if q in candidates}


def _finish(evaluation: Any, args: argparse.Namespace) -> int:
    from rerankd.evaluation.report import markdown, write_report

    paths = write_report(evaluation, args.out, charts=not args.no_charts)
    sys.stdout.write(markdown(evaluation))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


def run_one(args: argparse.Namespace) -> int:
    from rerankd.evaluation.compare import Candidate, evaluate_candidates

    metrics = _metrics(args.metrics)
    engine = chunk_engine(args)  # bad engine options fail before the data is read
    data, label, candidates = load_inputs(args)
    reranker = load_reranker(args)
    candidate = Candidate(model=args.model, backend=args.backend, dtype=args.dtype, label=args.label,
                          max_length=args.max_length)
    evaluation = evaluate_candidates(
        data, label, candidates, [candidate], out_dir=args.out, depth=args.top_k, metrics=metrics,
        chunk_pairs=args.chunk_pairs, instruction=args.instruction, progress=not args.no_progress, rerankers=[reranker],
        chunking=_chunking(args), engine=engine,
    )
    return _finish(evaluation, args)


def run_compare(args: argparse.Namespace) -> int:
    from rerankd.evaluation.compare import evaluate_candidates, parse_candidate

    metrics = _metrics(args.metrics)
    specs = [parse_candidate(spec) for spec in args.candidate]
    data, label, candidates = load_inputs(args)
    evaluation = evaluate_candidates(
        data, label, candidates, specs, out_dir=args.out, depth=args.top_k, metrics=metrics,
        chunk_pairs=args.chunk_pairs, batch_tokens=args.batch_tokens, throughput_pairs=args.throughput_pairs,
        repeats=args.repeats, instruction=args.instruction, progress=not args.no_progress, chunking=_chunking(args),
    )
    return _finish(evaluation, args)


def run_score(args: argparse.Namespace) -> int:
    from rerankd.evaluation.datasets import read_qrels, read_trec_run
    from rerankd.evaluation.metrics import evaluate
    from rerankd.evaluation.stats import paired_test

    metrics = _metrics(args.metrics)
    qrels = read_qrels(args.qrels)
    results = {path: evaluate(qrels, read_trec_run(path), metrics) for path in args.runs}
    base = args.runs[0]
    tests = {path: {m: paired_test(results[base], results[path], m) for m in metrics} for path in args.runs[1:]}
    if args.json:
        from rerankd.cli import print_json

        print_json({path: {"queries": r.queries, "mean": r.mean,
                           "tests_vs_first": {m: t.as_dict() for m, t in tests.get(path, {}).items()}}
                    for path, r in results.items()})
        return 0
    head = ["run", "queries", *metrics, f"Δ {metrics[0]} vs {Path(base).name} (95% CI, p t/bootstrap)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for path, result in results.items():
        test = tests.get(path, {}).get(metrics[0])
        print("| " + " | ".join([Path(path).name, str(result.queries), *(f"{result.mean[m]:.4f}" for m in metrics),
                                 test.summary() if test else "—"]) + " |")
    return 0


def _chunking(args: argparse.Namespace) -> Any:
    from rerankd.chunking import parse_chunking

    return parse_chunking(args.chunking) if getattr(args, "chunking", None) else None
