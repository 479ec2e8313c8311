"""The ``rerankd`` command line: the only place that reads argv and environment variables.

Every option of every subcommand can also be set as ``RERANKD_<OPTION>`` (dashes as underscores),
e.g. ``RERANKD_PORT=9000``; a flag on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Sequence

from rerankd.backends.allocator import reuse_large_buffers
from rerankd.errors import RerankdError

#: Subcommand modules under ``rerankd.commands``; each defines ``register(subparsers)``.
COMMANDS = ["rank", "info", "serve", "export", "train", "distill", "tune", "quantize", "eval", "score-run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerankd", description="Rerank documents, serve rerankers, measure them.")
    parser.add_argument("--version", action="version", version=f"rerankd {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"rerankd.commands.{name.replace('-', '_')}").register(sub)
    for subparser in sub.choices.values():
        apply_env_defaults(subparser, os.environ)
    return parser


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Any) -> None:
    """Let ``RERANKD_<DEST>`` supply each option's default (comma-separated for repeatable ones)."""
    for action in parser._actions:
        if not action.option_strings or action.dest in {"help", "version"}:
            continue
        value = environ.get(f"RERANKD_{action.dest.upper()}")
        if value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            action.default = value.strip().lower() in {"1", "true", "yes", "on"}
        elif isinstance(action, argparse._AppendAction):
            convert = action.type or str
            action.default = [convert(v.strip()) for v in value.split(",") if v.strip()]
        else:
            action.default = (action.type or str)(value)
        action.required = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Before any model loads or thread starts: threads created later (the server's inference thread)
    # then share the one arena whose large buffers are reused (backends/allocator.py).
    reuse_large_buffers()
    try:
        return int(args.run(args) or 0)
    except RerankdError as exc:
        print(f"rerankd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _version() -> str:
    from rerankd import __version__

    return __version__


if __name__ == "__main__":
    raise SystemExit(main())
