"""``rerankd score-run``: rerank a first-stage run and write the scored run (no qrels, no metrics).

    rerankd score-run --queries queries.jsonl --corpus corpus.parquet --run bm25.trec --out reranked.trec
    rerankd score-run ... --candidates candidates.jsonl --engine ray --concurrency 4

Queries and corpus are BEIR-style rows (``_id``, ``text``, corpus ``title``) in JSONL or Parquet;
candidates are a TREC run, or JSONL/Parquet rows ``{"qid", "docid"[, "score"]}``. Scores are cached
next to the output (``--cache``); a killed job restarted with the same command scores only what is
missing. The output is sorted (query, then score best first, ties by docid), so every engine and
every concurrency writes the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rerankd.commands.options import add_engine_options, add_model_options, chunk_engine, load_reranker
from rerankd.errors import InputError


def register(sub: Any) -> None:
    parser = sub.add_parser("score-run", help="rerank a first-stage run into a scored TREC run (local or Ray Data)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("inputs and output")
    data.add_argument("--queries", required=True, help="queries, JSONL or Parquet with _id and text")
    data.add_argument("--corpus", required=True, help="documents, JSONL or Parquet with _id, text and optional title")
    given = data.add_mutually_exclusive_group(required=True)
    given.add_argument("--run", dest="run_file", help="first-stage TREC run file (qid Q0 docid rank score tag)")
    given.add_argument("--candidates", help="candidates, JSONL or Parquet rows {qid, docid[, score]} or {qid, docids}")
    data.add_argument("--depth", "--k", dest="depth", type=int, default=100, help="candidates per query to rerank")
    data.add_argument("--out", "-o", required=True, help="scored TREC run to write")
    data.add_argument("--cache", default=None, help="resumable score cache (default: OUT with .scores.jsonl)")
    data.add_argument("--tag", default="rerankd", help="run tag (the last column)")
    data.add_argument("--chunk-pairs", type=int, default=1024, help="pairs scored and cached per step")
    data.add_argument("--instruction", default=None, help="task instruction (LLM rerankers)")
    data.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(parser)
    add_engine_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.evaluation.datasets import read_candidates, read_corpus, read_queries, write_trec_run
    from rerankd.evaluation.rerank_run import rerank

    if args.depth < 1:
        raise InputError(f"--depth must be at least 1, got {args.depth}")
    engine = chunk_engine(args)
    queries = read_queries(Path(args.queries))
    corpus = read_corpus(Path(args.corpus))
    candidates = read_candidates(args.run_file or args.candidates)
    unknown = sorted(set(candidates) - set(queries))
    if unknown:
        raise InputError(f"the candidates name query {unknown[0]!r}, which is not in {args.queries}")
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out.with_name(out.name + ".scores.jsonl")
    reranker = load_reranker(args)
    outcome = rerank(reranker, queries, corpus, candidates, depth=args.depth, chunk_pairs=args.chunk_pairs,
                     cache_path=cache, instruction=args.instruction, progress=not args.no_progress, label="score-run",
                     engine=engine)
    write_trec_run(outcome.run, out, tag=args.tag)
    speed = f", {outcome.pairs_per_s:.1f} pairs/s" if outcome.pairs_per_s else ""
    print(f"wrote {out}: {outcome.pairs} pairs, {outcome.pairs_scored} scored now{speed}", file=sys.stderr)
    return 0
