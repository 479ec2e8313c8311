"""A user-supplied BEIR test split: `rerankd eval --split test` reads it; a missing split fails naming the ones there;
`train`/`distill --compare-split test` compare on it and refuse one that shares queries with training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_beir(root: Path, splits: dict[str, range]) -> Path:
    """A small BEIR folder: query i's relevant document says the query's words; every split its own queries."""
    (root / "qrels").mkdir(parents=True)
    words = "river mountain forest ocean desert valley island glacier canyon meadow volcano prairie".split()
    queries, corpus = [], []
    for i in range(max(r.stop for r in splits.values())):
        topic = f"{words[i % 12]} {words[(5 * i + 1) % 12]}"
        queries.append({"_id": f"q{i}", "text": f"facts about the {topic}"})
        corpus.append({"_id": f"d{i}", "title": topic, "text": f"the {topic} is described here in detail"})
        corpus.append({"_id": f"n{i}", "title": "", "text": f"unrelated notes on {words[(i + 3) % 12]}"})
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus) + "\n")
    for split, ids in splits.items():
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in ids))
    return root


def test_eval_on_a_user_supplied_test_split(bert_ce: Path, tmp_path: Path) -> None:
    from rerankd.cli import main

    data = write_beir(tmp_path / "beir", {"train": range(0, 8), "test": range(8, 14)})
    out = tmp_path / "eval"
    assert main(["eval", "run", "--data", str(data), "--split", "test", "-m", str(bert_ce), "--k", "5", "--out", str(out),
                 "--no-charts", "--no-progress", "--dtype", "fp32"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.dumps(metrics).count('"q8"') >= 1 and '"q0"' not in json.dumps(metrics)  # test queries only


def test_missing_split_fails_naming_the_splits_there(bert_ce: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rerankd.cli import main

    data = write_beir(tmp_path / "beir", {"train": range(0, 8)})
    assert main(["eval", "run", "--data", str(data), "--split", "test", "-m", str(bert_ce), "--out", str(tmp_path / "e"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has no qrels/test.tsv; available splits: ['train']" in err and "add qrels/test.tsv" in err


def test_training_compares_on_the_test_split_and_refuses_an_overlapping_one(bert_ce: Path, tmp_path: Path) -> None:
    from rerankd.errors import InputError
    from rerankd.training.compare import held_out
    from rerankd.training.finetune import DataSettings

    data = write_beir(tmp_path / "beir", {"train": range(0, 8), "test": range(8, 14), "leaky": range(6, 10)})
    held = held_out(DataSettings(str(data)), seed=0, depth=5, split="test")
    assert sorted(held.qrels) == sorted(f"q{i}" for i in range(8, 14)) and all(len(c) == 5 for c in held.candidates.values())
    with pytest.raises(InputError, match="2 queries of split 'leaky' are in the training split 'train'"):
        held_out(DataSettings(str(data)), seed=0, depth=5, split="leaky")

    from rerankd.cli import main

    out = tmp_path / "ce"
    assert main(["train", "--base", str(bert_ce), "--data", str(data), "--out", str(out), "--epochs", "1", "--negatives", "1",
                 "--pool-depth", "3", "--eval-depth", "3", "--max-length", "48", "--no-progress", "--compare-split", "test",
                 "--compare-depth", "5"]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert "split 'test': 6 queries" in comparison["header"]
    assert [r["model"] for r in comparison["rows"]] == ["bm25 first stage (stemmed)", "base", "trained"]
