"""Teacher scores of (query, candidate) pairs, written to disk as they come and resumable.

Any model rerankd can run is a teacher (cross-encoder, LLM yes/no reranker, on any backend): the
scores are the engine's *raw* scores (logit or yes-vs-no log-odds), the scale distillation wants.

The file is JSON Lines, one query per line: ``{"qid": ..., "scores": {doc_id: score, ...}}``,
appended and flushed every few queries. A run that is stopped keeps every finished line; the next
run reads them, drops a torn last line, and scores only the (query, document) pairs still missing:
a later run with deeper candidate pools scores just the new documents and appends them as another
line for the same query (lines of one query merge on reading).

Example:
    >>> scores = score_with_teacher(reranker, texts, {"q1": ["d1", "d2"]}, Path("teacher_scores.jsonl"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from rerankd._optional import require
from rerankd.errors import InputError

META_SUFFIX = ".meta.json"


def read_scores(path: Path) -> dict[str, dict[str, float]]:
    """Finished lines of a teacher-score file, merged per query; a torn last line (from a crash
    mid-write) is ignored."""
    scores: dict[str, dict[str, float]] = {}
    if not path.exists():
        return scores
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn write: that query is scored again
            row = json.loads(line)
            scores.setdefault(str(row["qid"]), {}).update({str(d): float(s) for d, s in row["scores"].items()})
    return scores


def _drop_torn_tail(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _check_meta(path: Path, teacher: str) -> None:
    meta_path = path.with_name(path.name + META_SUFFIX)
    if meta_path.exists():
        saved = json.loads(meta_path.read_text(encoding="utf-8")).get("teacher")
        if saved != teacher:
            raise InputError(
                f"{path} holds scores of teacher {saved!r}, not {teacher!r}; use another --out or delete the file"
            )
    else:
        meta_path.write_text(json.dumps({"teacher": teacher}), encoding="utf-8")


def score_with_teacher(
    reranker: Any,
    texts: Any,
    candidates: Mapping[str, Sequence[str]],
    path: Path,
    *,
    queries_per_write: int = 8,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Raw teacher scores of every (query, candidate) pair, resuming from ``path`` if it exists.

    Args:
        reranker: a :class:`rerankd.Reranker` (any family, any backend).
        texts: query and document texts by id (``.queries``, ``.docs``).
        candidates: doc ids to score per query id.
        path: the JSON Lines file to append to.
        queries_per_write: queries scored per engine call (their pairs share batches) and per flush.
    """
    tqdm = require("tqdm").tqdm
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_meta(path, str(reranker.name))
    _drop_torn_tail(path)
    done = read_scores(path)
    missing = {q: [d for d in candidates[q] if d not in done.get(q, {})] for q in sorted(candidates)}
    todo = [q for q, docs in missing.items() if docs]
    bar = tqdm(total=len(candidates), initial=len(candidates) - len(todo), desc="teacher scoring", unit="query",
               disable=not progress, dynamic_ncols=True)
    with open(path, "a", encoding="utf-8") as fh:
        for start in range(0, len(todo), queries_per_write):
            chunk = todo[start : start + queries_per_write]
            results = reranker.score_many([texts.queries[q] for q in chunk], [[texts.docs[d] for d in missing[q]] for q in chunk])
            for qid, result in zip(chunk, results):
                row = {d: float(s) for d, s in zip(missing[qid], result.raw)}
                done.setdefault(qid, {}).update(row)
                fh.write(json.dumps({"qid": qid, "scores": row}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # a finished chunk survives a crash
            bar.update(len(chunk))
    bar.close()
    return done
