"""rerankd distill: teacher scoring (resumable), students, every loss, side-by-side comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny_models import DATA, skip_without_shared

SLICE = ["--data", str(DATA / "scifact"), "--max-train-queries", "12", "--max-dev-queries", "5", "--eval-depth", "6",
         "--pool-depth", "8", "--negatives", "3", "--max-length", "64", "--groups-per-batch", "4", "--epochs", "1",
         "--no-progress"]


def _distill(teacher: Path, student: str, out: Path, *extra: str) -> int:
    from rerankd.cli import main

    skip_without_shared("data/scifact")
    return main(["distill", "--teacher", str(teacher), "--student", student, "--out", str(out), *SLICE, *extra])


def test_hybrid_distillation_end_to_end_with_comparison(bert_ce: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    assert _distill(bert_ce, "layers:1", out, "--loss", "hybrid", "--compare-depth", "6") == 0
    from rerankd.score_cache import read_scores

    teacher_scores = read_scores(out / "teacher_scores.jsonl")
    assert len(teacher_scores) == 12 and all(len(docs) >= 4 for docs in teacher_scores.values())
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["teacher", "student"]
    assert rows[1]["parameters"] < rows[0]["parameters"] and rows[1]["pairs/s"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert "Student of" in (out / "README.md").read_text()

    from rerankd import Reranker

    assert Reranker.from_pretrained(str(out), device="cpu").family.kind == "cross-encoder"


@pytest.mark.parametrize("loss", ["margin-mse", "kl", "feature"])
def test_each_loss_trains_a_student(bert_ce: Path, tmp_path: Path, loss: str) -> None:
    out = tmp_path / loss
    assert _distill(bert_ce, "layers:0", out, "--loss", loss, "--temperature", "2", "--no-compare", "--max-train-queries", "6") == 0
    steps = (out / "steps.csv").read_text().splitlines()
    assert len(steps) >= 2 and (out / "model.safetensors").is_file()


def test_student_from_another_checkpoint_and_llm_teacher(qwen3_lm: Path, bert_ce: Path, tmp_path: Path) -> None:
    """An LLM yes/no teacher scores through rerankd; the student (any encoder) learns from its scores."""
    out = tmp_path / "from-llm"
    assert _distill(qwen3_lm, str(bert_ce), out, "--loss", "kl", "--no-compare", "--max-train-queries", "4") == 0
    from rerankd.score_cache import read_scores

    assert len(read_scores(out / "teacher_scores.jsonl")) == 4
    # Feature distillation needs the teacher's tokenizer: refused with a clear error (exit 2).
    assert _distill(qwen3_lm, str(bert_ce), tmp_path / "bad", "--loss", "feature", "--no-compare", "--max-train-queries", "4") == 2


def test_teacher_scoring_resumes_and_skips_finished_queries(bert_ce: Path, tmp_path: Path) -> None:
    from rerankd import Reranker
    from rerankd.score_cache import read_scores
    from rerankd.training.teacher import score_with_teacher
    from rerankd.training.trainer import TextLookup

    reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32")
    texts = TextLookup({"q1": "vitamin d", "q2": "bone density", "q3": "sleep"}, {"d1": "one", "d2": "two", "d3": "three"})
    candidates = {"q1": ["d1", "d2"], "q2": ["d2", "d3"], "q3": ["d1", "d3"]}
    path = tmp_path / "scores.jsonl"
    full = score_with_teacher(reranker, texts, candidates, tmp_path / "full.jsonl", progress=False, queries_per_write=1)
    # A run that finished q1 and was killed while writing q2: the header and q1's chunk, then a torn line.
    header, q1_chunk = (tmp_path / "full.jsonl").read_text().splitlines()[:2]
    assert json.loads(q1_chunk) == {"scores": {"q1": full["q1"]}}
    path.write_text(header + "\n" + q1_chunk + "\n" + '{"scores": {"q2": {"d2": 0.')
    calls: list[list[str]] = []
    original = reranker.score_many

    def counting(queries, docs, **kw):  # type: ignore[no-untyped-def]
        calls.append(list(queries))
        return original(queries, docs, **kw)

    reranker.score_many = counting  # type: ignore[method-assign]
    resumed = score_with_teacher(reranker, texts, candidates, path, progress=False, queries_per_write=1)
    assert sum(len(c) for c in calls) == 2  # q2 and q3 only
    assert resumed.keys() == full.keys() and read_scores(path) == resumed
    for q in full:
        assert resumed[q] == pytest.approx(full[q], abs=1e-6)


def test_deeper_candidates_score_only_the_new_documents(bert_ce: Path, tmp_path: Path) -> None:
    """A second run with more candidates per query reuses the scored pairs and appends only the new ones."""
    from rerankd import Reranker
    from rerankd.score_cache import read_scores
    from rerankd.training.teacher import score_with_teacher
    from rerankd.training.trainer import TextLookup

    reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32")
    texts = TextLookup({"q1": "vitamin d", "q2": "bone density"}, {"d1": "one", "d2": "two", "d3": "three", "d4": "four"})
    path = tmp_path / "scores.jsonl"
    shallow = score_with_teacher(reranker, texts, {"q1": ["d1", "d2"], "q2": ["d3"]}, path, progress=False)
    scored: list[list[str]] = []
    original = reranker.score_many

    def counting(queries, docs, **kw):  # type: ignore[no-untyped-def]
        scored.extend(docs)
        return original(queries, docs, **kw)

    reranker.score_many = counting  # type: ignore[method-assign]
    deep_candidates = {"q1": ["d1", "d2", "d3", "d4"], "q2": ["d3"]}
    deep = score_with_teacher(reranker, texts, deep_candidates, path, progress=False)
    assert scored == [["three", "four"]]  # q1's new documents only; q2 was complete
    assert deep["q1"]["d1"] == shallow["q1"]["d1"] and set(deep["q1"]) == {"d1", "d2", "d3", "d4"}
    assert read_scores(path) == deep
    fresh = score_with_teacher(Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32"), texts, deep_candidates,
                               tmp_path / "fresh.jsonl", progress=False)
    for q in fresh:
        assert deep[q] == pytest.approx(fresh[q], abs=1e-5)


@pytest.mark.parametrize("change", ["dtype", "max_length", "instruction", "backend"])
def test_teacher_rerun_with_other_settings_is_refused_naming_the_field(bert_ce: Path, tmp_path: Path, change: str) -> None:
    """The teacher cache is keyed by the model's fingerprint: other settings never mix scores in."""
    from rerankd import Reranker
    from rerankd.errors import InputError
    from rerankd.score_cache import read_scores
    from rerankd.training.teacher import score_with_teacher
    from rerankd.training.trainer import TextLookup

    texts = TextLookup({"q1": "vitamin d"}, {"d1": "one", "d2": "two"})
    path = tmp_path / "scores.jsonl"
    score_with_teacher(Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32"), texts, {"q1": ["d1"]}, path,
                       progress=False)
    before = path.read_bytes()
    options = {"dtype": {"dtype": "bf16"}, "max_length": {"dtype": "fp32", "max_length": 64},
               "backend": {"dtype": "fp32", "backend": "torch-int8"}, "instruction": {"dtype": "fp32"}}[change]
    if change == "backend":
        options.pop("dtype")
    other = Reranker.from_pretrained(str(bert_ce), device="cpu", **options)
    instruction = "Given a claim, find evidence" if change == "instruction" else None
    field = {"dtype": "dtype", "max_length": "max_length", "backend": "backend", "instruction": "instruction"}[change]
    with pytest.raises(InputError, match=rf"{field}=.* but this run has {field}="):
        score_with_teacher(other, texts, {"q1": ["d1", "d2"]}, path, instruction=instruction, progress=False)
    assert path.read_bytes() == before and set(read_scores(path)["q1"]) == {"d1"}


def test_layer_students() -> None:
    from rerankd.errors import InputError
    from rerankd.training.students import parse_layer_spec

    assert parse_layer_spec("layers:0,3,5", 6) == [0, 3, 5]
    for bad in ("layers:", "layers:3,1", "layers:0,6", "layers:a"):
        with pytest.raises(InputError):
            parse_layer_spec(bad, 6)


def test_cut_student_keeping_every_layer_equals_teacher(bert_ce: Path) -> None:
    import torch

    from rerankd.training.students import build_student, load_cross_encoder

    teacher, tok = load_cross_encoder(bert_ce)
    student = build_student("layers:0,1", teacher_dir=bert_ce)
    inputs = tok(["a query", "a query"], ["first doc", "a second, longer doc"], return_tensors="pt", padding=True)
    teacher.eval(), student.model.eval()
    assert torch.allclose(teacher(**inputs).logits, student.model(**inputs).logits)
    assert build_student("layers:1", teacher_dir=bert_ce).model.config.num_hidden_layers == 1
