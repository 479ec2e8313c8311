"""rerankd train: end to end on a tiny BERT and a slice of SciFact, exact resume, losses, data."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from tiny_models import DATA, skip_without_shared

SCIFACT = DATA / "scifact"
SLICE = ["--data", str(SCIFACT), "--max-train-queries", "16", "--max-dev-queries", "6", "--eval-depth", "8",
         "--negatives", "3", "--max-length", "64", "--groups-per-batch", "4", "--no-progress"]


@pytest.fixture(scope="module")
def bare_encoder(bi_encoder: Path) -> Path:
    """A BertModel without a classification head (the bi-encoder's transformer), like all-MiniLM-L6-v2."""
    return bi_encoder.parent / (bi_encoder.name + "-raw")


def _train(base: Path, out: Path, *extra: str) -> int:
    from rerankd.cli import main

    skip_without_shared("data/scifact")
    return main(["train", "--base", str(base), "--out", str(out), "--epochs", "2", *SLICE, *extra])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(bare_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "ce"
    assert _train(bare_encoder, out) == 0
    return out


def test_train_writes_model_card_curves_and_best_model(trained: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "steps.csv", "evals.csv", "curves.png",
                 "training_args.json", "checkpoint/state.pt", "comparison.md", "comparison.json", "comparison.png"):
        assert (trained / name).is_file(), name
    # The closing comparison: the first stage and the trained model on the held-out dev queries (a bare
    # encoder base is no reranker, so it has no row).
    rows = json.loads((trained / "comparison.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["bm25 first stage (stemmed)", "trained"] and rows[1]["pairs/s"] > 0
    evals = _rows(trained / "evals.csv")
    assert [int(r["epoch"]) for r in evals] == [1, 2]
    card = (trained / "README.md").read_text()
    assert "Dev metrics" in card and "held out" in card and "ndcg@10" in card
    # The card names the epoch that was kept: the first with the best dev NDCG@10 of evals.csv.
    best = max(evals, key=lambda r: float(r["ndcg@10"]))
    assert f"Kept: epoch {best['epoch']} (best NDCG@10 on the dev split, {float(best['ndcg@10']):.4f})." in card
    steps = _rows(trained / "steps.csv")
    assert len(steps) == 2 * 5 and all(np.isfinite(float(r["loss"])) for r in steps)


def test_trained_model_loads_in_rerankd_and_sentence_transformers(trained: Path) -> None:
    from sentence_transformers import CrossEncoder

    from rerankd import Reranker

    reranker = Reranker.from_pretrained(str(trained), dtype="fp32", device="cpu")
    assert reranker.family.kind == "cross-encoder"
    query, docs = "vitamin D and bone density", ["Vitamin D supplements increase bone density.", "Bananas are yellow."]
    ours = reranker.score(query, docs)
    theirs = CrossEncoder(str(trained), device="cpu").predict([(query, d) for d in docs])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_resumed_run_equals_uninterrupted(bare_encoder: Path, trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    assert _train(bare_encoder, out, "--stop-after", "3") == 0
    assert len(_rows(out / "steps.csv")) == 3
    assert _train(bare_encoder, out, "--resume") == 0
    assert _rows(out / "steps.csv") == _rows(trained / "steps.csv")
    assert _rows(out / "evals.csv") == _rows(trained / "evals.csv")
    from safetensors.numpy import load_file

    a, b = load_file(str(trained / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(bare_encoder: Path, tmp_path: Path) -> None:
    from rerankd.cli import main

    out = tmp_path / "r"
    assert _train(bare_encoder, out, "--stop-after", "1") == 0
    assert main(["train", "--base", str(bare_encoder), "--out", str(out), "--epochs", "3", "--resume", *SLICE]) == 2


def test_split_is_fixed_by_seed_and_disjoint() -> None:
    from rerankd.training.data import split_queries

    ids = [f"q{i}" for i in range(100)]
    a, b = split_queries(ids, 0.2, seed=0), split_queries(list(reversed(ids)), 0.2, seed=0)
    assert a == b and len(a.dev) == 20 and not set(a.dev) & set(a.train)
    assert split_queries(ids, 0.2, seed=1).dev != a.dev


def test_negatives_exclude_judged_documents_and_are_reproducible() -> None:
    from rerankd.training.data import GroupSampler, training_queries

    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d5": 1}}
    run = {"q1": {"d1": 9.0, "d2": 8.0, "d3": 7.0, "d4": 6.0}, "q2": {"d5": 3.0, "d1": 2.0}}
    queries = training_queries(qrels, run, ["q1", "q2"], pool_depth=10)
    assert queries[0].pool == ["d3", "d4"] and queries[1].pool == ["d1"]
    corpus = [f"d{i}" for i in range(1, 9)]
    sampler = GroupSampler(queries, 3, corpus, seed=0, judged_docs={q: set(qrels[q]) for q in qrels})
    groups = sampler.epoch(0)
    assert groups == sampler.epoch(0)
    for g in groups:
        assert g.doc_ids[0] in qrels[g.qid] and len(set(g.doc_ids)) == 4
        assert not set(g.doc_ids[1:]) & set(qrels[g.qid])


# -- training learns: dev NDCG@10 above the untrained model's, on data a tiny model can learn ---------


LANDFORMS = ("river mountain forest ocean desert valley island glacier canyon meadow volcano prairie lagoon tundra "
             "delta plateau marsh reef savanna fjord").split()


def write_learnable_beir(root: Path, topics: int = 80, seed: int = 0) -> Path:
    """A BEIR folder where relevance is learnable in a few steps: each query's six documents share its
    words (so BM25 retrieves them together), and only the judged one says "confirmed evidence"."""
    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for t in range(topics):
        topic = f"{LANDFORMS[t % 20]} {LANDFORMS[(7 * t + 3) % 20]} {t}"
        queries.append({"_id": f"q{t}", "text": f"what about the {topic}"})
        for k in range(6):
            tail = "this is confirmed evidence" if k == 0 else "this is unrelated noise"
            words = " ".join(rng.choice(LANDFORMS) for _ in range(6))
            corpus.append({"_id": f"d{t}-{k}", "title": "", "text": f"a report on the {topic} {words} {tail}"})
        qrels.append(f"q{t}\td{t}-0\t1")
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    return root


def small_bert_encoder(out: Path) -> Path:
    """A 2-layer BERT at the usual 0.02 init (the shared tiny models use a large init for parity tests,
    which trains poorly), on the bundled model's uncased vocabulary: nothing from ../shared."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rerankd.errors import MissingDependencyError
    from rerankd.hub import bundled_model_dir

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_dir()))
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, initializer_range=0.02)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.slow
def test_training_lifts_dev_ndcg_above_the_untrained_model(tmp_path: Path) -> None:
    from rerankd.cli import main
    from rerankd.training.finetune import DataSettings, dev_evaluator, prepare_data
    from rerankd.training.models import load_trainable
    from rerankd.training.trainer import seed_everything

    data, base, out = write_learnable_beir(tmp_path / "beir"), small_bert_encoder(tmp_path / "base"), tmp_path / "ce"
    # The untrained model is the one the trainer starts from: same split, same seed, same new head.
    settings = DataSettings(str(data), dev_fraction=0.25, eval_depth=8)
    evaluator = dev_evaluator(prepare_data(settings, seed=0), settings)
    assert evaluator is not None
    seed_everything(0)
    before = evaluator(load_trainable(base, max_length=64), 64, False)["ndcg@10"]

    assert main(["train", "--base", str(base), "--out", str(out), "--data", str(data), "--dev-fraction", "0.25",
                 "--eval-depth", "8", "--negatives", "3", "--groups-per-batch", "4", "--max-length", "64", "--epochs", "1",
                 "--lr", "1e-2", "--seed", "0", "--no-bf16", "--no-progress"]) == 0
    after = float(_rows(out / "evals.csv")[-1]["ndcg@10"])
    assert after >= before + 0.2 and after >= 0.8, f"dev NDCG@10 {before:.3f} before training, {after:.3f} after"
    # The saved model is the trained one: rerankd ranks the confirmed document first.
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(out, device="cpu", dtype="fp32")
    docs = [f"a report on the {LANDFORMS[3]} river 3 this is unrelated noise",
            f"a report on the {LANDFORMS[3]} river 3 this is confirmed evidence"]
    assert reranker.rank(f"what about the {LANDFORMS[3]} river 3", docs).results[0].index == 1


def test_title_queries_use_abstracts_only_and_never_dev_documents() -> None:
    from rerankd.evaluation.datasets import Doc
    from rerankd.training.data import title_queries

    corpus = {f"d{i}": Doc(f"title {i}", f"abstract {i}") for i in range(10)}
    corpus["d9"] = Doc("", "no title")
    depths: list[int] = []

    def run_for(queries: dict[str, str], depth: int) -> dict[str, dict[str, float]]:
        depths.append(depth)  # every document matches, the source first
        return {q: {q.split(":")[1]: 10.0, **{f"d{i}": float(i) for i in range(9)}} for q in queries}

    made = title_queries(corpus, 100, seed=0, exclude_docs={"d0", "d1"}, run_for=run_for, pool_depth=4)
    assert sorted(made.queries) == [f"title:d{i}" for i in range(2, 9)]  # no dev-judged source, no untitled doc
    assert depths == [5]  # one search, one deeper than the pool: the source is among the hits
    for q in made.training:
        source = q.qid.split(":")[1]
        assert made.queries[q.qid] == corpus[source].title and q.positives == [f"body:{source}"]
        assert len(q.pool) == 4 and f"body:{source}" not in q.pool and all(d.startswith("body:") for d in q.pool)
    assert all(text.startswith("abstract") for text in made.docs.values())
    again = title_queries(corpus, 3, seed=0, exclude_docs=set(), run_for=run_for, pool_depth=4)
    assert again.queries == title_queries(corpus, 3, seed=0, exclude_docs=set(), run_for=run_for, pool_depth=4).queries
    assert len(again.queries) == 3


def test_sentence_queries_cut_the_sentence_from_the_positive_and_never_use_dev_documents() -> None:
    from rerankd.evaluation.datasets import Doc
    from rerankd.training.data import sentence_queries, split_sentences

    assert split_sentences("One two. Three (four) five! 6 are here? yes") == ["One two.", "Three (four) five!", "6 are here? yes"]
    long = "word " * 8
    corpus = {f"d{i}": Doc(f"title {i}", f"First {long}of {i}. Second {long}of {i}. Third of {i}.") for i in range(10)}
    corpus["d8"] = Doc("short", "Only one sentence of enough words to be usable here.")  # one sentence: not a source
    corpus["d9"] = Doc("short", f"Tiny. Also tiny. {'many ' * 40}words.")  # no sentence of 8 to 32 words
    depths: list[int] = []

    def run_for(queries: dict[str, str], depth: int) -> dict[str, dict[str, float]]:
        depths.append(depth)
        return {q: {q.split(":")[1]: 10.0, **{f"d{i}": float(i) for i in range(10)}} for q in queries}

    made = sentence_queries(corpus, 100, seed=0, exclude_docs={"d0", "d1"}, run_for=run_for, pool_depth=4)
    assert sorted(made.queries) == [f"sentence:d{i}" for i in range(2, 8)]
    assert depths == [5]
    for q in made.training:
        source = q.qid.split(":")[1]
        sentence, rest = made.queries[q.qid], made.docs[f"rest:{source}"]
        assert sentence in split_sentences(corpus[source].text) and 8 <= len(sentence.split()) <= 32
        assert sentence not in rest and rest.startswith(corpus[source].title)
        assert len(split_sentences(rest[len(corpus[source].title):])) == 2
        assert q.positives == [f"rest:{source}"] and source not in q.pool and len(q.pool) == 4
    again = sentence_queries(corpus, 3, seed=0, exclude_docs=set(), run_for=run_for, pool_depth=4)
    assert again.queries == sentence_queries(corpus, 3, seed=0, exclude_docs=set(), run_for=run_for, pool_depth=4).queries
    other = sentence_queries(corpus, 100, seed=1, exclude_docs={"d0", "d1"}, run_for=run_for, pool_depth=4)
    assert other.queries != made.queries  # another seed draws other sentences


def test_train_with_sentence_queries_trains_on_them(bare_encoder: Path, tmp_path: Path) -> None:
    from rerankd.training.finetune import DataSettings, prepare_data, sampler_for

    skip_without_shared("data/scifact")
    settings = DataSettings(str(SCIFACT), max_train_queries=4, max_dev_queries=3, eval_depth=5, title_queries=5,
                            sentence_queries=12)
    prepared = prepare_data(settings, seed=0)
    groups = sampler_for(prepared, settings, negatives=3, seed=0).epoch(0)
    sentence_groups = [g for g in groups if g.qid.startswith("sentence:")]
    assert len(sentence_groups) == 12 and len([g for g in groups if g.qid.startswith("title:")]) == 5
    dev_docs = {d for q in prepared.split.dev for d in prepared.qrels[q]}
    for g in sentence_groups:
        source = g.qid.split(":")[1]
        assert source not in dev_docs and g.doc_ids[0] == f"rest:{source}" and source not in g.doc_ids[1:]
        assert prepared.texts.queries[g.qid] not in prepared.texts.docs[g.doc_ids[0]]
    # (a sentence query is up to 32 words: the slice's 64 tokens per pair would not hold one with a document)
    assert _train(bare_encoder, tmp_path / "ce", "--sentence-queries", "12", "--epochs", "1", "--max-length", "128") == 0
    assert "12 abstract sentences" in (tmp_path / "ce" / "README.md").read_text()


def test_train_with_title_queries_trains_on_them(bare_encoder: Path, tmp_path: Path) -> None:
    from rerankd.training.finetune import DataSettings, prepare_data, sampler_for

    skip_without_shared("data/scifact")
    settings = DataSettings(str(SCIFACT), max_train_queries=4, max_dev_queries=3, eval_depth=5, title_queries=12)
    prepared = prepare_data(settings, seed=0)
    sampler = sampler_for(prepared, settings, negatives=3, seed=0)
    title_groups = [g for g in sampler.epoch(0) if g.qid.startswith("title:")]
    assert len(title_groups) == 12 and all(len(g.doc_ids) == 4 for g in title_groups)
    dev_docs = {d for q in prepared.split.dev for d in prepared.qrels[q]}
    assert not {g.qid.split(":")[1] for g in title_groups} & dev_docs
    assert _train(bare_encoder, tmp_path / "ce", "--title-queries", "12", "--epochs", "1") == 0
    assert "12 corpus titles" in (tmp_path / "ce" / "README.md").read_text()


def test_loss_preconditions_and_values() -> None:
    import torch

    from rerankd.errors import InputError
    from rerankd.training.losses import (
        BinaryCrossEntropyLoss, FeatureLoss, ListwiseKLLoss, ListwiseSoftmaxLoss, MarginMSELoss, WeightSchedule, supervised_loss,
    )

    with pytest.raises(InputError):
        ListwiseKLLoss(temperature=0)
    with pytest.raises(InputError):
        FeatureLoss(8, 16, [(1, 1)], kind="l1")
    with pytest.raises(InputError):
        FeatureLoss(8, 16, [])
    with pytest.raises(InputError):
        WeightSchedule(0.3, 1.5)
    with pytest.raises(InputError):
        supervised_loss("pairwise")
    with pytest.raises(InputError):
        ListwiseSoftmaxLoss()(torch.zeros(4))
    teacher = torch.tensor([[3.0, 1.0, -2.0]])
    assert float(MarginMSELoss()(teacher + 5.0, teacher)) == pytest.approx(0.0)  # margins, not scale
    assert float(MarginMSELoss()(-teacher, teacher)) > 1.0
    assert float(ListwiseKLLoss(2.0)(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    good, bad = torch.tensor([[4.0, -4.0, -4.0]]), torch.tensor([[-4.0, 4.0, 4.0]])
    for loss in (ListwiseSoftmaxLoss(), BinaryCrossEntropyLoss()):
        assert float(loss(good)) < float(loss(bad))
