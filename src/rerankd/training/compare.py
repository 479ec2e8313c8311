"""Teacher and students side by side: NDCG@10, MRR@10, pairs/s, parameters and size on disk.

Every model reranks the same first-stage candidates through the rerankd engine (what users will
run). Throughput is measured on one fixed slice of those pairs, the models interleaved and repeated
(median), because the cores are shared and a lone timing says little.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

METRICS = ("ndcg@10", "mrr@10")


@dataclass
class ModelRow:
    name: str
    ndcg10: float
    mrr10: float
    pairs_per_s: float | None
    parameters: int | None
    size_mb: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.name, "ndcg@10": self.ndcg10, "mrr@10": self.mrr10, "pairs/s": self.pairs_per_s,
                "parameters": self.parameters, "size_mb": self.size_mb}


def size_on_disk_mb(model_dir: Path) -> float:
    """Weights only, in MB: what a deployment ships."""
    from rerankd.measure import weights_size_bytes

    return weights_size_bytes(model_dir) / 1e6


def parameter_count(model_dir: Path) -> int:
    from rerankd._optional import require

    safetensors = require("safetensors")
    total = 0
    for path in Path(model_dir).rglob("*.safetensors"):
        with safetensors.safe_open(str(path), framework="numpy") as fh:
            for key in fh.keys():
                total += _prod(fh.get_slice(key).get_shape())
    return total


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for n in shape:
        out *= int(n)
    return out


def rerank_run(reranker: Any, texts: Any, candidates: Mapping[str, Sequence[str]], progress: bool = False) -> dict[str, dict[str, float]]:
    """Raw scores of each query's candidates, each query under its own instruction (if the texts give one)."""
    instructions = getattr(texts, "instructions", None) or {}
    run: dict[str, dict[str, float]] = {}
    for task in dict.fromkeys(instructions.get(q) for q in sorted(candidates)):
        qids = [q for q in sorted(candidates) if instructions.get(q) == task]
        results = reranker.score_many([texts.queries[q] for q in qids], [[texts.docs[d] for d in candidates[q]] for q in qids],
                                      instruction=task, progress=progress)
        run.update({q: {d: float(s) for d, s in zip(candidates[q], r.raw)} for q, r in zip(qids, results)})
    return run


def metrics_of(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    from rerankd.evaluation.metrics import evaluate

    result = evaluate({q: dict(qrels[q]) for q in run}, {q: dict(r) for q, r in run.items()}, metrics=METRICS)
    return {m: float(result.mean[m]) for m in METRICS}


def pairs_per_second(rerankers: Mapping[str, Any], texts: Any, candidates: Mapping[str, Sequence[str]], pairs: int, repeats: int) -> dict[str, float]:
    """Pairs per second of each reranker on the same slice, interleaved, median of ``repeats``."""
    from rerankd.measure import interleaved_pairs_per_second, leading_pairs

    requests = ((texts.queries[q], [texts.docs[d] for d in candidates[q]]) for q in sorted(candidates))
    queries, doc_texts = leading_pairs(requests, pairs)
    return interleaved_pairs_per_second(dict(rerankers), queries, doc_texts, repeats)


def compare_models(
    models: Mapping[str, str],
    texts: Any,
    qrels: Mapping[str, Mapping[str, int]],
    candidates: Mapping[str, Sequence[str]],
    *,
    dtype: str | None = None,
    max_length: int | None = None,
    throughput_pairs: int = 512,
    repeats: int = 3,
    progress: bool = True,
) -> list[ModelRow]:
    """Rerank ``candidates`` with each model (name → directory or hub id) and measure it."""
    from rerankd.engine import Reranker
    from rerankd.hub import resolve_model

    loaded = {name: Reranker.from_pretrained(path or None, dtype=dtype, max_length=max_length) for name, path in models.items()}
    quality = {}
    for name, reranker in loaded.items():
        if progress:
            print(f"reranking the dev candidates with {name}", flush=True)
        quality[name] = metrics_of(qrels, rerank_run(reranker, texts, candidates, progress=progress))
    speed = pairs_per_second(loaded, texts, candidates, throughput_pairs, repeats)
    rows = []
    for name, path in models.items():
        shipped, _ = resolve_model(path or None)  # an adapter folder ships alone; its parameters are the merged model's
        rows.append(ModelRow(name, quality[name]["ndcg@10"], quality[name]["mrr@10"], speed[name],
                             parameter_count(Path(loaded[name].family.model_dir)), size_on_disk_mb(shipped)))
    return rows


def first_stage_row(name: str, qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                    candidates: Mapping[str, Sequence[str]]) -> ModelRow:
    """The first stage's own ranking of the candidates, as a row."""
    metrics = metrics_of(qrels, {q: {d: run[q][d] for d in candidates[q]} for q in candidates})
    return ModelRow(name, metrics["ndcg@10"], metrics["mrr@10"], None, None, None)


def models_table(rows: Sequence[ModelRow]) -> str:
    lines = ["| model | NDCG@10 | MRR@10 | pairs/s | parameters | size (MB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        speed = f"{r.pairs_per_s:.1f}" if r.pairs_per_s is not None else "—"
        params = f"{r.parameters / 1e6:.1f}M" if r.parameters is not None else "—"
        size = f"{r.size_mb:.1f}" if r.size_mb is not None else "—"
        lines.append(f"| {r.name} | {r.ndcg10:.4f} | {r.mrr10:.4f} | {speed} | {params} | {size} |")
    return "\n".join(lines)


def plot_comparison(path: Path, rows: Sequence[ModelRow], title: str) -> None:
    """Quality (NDCG@10, MRR@10) and pairs/s of each row, side by side."""
    from rerankd._optional import require

    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.6 * len(rows) + 2.2))
    ys = list(range(len(rows)))
    left.barh([y - 0.2 for y in ys], [r.ndcg10 for r in rows], height=0.4, label="NDCG@10")
    left.barh([y + 0.2 for y in ys], [r.mrr10 for r in rows], height=0.4, label="MRR@10")
    left.set_yticks(ys, names)
    left.invert_yaxis()
    left.set_xlim(0, 1)
    left.legend(loc="lower right")
    left.set_title("quality")
    speeds = [r.pairs_per_s or 0.0 for r in rows]
    right.barh(ys, speeds, color="tab:green")
    right.set_yticks(ys, ["" for _ in names])
    right.invert_yaxis()
    right.set_title("pairs/s (interleaved, median)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_comparison(out_dir: Path, rows: Sequence[ModelRow], header: str, stem: str = "comparison") -> dict[str, Path]:
    """``OUT/comparison.{md,json,png}``: the table with its header line, the rows, the chart."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "json": out_dir / f"{stem}.json", "png": out_dir / f"{stem}.png"}
    paths["md"].write_text(header + "\n\n" + models_table(rows) + "\n", encoding="utf-8")
    paths["json"].write_text(json.dumps({"header": header, "rows": [r.as_dict() for r in rows]}, indent=2), encoding="utf-8")
    plot_comparison(paths["png"], rows, header if len(header) < 90 else header[:87] + "...")
    return paths


@dataclass
class HeldOut:
    """The queries a comparison reranks (never trained on), their first-stage candidates and texts."""

    description: str
    qrels: dict[str, dict[str, int]]
    run: dict[str, dict[str, float]]
    candidates: dict[str, list[str]]
    texts: Any


def held_out(data: Any, seed: int, depth: int, split: str | None = None) -> HeldOut:
    """The dev split of a run's data settings, or (``split``) a qrels split such as BEIR's ``test``.

    A qrels split must not share a query with the training split (refused, naming the count).
    """
    import dataclasses

    from rerankd.errors import InputError
    from rerankd.training.data import ranked_ids
    from rerankd.training.finetune import prepare_data

    if split is None:
        settings = dataclasses.replace(data, eval_depth=max(data.eval_depth, depth), title_queries=0, sentence_queries=0)
        prepared = prepare_data(settings, seed)
        dev = prepared.split.dev
        if not dev:
            raise InputError("the comparison needs held-out queries: set --dev-fraction above 0, --dev-split or --compare-split")
        return HeldOut(f"dev split: {len(dev)} held-out queries", {q: prepared.qrels[q] for q in dev},
                       {q: prepared.run[q] for q in dev}, {q: ranked_ids(prepared.run, q, depth) for q in dev}, prepared.texts)
    from rerankd.evaluation.datasets import load_beir
    from rerankd.evaluation.first_stage import first_stage_retriever
    from rerankd.training.instructions import load_draw
    from rerankd.training.trainer import TextLookup

    test = load_beir(data.data, split)
    trained_on = set(load_beir(data.data, data.split).qrels) if split != data.split else set(test.qrels)
    shared = set(test.qrels) & trained_on
    if shared:
        raise InputError(f"{len(shared)} queries of split '{split}' are in the training split '{data.split}'; "
                         "compare on a split the training never saw")
    queries = {q: test.queries[q] for q in sorted(test.qrels)[: data.max_dev_queries]}
    retriever = first_stage_retriever(data.retriever, test.corpus, cache_dir=data.cache_dir, dense_model=data.dense_model)
    run = retriever.search(queries, depth)
    draw = load_draw(data.instructions, seed)
    texts = TextLookup(queries, {d: doc.full_text for d, doc in test.corpus.items()}, draw.per_query(queries) if draw else {})
    return HeldOut(f"split '{split}': {len(queries)} queries", {q: dict(test.qrels[q]) for q in queries}, run,
                   {q: ranked_ids(run, q, depth) for q in queries}, texts)


def compare_run(out_dir: Path, models: Mapping[str, str], data: Any, seed: int, *, depth: int = 100,
                split: str | None = None, throughput_pairs: int = 512, repeats: int = 3, progress: bool = True) -> list[ModelRow]:
    """What every ``train``/``distill`` run ends with: the first stage and each model on held-out queries,
    written to ``OUT/comparison.{md,json,png}``."""
    held = held_out(data, seed, depth, split)
    first = f"{data.retriever} first stage" + (" (stemmed)" if data.retriever == "bm25" else "")
    rows = [first_stage_row(first, held.qrels, held.run, held.candidates)]
    rows += compare_models(models, held.texts, held.qrels, held.candidates, throughput_pairs=throughput_pairs,
                           repeats=repeats, progress=progress)
    header = (f"{Path(data.data).name}, {held.description} (never trained on); every reranker reorders the {first}'s "
              f"top-{depth}; pairs/s on the same {throughput_pairs} pairs, models interleaved, median of {repeats}.")
    write_comparison(out_dir, rows, header)
    return rows
