"""Teacher scores of (query, candidate) pairs, written to disk as they come and resumable.

Any model rerankd can run is a teacher (cross-encoder, LLM yes/no reranker, bi-encoder, on any
backend), with the task instruction of each query: the scores are the engine's *raw* scores (logit or yes-vs-no log-odds), the scale
distillation wants. They go to the one resumable score cache (:mod:`rerankd.score_cache`), whose
header holds the teacher's fingerprint: a rerun with another dtype, backend, max_length or
instruction is refused naming the field, never mixed in. A stopped run keeps every finished chunk,
and a later run with deeper candidate pools scores only the new (query, document) pairs.

Example:
    >>> scores = score_with_teacher(reranker, texts, {"q1": ["d1", "d2"]}, Path("teacher_scores.jsonl"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from rerankd._optional import require
from rerankd.score_cache import ScoreCache, Scores, score_settings
from rerankd.training.instructions import InstructionDraw


def score_with_teacher(
    reranker: Any,
    texts: Any,
    candidates: Mapping[str, Sequence[str]],
    path: Path,
    *,
    instruction: str | InstructionDraw | None = None,
    queries_per_write: int = 8,
    progress: bool = True,
) -> Scores:
    """Raw teacher scores of every (query, candidate) pair, resuming from ``path`` if it exists.

    Args:
        reranker: a :class:`rerankd.Reranker` (any family, any backend).
        texts: query and document texts by id (``.queries``, ``.docs``).
        candidates: doc ids to score per query id.
        path: the score cache to append to.
        instruction: the task instruction (LLM rerankers), or a per-query draw
            (:class:`rerankd.training.instructions.InstructionDraw`); part of the cache's settings.
        queries_per_write: queries scored per engine call (their pairs share batches) and per flush.
    """
    tqdm = require("tqdm").tqdm
    reranker.pin_threads()  # a resumed teacher run must equal a fresh one bit for bit
    drawn = isinstance(instruction, InstructionDraw)
    setting = instruction.setting() if drawn else instruction
    cache = ScoreCache(path, score_settings(reranker, instruction=setting))
    missing = {q: cache.missing(q, list(candidates[q])) for q in sorted(candidates)}
    todo = [q for q, docs in missing.items() if docs]
    per_query = instruction.per_query(todo) if drawn else {q: instruction for q in todo}
    bar = tqdm(total=len(candidates), initial=len(candidates) - len(todo), desc="teacher scoring", unit="query",
               disable=not progress, dynamic_ncols=True)
    for start in range(0, len(todo), queries_per_write):
        chunk = todo[start : start + queries_per_write]
        scored: Scores = {}
        for task in dict.fromkeys(per_query[q] for q in chunk):  # one engine call per instruction in the chunk
            qids = [q for q in chunk if per_query[q] == task]
            results = reranker.score_many([texts.queries[q] for q in qids], [[texts.docs[d] for d in missing[q]] for q in qids],
                                          instruction=task)
            scored.update({qid: {d: float(s) for d, s in zip(missing[qid], result.raw)} for qid, result in zip(qids, results)})
        cache.add({q: scored[q] for q in chunk})
        bar.update(len(chunk))
    bar.close()
    return {q: dict(docs) for q, docs in cache.scores.items()}
