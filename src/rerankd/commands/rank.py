"""``rerankd rank``: rank documents from a file or stdin against one query, print JSON.

Documents are plain lines, or JSONL: a string, ``{"text": ...}`` (or ``"document"``), or for
vision-language models ``{"text": ..., "image": ..., "video": ...}`` (each a value or a list; an
image a path, URL or ``data:`` URI; a video a path or a list of frames). Relative media paths are
taken relative to the documents file (the working directory for stdin).
"""

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
    parser.add_argument("--query", "-q", default=None, help="the query (text)")
    parser.add_argument("--query-image", action="append", default=None, metavar="IMAGE",
                        help="an image in the query (path, URL or data: URI; repeat for several; vision-language models)")
    parser.add_argument("--fps", type=float, default=None, help="frames per second sampled from video files (default 1)")
    parser.add_argument("--max-frames", type=int, default=None, help="frames a video is sampled to at most (default 64)")
    parser.add_argument("--documents", "-d", required=True, help="file of documents (plain lines or JSONL), or - for stdin")
    parser.add_argument("--top-n", type=int, default=None, help="keep the best N")
    parser.add_argument("--instruction", default=None, help="task instruction (LLM rerankers)")
    parser.add_argument("--no-documents", action="store_true", help="leave document texts out of the output")
    parser.set_defaults(run=run)


MEDIA_FIELDS = ("image", "video")


def read_documents(stream: TextIO, source: str, base: Path | None = None) -> list[Any]:
    """Plain lines, or JSONL lines: strings, ``{"text"}`` / ``{"document"}`` objects, or media objects.

    A media object (one with ``image`` or ``video``) is kept as the native dict, its relative paths
    made relative to ``base`` (the documents file's folder).
    """
    documents: list[Any] = []
    for number, line in enumerate(stream, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.lstrip().startswith(("{", '"')):
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDocumentError(f"{source}:{number}: not valid JSON ({exc.msg})") from exc
            if isinstance(value, dict) and any(value.get(k) is not None for k in MEDIA_FIELDS):
                documents.append(_media_document(value, base))
                continue
            if isinstance(value, dict):
                value = value.get("text", value.get("document"))
            if not isinstance(value, str):
                raise InvalidDocumentError(f'{source}:{number}: a JSON line must be a string or an object with a "text" '
                                           'string (or "image" / "video")')
            documents.append(value)
        else:
            documents.append(line)
    return documents


def _media_document(value: dict[str, Any], base: Path | None) -> dict[str, Any]:
    out = {k: value[k] for k in ("text", *MEDIA_FIELDS) if value.get(k) is not None}
    for field in MEDIA_FIELDS:
        if field in out:
            out[field] = _relative_to(out[field], base)
    return out


def _relative_to(value: Any, base: Path | None) -> Any:
    """Relative local paths made relative to ``base``; URLs, data: URIs and absolute paths as they are."""
    if isinstance(value, list):
        return [_relative_to(v, base) for v in value]
    if not isinstance(value, str) or base is None or "://" in value or value.startswith("data:"):
        return value
    path = Path(value)
    return value if path.is_absolute() else str(base / path)


def _query(args: argparse.Namespace) -> Any:
    if args.query_image:
        return {"image": list(args.query_image), **({"text": args.query} if args.query else {})}
    if args.query is None:
        raise InvalidDocumentError("give the query with --query TEXT (and/or --query-image IMAGE)")
    return args.query


def run(args: argparse.Namespace) -> int:
    query = _query(args)
    if args.documents == "-":
        documents = read_documents(sys.stdin, "stdin")
    else:
        path = Path(args.documents)
        if not path.is_file():
            raise InvalidDocumentError(f"documents file {path} does not exist")
        with open(path, encoding="utf-8") as fh:
            documents = read_documents(fh, str(path), base=path.parent)
    reranker = load_reranker(args)
    result = reranker.rank(
        query, documents, top_n=args.top_n, return_documents=False,
        instruction=args.instruction, progress=len(documents) > 64 and sys.stderr.isatty(),
        fps=args.fps, max_frames=args.max_frames,
    )
    from rerankd.cli import print_json

    print_json({
        "model": result.model,
        "query": query,
        "results": [
            {**{k: v for k, v in vars(r).items() if v is not None},
             **({} if args.no_documents else {"document": documents[r.index]})}
            for r in result.results
        ],
        "total_tokens": result.total_tokens,
    })
    return 0
