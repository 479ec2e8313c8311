"""A fixed, offline workload and the numbers that compare two ways of running one model.

``rerank_workload`` rebuilds the rerank-100 shape of ``../shared/perf/PERF.md`` (one query, document
lengths lognormal(median 160 tokens, sigma 0.6), seed 0) from built-in English text, so tuning and
quantize reports need no dataset. ``compare_scores`` gives the agreement of two score vectors.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

QUERY = "How do plants turn sunlight into chemical energy, and what limits the rate?"
# Varied sentences, some on the query's topic and most not, so scores spread as in a real top-100.
_SENTENCES = (
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Chlorophyll absorbs red and blue light and reflects green light.",
    "The light-dependent reactions split water and release oxygen in the thylakoid membranes.",
    "The Calvin cycle fixes carbon dioxide into sugars using ATP and NADPH.",
    "Photosynthetic rate levels off at high light intensity when carbon dioxide becomes limiting.",
    "Temperature affects the enzymes of carbon fixation, so the rate falls when leaves overheat.",
    "Paris is the capital and largest city of France.",
    "The stock market fell sharply on Monday after weak earnings reports.",
    "Bananas are a yellow fruit rich in potassium and vitamin B6.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Chronic kidney disease is associated with persistent inflammation and fibrosis.",
    "Macrophages and T cells infiltrate injured tissue and release cytokines.",
    "The committee postponed its decision on the new railway line until spring.",
    "A balanced diet includes vegetables, whole grains and lean protein.",
    "Glaciers retreat when summer melting exceeds winter snowfall over many years.",
    "The team won the championship after a dramatic penalty shoot-out.",
    "Transformers process tokens in parallel using self-attention over the whole sequence.",
    "Rubisco is the enzyme that attaches carbon dioxide to ribulose bisphosphate.",
    "Shade leaves have more chlorophyll per reaction centre than sun leaves.",
    "The museum's new wing displays ceramics from the Ming dynasty.",
)


def document_lengths(n: int, seed: int = 0) -> list[int]:
    """Target document lengths in tokens: lognormal(median 160, sigma 0.6) clipped to [16, 487], as PERF.md."""
    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(math.log(160), 0.6, n).astype(int), 16, 487)]


def rerank_workload(n_docs: int = 100, seed: int = 0, scale: float = 1.0) -> tuple[str, list[str]]:
    """(query, documents): documents of built-in sentences with about the rerank-100 token lengths.

    ``scale`` shrinks every length (e.g. 0.25 for a quick tuning pass). Words are ~1.3 tokens for
    English wordpiece/BPE vocabularies, so lengths are drawn in tokens and filled in words.
    """
    rng = np.random.default_rng(seed + 1)
    documents = []
    for tokens in document_lengths(n_docs, seed):
        words_wanted = max(4, int(tokens * scale / 1.3))
        words: list[str] = []
        while len(words) < words_wanted:
            words.extend(_SENTENCES[int(rng.integers(len(_SENTENCES)))].split())
        documents.append(" ".join(words[:words_wanted]))
    return QUERY, documents


@dataclass(frozen=True)
class Agreement:
    """How closely ``got`` follows ``reference`` (same documents, same order)."""

    pearson: float
    spearman: float
    mean_abs_delta: float
    max_abs_delta: float
    top10_overlap: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in vars(self).items()}


def compare_scores(reference: Sequence[float], got: Sequence[float], k: int = 10) -> Agreement:
    """Pearson and Spearman correlation, mean and max |Δ|, and the share of the reference top-k kept."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(got, dtype=np.float64)
    top = min(k, len(a))
    overlap = len(set(np.argsort(-a, kind="stable")[:top]) & set(np.argsort(-b, kind="stable")[:top])) / max(top, 1)
    return Agreement(
        pearson=_correlation(a, b), spearman=_correlation(ranks(a), ranks(b)),
        mean_abs_delta=float(np.mean(np.abs(a - b))), max_abs_delta=float(np.max(np.abs(a - b))), top10_overlap=overlap,
    )


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    result = np.empty(len(values), dtype=np.float64)
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            result[order[start:end]] = (start + end - 1) / 2.0
            start = end
    return result


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def interleaved_round_seconds(fns: dict[str, Callable[[], Any]], reps: int = 3, warmup: int = 0
                              ) -> dict[str, list[float]]:
    """Seconds of each function in each of ``reps`` rounds, after ``warmup`` untimed rounds.

    Turns, not one function after another: on a shared machine, load that comes and goes then hits
    every function alike, so the ratios hold even when the absolute figures drift.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, reps)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved_median_seconds(fns: dict[str, Callable[[], Any]], reps: int = 3, warmup: int = 0) -> dict[str, float]:
    """Median seconds of each function over ``reps`` interleaved rounds (:func:`interleaved_round_seconds`)."""
    return {name: statistics.median(t) for name, t in interleaved_round_seconds(fns, reps, warmup).items()}


def pairs_per_second(score: Callable[[], Any], pairs: int, reps: int = 3, warmup: int = 1) -> float:
    """Pairs per second of ``score()`` (median of ``reps`` timed runs after ``warmup``)."""
    return pairs / interleaved_median_seconds({"score": score}, reps, warmup)["score"]


def interleaved_pairs_per_second(
    rerankers: dict[str, Any], queries: Sequence[str], doc_lists: Sequence[Sequence[str]], repeats: int = 3,
    instruction: str | None = None,
) -> dict[str, float]:
    """Pairs per second of each reranker on the same requests, timed in turns (median of ``repeats``)."""
    pairs = sum(len(docs) for docs in doc_lists)
    query_list, doc_list = list(queries), [list(d) for d in doc_lists]
    fns = {name: functools.partial(reranker.score_many, query_list, doc_list, instruction=instruction)
           for name, reranker in rerankers.items()}
    return {name: pairs / seconds for name, seconds in interleaved_median_seconds(fns, repeats).items()}


def leading_pairs(requests: Iterable[tuple[str, Sequence[str]]], pairs: int) -> tuple[list[str], list[list[str]]]:
    """The first ``pairs`` (query, document) pairs of ``requests``, as ``score_many`` arguments.

    Example:
        >>> leading_pairs([("q1", ["a", "b"]), ("q2", ["c", "d"])], 3)
        (['q1', 'q2'], [['a', 'b'], ['c']])
    """
    queries: list[str] = []
    doc_lists: list[list[str]] = []
    n = 0
    for query, docs in requests:
        if n >= pairs:
            break
        take = list(docs)[: pairs - n]
        if take:
            queries.append(query)
            doc_lists.append(take)
            n += len(take)
    return queries, doc_lists


#: Files that hold a model's weights: what a deployment ships (ONNX external data included).
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".onnx", ".data"})


def weights_size_bytes(model_dir: str | Path) -> int:
    """Bytes of weight files under ``model_dir`` (tokenizer and config files not counted)."""
    return sum(f.stat().st_size for f in Path(model_dir).rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


def peak_rss_bytes() -> int:
    """This process's peak resident memory.

    Linux: VmHWM, because ru_maxrss survives execve and would report a parent's peak in a fresh
    subprocess. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    import resource
    import sys

    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
