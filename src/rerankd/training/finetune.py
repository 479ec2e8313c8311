"""``rerankd train``: fine-tune a cross-encoder on a BEIR dataset's qrels with mined hard negatives.

Example:
    >>> settings = FinetuneSettings(base=None, data="data/scifact", out="runs/ce")   # doctest: +SKIP
    >>> finetune(settings).best["ndcg@10"]                                             # doctest: +SKIP
    0.71
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rerankd.errors import InputError
from rerankd.training.data import (
    GroupSampler,
    SENTENCE_QUERY_PREFIX,
    TITLE_QUERY_PREFIX,
    QuerySplit,
    TrainingQuery,
    sentence_queries,
    split_queries,
    title_queries,
    training_queries,
)
from rerankd.training.instructions import InstructionDraw, load_draw
from rerankd.training.trainer import DevEvaluator, TextLookup, TrainConfig, seed_everything


@dataclass
class DataSettings:
    """Which data, how it is split, and where candidates come from (shared by train and distill)."""

    data: str
    split: str = "train"
    #: A qrels split to evaluate on; when absent, ``dev_fraction`` of the training queries is held out.
    dev_split: str | None = None
    dev_fraction: float = 0.2
    retriever: str = "bm25"
    dense_model: str | None = None
    pool_depth: int = 30
    eval_depth: int = 100
    #: Use only the first N training queries (sorted ids): quick runs and tests.
    max_train_queries: int | None = None
    max_dev_queries: int | None = None
    cache_dir: str | None = None
    #: Extra training queries: this many corpus titles, each with its own abstract as the positive.
    title_queries: int = 0
    #: Extra training queries: one sentence of this many abstracts, the rest of the document as the positive.
    sentence_queries: int = 0
    #: A file of task instructions, one per line: each query gets one (teacher and student alike).
    instructions: str | None = None


@dataclass
class PreparedData:
    dataset: Any
    split: QuerySplit
    qrels: dict[str, dict[str, int]]
    run: dict[str, dict[str, float]]
    texts: TextLookup
    #: Training queries beyond the qrels (corpus titles and sentences), with their pools.
    extra_queries: list[TrainingQuery] = field(default_factory=list)
    #: The per-query instruction draw (``--instructions``), if any.
    instructions: InstructionDraw | None = None

    def describe(self, settings: DataSettings) -> dict[str, Any]:
        titles = sum(q.qid.startswith(TITLE_QUERY_PREFIX) for q in self.extra_queries)
        sentences = sum(q.qid.startswith(SENTENCE_QUERY_PREFIX) for q in self.extra_queries)
        how = (f"qrels split '{settings.dev_split}'" if settings.dev_split else
               f"{settings.dev_fraction:.0%} of the '{settings.split}' queries held out (fixed seed; sorted ids, numpy permutation)")
        return {
            "dataset": settings.data,
            "training queries": f"{len(self.split.train)} (split '{settings.split}')",
            "dev queries": f"{len(self.split.dev)} ({how})",
            "candidates": f"{settings.retriever} top-{max(settings.pool_depth, settings.eval_depth)}"
                          + (" (English stemming, stopwords removed)" if settings.retriever == "bm25" else ""),
            "documents": "title + text",
            **({"title queries": f"{titles} corpus titles as extra training queries, each with its own abstract "
                                 "(title removed) as the positive and abstracts of its BM25 top documents as negatives; "
                                 "documents judged for dev queries are never a source"} if titles else {}),
            **({"sentence queries": f"{sentences} abstract sentences as extra training queries, each with the rest of its "
                                    "document (the sentence removed) as the positive and its BM25 top documents as negatives; "
                                    "documents judged for dev queries are never a source"} if sentences else {}),
            **({"instructions": f"{self.instructions.setting()} from {settings.instructions}, for teacher and student"}
               if self.instructions else {}),
        }


def prepare_data(settings: DataSettings, seed: int) -> PreparedData:
    """Load the dataset, split queries, and retrieve candidates for training pools and dev reranking."""
    from rerankd.evaluation.datasets import load_beir

    dataset = load_beir(settings.data, settings.split)
    qrels = {q: dict(d) for q, d in dataset.qrels.items()}
    if settings.dev_split:
        dev_set = load_beir(settings.data, settings.dev_split)
        split = QuerySplit(train=sorted(qrels), dev=sorted(dev_set.qrels))
        overlap = set(split.train) & set(split.dev)
        if overlap:
            raise InputError(f"{len(overlap)} queries are in both '{settings.split}' and '{settings.dev_split}'; the dev split must be held out")
        qrels.update({q: dict(d) for q, d in dev_set.qrels.items()})
        queries = {**dataset.queries, **dev_set.queries}
    else:
        split = split_queries(list(qrels), settings.dev_fraction, seed)
        queries = dict(dataset.queries)
    split = QuerySplit(train=split.train[: settings.max_train_queries], dev=split.dev[: settings.max_dev_queries])
    from rerankd.evaluation.first_stage import first_stage_retriever

    # One index (or corpus embedding) serves the qrels queries and the title queries.
    retriever = first_stage_retriever(settings.retriever, dataset.corpus, cache_dir=settings.cache_dir,
                                      dense_model=settings.dense_model)
    run = retriever.search({q: queries[q] for q in split.train + split.dev}, max(settings.pool_depth, settings.eval_depth))
    texts = TextLookup(queries={q: queries[q] for q in split.train + split.dev},
                       docs={d: doc.full_text for d, doc in dataset.corpus.items()})
    extra: list[TrainingQuery] = []
    dev_docs = {d for q in split.dev for d in qrels.get(q, {})}
    for count, make in ((settings.title_queries, title_queries), (settings.sentence_queries, sentence_queries)):
        if count:
            made = make(dataset.corpus, count, seed, dev_docs, retriever.search, settings.pool_depth)
            texts = TextLookup(queries={**texts.queries, **made.queries}, docs={**texts.docs, **made.docs})
            extra += made.training
    draw = load_draw(settings.instructions, seed)
    if draw is not None:
        texts.instructions = draw.per_query(texts.queries)
    return PreparedData(dataset, split, qrels, run, texts, extra, draw)


def sampler_for(prepared: PreparedData, settings: DataSettings, negatives: int, seed: int) -> GroupSampler:
    queries = training_queries(prepared.qrels, prepared.run, prepared.split.train, settings.pool_depth) + prepared.extra_queries
    judged_docs = {q: set(prepared.qrels.get(q, {})) for q in prepared.split.train}
    # A corpus query's source document, whole, is never a random negative of it (it holds the query).
    judged_docs.update({q.qid: {*q.positives, q.qid.split(":", 1)[1]} for q in prepared.extra_queries})
    # Random top-ups come from the real corpus only, so a qrels query never gets an abstract-only copy of a positive.
    return GroupSampler(queries, negatives, list(prepared.dataset.corpus), seed, judged_docs=judged_docs)


def dev_evaluator(prepared: PreparedData, settings: DataSettings) -> DevEvaluator | None:
    if not prepared.split.dev:
        return None
    return DevEvaluator(prepared.qrels, prepared.run, prepared.texts, prepared.split.dev, settings.eval_depth)


@dataclass
class FinetuneSettings:
    base: str | None
    out: str
    data: DataSettings
    loss: str = "listwise"
    negatives: int = 7
    #: The family the base trains as (see :func:`rerankd.training.models.load_trainable`).
    family: str = "auto"
    #: LoRA adapters instead of full fine-tuning (:mod:`rerankd.training.lora`).
    lora: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)


def finetune(settings: FinetuneSettings, *, resume: bool = False, progress: bool = True) -> Any:
    """Fine-tune ``settings.base`` (a cross-encoder, LLM yes/no reranker or bi-encoder) into ``settings.out``;
    returns a TrainResult."""
    from rerankd.training.card import ModelCard
    from rerankd.training.losses import supervised_loss
    from rerankd.training.lora import apply_lora
    from rerankd.training.models import load_trainable
    from rerankd.training.trainer import SupervisedObjective, Trainer

    loss = supervised_loss(settings.loss)
    prepared = prepare_data(settings.data, settings.train.seed)
    # Seeded before the model is built: a new classification head (or projection) is drawn from the RNG.
    seed_everything(settings.train.seed)
    model = load_trainable(settings.base, family=settings.family, max_length=settings.train.max_length)
    if settings.lora is not None:
        apply_lora(model, settings.lora)
    base_name = settings.base or "sentence-transformers/all-MiniLM-L6-v2 (bundled)"
    how = ("LoRA " + ", ".join(f"{k}={v}" for k, v in asdict(settings.lora).items()) + (" (merged)" if settings.lora.merge else
           " (saved as an adapter: `Reranker.from_pretrained(base, adapter=this folder)`)") + "; "
           if settings.lora is not None else "")

    def write_card(out_dir: Path, result: Any) -> None:
        ModelCard(
            title=f"{model.family.kind} fine-tuned from {base_name}",
            base_model=base_name,
            how=(f"Trained with `rerankd train` as a {model.family.kind} ({model.kind} head): {how}"
                 f"1 positive + {settings.negatives} hard negatives per group, {settings.loss} loss, "
                 f"bf16 autocast={settings.train.bf16}."),
            data=prepared.describe(settings.data),
            settings={"loss": settings.loss, "negatives": settings.negatives, "family": settings.family,
                      "lora": asdict(settings.lora) if settings.lora else None, **asdict(settings.data), **asdict(settings.train)},
            best=result.best, evals=result.evals, family=model.family.kind,
            adapter_base=str(model.source) if settings.lora is not None and not settings.lora.merge else None,
        ).write(out_dir)

    trainer = Trainer(
        model, SupervisedObjective(loss), sampler_for(prepared, settings.data, settings.negatives, settings.train.seed),
        prepared.texts, settings.train, Path(settings.out), dev_evaluator(prepared, settings.data), on_save=write_card,
    )
    return trainer.fit(resume=resume, progress=progress)
