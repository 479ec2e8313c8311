"""``rerankd rank``: rank documents from a file or stdin against one query, print JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from rerankd.commands.options import add_model_options, load_reranker
from rerankd.errors import InvalidDocumentError


def register(sub: Any) -> None:
    parser = sub.add_parser("rank", help="rank documents against a query and print JSON", description=__doc__)
    add_model_options(parser)
    parser.add_argument("--query", "-q", required=True, help="the query")
    parser.add_argument("--documents", "-d", required=True, help="file of documents (plain lines or JSONL), or - for stdin")
    parser.add_argument("--top-n", type=int, default=None, help="keep the best N")
    parser.add_argument("--instruction", default=None, help="task instruction (LLM rerankers)")
    parser.add_argument("--no-documents", action="store_true", help="leave document texts out of the output")
    parser.set_defaults(run=run)


def read_documents(stream: TextIO, source: str) -> list[str]:
    """Plain lines, or JSONL whose lines are strings or objects with a "text" (or "document") field."""
    documents = []
    for number, line in enumerate(stream, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.lstrip().startswith(("{", '"')):
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDocumentError(f"{source}:{number}: not valid JSON ({exc.msg})") from exc
            if isinstance(value, dict):
                value = value.get("text", value.get("document"))
            if not isinstance(value, str):
                raise InvalidDocumentError(f'{source}:{number}: a JSON line must be a string or an object with a "text" string')
            documents.append(value)
        else:
            documents.append(line)
    return documents


def run(args: argparse.Namespace) -> int:
    if args.documents == "-":
        documents = read_documents(sys.stdin, "stdin")
    else:
        path = Path(args.documents)
        if not path.is_file():
            raise InvalidDocumentError(f"documents file {path} does not exist")
        with open(path, encoding="utf-8") as fh:
            documents = read_documents(fh, str(path))
    reranker = load_reranker(args)
    result = reranker.rank(
        args.query, documents, top_n=args.top_n, return_documents=not args.no_documents,
        instruction=args.instruction, progress=len(documents) > 64 and sys.stderr.isatty(),
    )
    from rerankd.cli import print_json

    print_json({
        "model": result.model,
        "query": result.query,
        "results": [
            {k: v for k, v in vars(r).items() if v is not None} for r in result.results
        ],
        "total_tokens": result.total_tokens,
    })
    return 0
