"""First stage → rerank with one or more model/backend/precision candidates → metrics, paired tests, speed.

``rerankd eval run`` is this with one candidate; ``rerankd eval compare`` with several, their speed
measured on one fixed slice of the same pairs, the candidates interleaved and repeated (median),
because the cores are shared and a lone timing says little.

Example:
    >>> specs = [parse_candidate("name=cross-encoder/ms-marco-MiniLM-L-6-v2,dtype=bf16"),
    ...          parse_candidate("name=cross-encoder/ms-marco-MiniLM-L-6-v2,backend=onnx,dtype=int8")]
    >>> evaluation = evaluate_candidates(data, "bm25", bm25_run, specs, out_dir="out")     # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rerankd.errors import InputError
from rerankd.evaluation.datasets import BeirDataset, Run
from rerankd.evaluation.metrics import DEFAULT_METRICS, EvalResult, evaluate
from rerankd.evaluation.rerank_run import DEFAULT_CHUNK_PAIRS, candidate_lists, rerank
from rerankd.score_cache import score_settings
from rerankd.evaluation.stats import PairedTest, paired_test

_CANDIDATE_KEYS = ("name", "model", "backend", "dtype", "label", "max_length", "device")
_SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class Candidate:
    """One way of running a model: which weights, which backend, which precision."""

    model: str | None = None
    backend: str = "torch"
    dtype: str | None = None
    label: str = ""
    max_length: int | None = None
    device: str | None = None

    @property
    def title(self) -> str:
        return self.title_for(self.dtype)

    def title_for(self, resolved_dtype: str | None) -> str:
        """The label, or ``"<model> <backend>/<dtype>"`` with the precision the backend actually runs."""
        if self.label:
            return self.label
        name = Path(self.model).name if self.model else "bundled"
        dtype = resolved_dtype or self.dtype or "auto"
        return f"{name} {self.backend}/{_SHORT_DTYPES.get(dtype, dtype)}"

    def load(self, batch_tokens: int | None = None) -> Any:
        from rerankd.engine import Reranker

        return Reranker.from_pretrained(self.model, backend=self.backend, dtype=self.dtype, device=self.device,
                                        max_length=self.max_length, batch_tokens=batch_tokens)


def parse_candidate(spec: str) -> Candidate:
    """``name=MODEL[,backend=onnx][,dtype=int8][,label=TEXT][,max_length=N][,device=cpu]``, or just ``MODEL``.

    ``name=`` (empty) or ``name=bundled`` is the bundled all-MiniLM-L6-v2.

    Example:
        >>> parse_candidate("name=BAAI/bge-reranker-base,backend=onnx,dtype=int8").backend
        'onnx'
    """
    if "=" not in spec:
        return Candidate(model=spec.strip() or None)
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in _CANDIDATE_KEYS:
            raise InputError(f"candidate {spec!r}: {part!r} is not KEY=VALUE with KEY one of {', '.join(_CANDIDATE_KEYS)}")
        fields["model" if key == "name" else key] = value.strip()
    max_length = fields.get("max_length")
    if max_length is not None and not max_length.isdigit():
        raise InputError(f"candidate {spec!r}: max_length must be a positive integer, got {max_length!r}")
    model = fields.get("model") or None
    return Candidate(model=None if model == "bundled" else model, backend=fields.get("backend") or "torch",
                     dtype=fields.get("dtype") or None, label=fields.get("label", ""),
                     max_length=int(max_length) if max_length else None, device=fields.get("device") or None)


@dataclass
class SystemResult:
    """One ranked list per query and its metrics: the first stage or one reranking candidate."""

    label: str
    settings: dict[str, Any]
    run: Run
    result: EvalResult
    pairs_per_s: float | None = None
    tests: dict[str, dict[str, PairedTest]] = field(default_factory=dict)  # against → metric → test


@dataclass
class Evaluation:
    dataset: str
    split: str
    depth: int
    metrics: list[str]
    first_stage: SystemResult
    rerankers: list[SystemResult]
    speed_note: str = ""

    @property
    def queries(self) -> int:
        return self.first_stage.result.queries


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def evaluate_candidates(
    data: BeirDataset,
    first_stage_label: str,
    first_run: Run,
    candidates: Sequence[Candidate],
    *,
    out_dir: str | Path,
    depth: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
    batch_tokens: int | None = None,
    throughput_pairs: int = 0,
    repeats: int = 3,
    instruction: str | None = None,
    progress: bool = True,
    rerankers: Sequence[Any] | None = None,
    chunking: Any = None,
    engine: Any = None,
) -> Evaluation:
    """Rerank ``first_run``'s top-``depth`` with every candidate and measure it all.

    Scores are cached in ``out_dir/scores/<label>.jsonl`` so an interrupted evaluation resumes.
    ``throughput_pairs > 0`` times every candidate on the same first pairs (interleaved, median of
    ``repeats``); otherwise pairs/s is that of the rerank itself (absent when it came from cache).
    ``rerankers`` passes already loaded models, one per candidate; ``engine`` scores their chunks
    (see :func:`rerankd.evaluation.rerank_run.rerank`).
    """
    if not candidates:
        raise InputError("no candidate to evaluate; give at least one model")
    out = Path(out_dir)
    first_cut = {q: {d: first_run[q][d] for d in docs} for q, docs in candidate_lists(first_run, depth).items() if q in data.queries}
    first = SystemResult(first_stage_label, {"first_stage": first_stage_label, "depth": depth}, first_cut,
                         evaluate(data.qrels, first_cut, metrics))
    loaded = list(rerankers) if rerankers is not None else []
    loaded += [candidate.load(batch_tokens) for candidate in candidates[len(loaded):]]
    settings = [score_settings(reranker, instruction=instruction, chunking=chunking) for reranker in loaded]
    labels = [c.title_for(s["dtype"]) for c, s in zip(candidates, settings)]
    if len(set(labels)) != len(labels):
        raise InputError(f"two candidates share a label ({labels}); give each a distinct label=...")
    systems = []
    for reranker, label, setting in zip(loaded, labels, settings):
        outcome = rerank(reranker, data.queries, data.corpus, first_cut, depth=depth, chunk_pairs=chunk_pairs,
                         cache_path=out / "scores" / f"{slug(label)}.jsonl", instruction=instruction,
                         progress=progress, label=label, chunking=chunking, engine=engine)
        systems.append(SystemResult(label, setting, outcome.run, evaluate(data.qrels, outcome.run, metrics),
                                    outcome.pairs_per_s))
    note = "pairs/s of the rerank itself (cached pairs not timed)"
    if throughput_pairs > 0:
        speeds = throughput(loaded, data, first_cut, throughput_pairs, repeats, instruction)
        for system, speed in zip(systems, speeds):
            system.pairs_per_s = speed
        note = f"pairs/s on the same first {throughput_pairs} pairs, candidates interleaved, median of {repeats}"
    for system in systems:
        system.tests[first.label] = {m: paired_test(first.result, system.result, m) for m in metrics}
        if system is not systems[0]:
            system.tests[systems[0].label] = {m: paired_test(systems[0].result, system.result, m) for m in metrics}
    return Evaluation(data.name, data.split, depth, [m.lower() for m in metrics], first, systems, note)


def throughput(rerankers: Sequence[Any], data: BeirDataset, candidates: Run, pairs: int, repeats: int,
               instruction: str | None = None) -> list[float]:
    """Pairs per second of each reranker on the same first ``pairs`` pairs (query order), interleaved."""
    from rerankd.measure import interleaved_pairs_per_second, leading_pairs

    requests = ((data.queries[qid], [data.corpus[d].document() for d in docs if data.corpus[d].has_content])
                for qid, docs in sorted(candidate_lists(candidates, None).items()))
    queries, doc_lists = leading_pairs(requests, pairs)
    if not queries:
        raise InputError("no candidate pair to time")

    speeds = interleaved_pairs_per_second(dict(enumerate(rerankers)), queries, doc_lists, repeats, instruction)
    return [speeds[i] for i in range(len(rerankers))]
