"""The one resumable score cache: (query, document) scores on disk, keyed by the model's fingerprint.

It serves ``rerankd eval`` (reranker scores of a first-stage run) and the distillation teacher
(teacher scores of training pairs). The file is JSON Lines: a header line holding the model's
fingerprint (:mod:`rerankd.fingerprint`) and the settings that change scores, then one
``{"scores": {qid: {docid: score}}}`` line per finished chunk, appended, flushed and fsynced. A run that
is stopped keeps every finished chunk; a torn last line is dropped on the next start; lines of one
query merge on reading, so a later run with deeper candidate pools scores only the new documents.
A cache written under another fingerprint or settings is refused, naming the field, never mixed in.

Example:
    >>> cache = ScoreCache("out/scores.jsonl", score_settings(reranker))    # doctest: +SKIP
    >>> cache.missing("q1", ["d1", "d2"])                                   # doctest: +SKIP
    ['d2']
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from rerankd.errors import InputError
from rerankd.fingerprint import check_fingerprint

CACHE_FORMAT = 2
#: query id → document id → score
Scores = dict[str, dict[str, float]]


def read_scores(path: str | Path) -> Scores:
    """The finished scores of a cache file, whatever its header (for inspection and tests)."""
    scores: Scores = {}
    if not Path(path).exists():
        return scores
    for number, line in enumerate(Path(path).read_bytes().split(b"\n")[:-1]):
        if number == 0 or not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        for qid, docs in row.get("scores", {}).items():
            scores.setdefault(qid, {}).update({d: float(v) for d, v in docs.items()})
    return scores


def score_settings(reranker: Any, *, instruction: str | None = None, max_doc_tokens: int | None = None,
                   chunking: Any = None) -> dict[str, Any]:
    """What decides a reranker's scores on one run: its fingerprint and the per-call settings."""
    settings = {**reranker.fingerprint(), "instruction": instruction, "max_doc_tokens": max_doc_tokens}
    if chunking is not None:  # absent otherwise, so caches written before chunking existed stay valid
        settings["chunking"] = chunking.settings()
    return settings


class ScoreCache:
    """Append-only JSONL of reranker scores: a header line, then one ``{"scores": {qid: {docid: score}}}`` per chunk.

    JSON floats round-trip exactly, so cached scores equal freshly computed ones bit for bit.
    """

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = {"rerankd_score_cache": CACHE_FORMAT, **header}
        self.scores: Scores = {}
        if not (self.path.exists() and self._load()):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(self.header, sort_keys=True) + "\n")
                _sync(fh)

    def _load(self) -> bool:
        """Read the finished chunks; False when not even the header was written (start afresh)."""
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        good_end = 0
        for number, line in enumerate(lines, start=1):
            complete = number < len(lines)  # the piece after the last newline is unfinished
            if not line.strip():
                good_end += len(line) + (1 if complete else 0)
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if number >= len(lines) - 1:
                    break  # torn last line from a killed run: drop it, the chunk is rescored
                raise InputError(f"{self.path}:{number}: not valid JSON ({exc}); delete the file to start over") from exc
            if not complete:
                break  # a last line without its newline was never fully flushed
            if number == 1:
                self._check_header(row)
            else:
                scores = row.get("scores") if isinstance(row, dict) else None
                if not isinstance(scores, dict):
                    raise InputError(f"{self.path}:{number}: missing field 'scores'; delete the file to start over")
                for qid, docs in scores.items():
                    self.scores.setdefault(qid, {}).update({d: float(s) for d, s in docs.items()})
            good_end += len(line) + 1
        if not any(line.strip() for line in data[:good_end].split(b"\n")):
            return False
        if good_end < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
        return True

    def _check_header(self, row: Any) -> None:
        if not isinstance(row, dict) or row.get("rerankd_score_cache") != CACHE_FORMAT:
            raise InputError(f"{self.path}:1: not a rerankd score cache (format {CACHE_FORMAT}); use another path")
        check_fingerprint(row, self.header, str(self.path))

    def missing(self, qid: str, docids: Sequence[str]) -> list[str]:
        """The documents of ``qid`` not scored yet, in the order given."""
        cached = self.scores.get(qid, {})
        return [d for d in docids if d not in cached]

    def has(self, qid: str, docids: Sequence[str]) -> bool:
        cached = self.scores.get(qid)
        return cached is not None and all(d in cached for d in docids)

    def add(self, chunk: Scores) -> None:
        """Append one finished chunk and make it durable before returning."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"scores": chunk}) + "\n")
            _sync(fh)
        for qid, docs in chunk.items():
            self.scores.setdefault(qid, {}).update(docs)


def _sync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())
