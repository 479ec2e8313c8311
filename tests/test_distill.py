"""rerankd distill: teacher scoring (resumable), students, every loss, side-by-side comparison."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import numpy as np

from tiny_models import DATA, skip_without_shared

SLICE = ["--data", str(DATA / "scifact"), "--max-train-queries", "12", "--max-dev-queries", "5", "--eval-depth", "6",
         "--pool-depth", "8", "--negatives", "3", "--max-length", "64", "--groups-per-batch", "4", "--epochs", "1",
         "--no-progress"]


def _distill(teacher: Path, student: str, out: Path, *extra: str) -> int:
    from rerankd.cli import main

    skip_without_shared("data/scifact")
    return main(["distill", "--teacher", str(teacher), "--student", student, "--out", str(out), *SLICE, *extra])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _losses(out: Path) -> list[float]:
    return [float(r["loss"]) for r in _rows(out / "steps.csv")]


def test_hybrid_distillation_end_to_end_with_comparison(bert_ce: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    assert _distill(bert_ce, "layers:1", out, "--loss", "hybrid", "--compare-depth", "6") == 0
    from rerankd.score_cache import read_scores

    teacher_scores = read_scores(out / "teacher_scores.jsonl")
    assert len(teacher_scores) == 12 and all(len(docs) >= 4 for docs in teacher_scores.values())
    comparison = json.loads((out / "comparison.json").read_text())
    rows = comparison["rows"]
    assert [r["model"] for r in rows] == ["bm25 first stage (stemmed)", "teacher", "student"]
    assert rows[0]["pairs/s"] is None and "never trained on" in comparison["header"]
    assert rows[2]["parameters"] < rows[1]["parameters"] and rows[2]["pairs/s"] > 0
    assert (out / "comparison.png").stat().st_size > 1000 and "| student |" in (out / "comparison.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    card = (out / "README.md").read_text()
    assert "Student of" in card and "kept teacher layers [1]" in card and "hybrid" in card and "0.3→0.7" in card

    from rerankd import Reranker

    assert Reranker.from_pretrained(str(out), device="cpu").family.kind == "cross-encoder"


@pytest.mark.parametrize("strategy", [
    ["--loss", "margin-mse"],
    ["--loss", "kl", "--temperature", "2"],
    ["--loss", "feature", "--feature-pooling", "position"],
    ["--loss", "feature", "--feature-pooling", "mean", "--feature-kind", "cosine"],
    ["--loss", "hybrid", "--response", "kl", "--feature-weight", "0.3:0.7", "--feature-schedule", "cosine"],
], ids=["margin-mse", "kl", "feature-position", "feature-mean-cosine", "hybrid-cosine"])
def test_each_strategy_trains_a_student(bert_ce: Path, tmp_path: Path, strategy: list[str]) -> None:
    out = tmp_path / "s"
    assert _distill(bert_ce, "layers:0", out, *strategy, "--no-compare", "--max-train-queries", "6") == 0
    losses = _losses(out)
    assert len(losses) >= 2 and all(np.isfinite(losses)) and (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_loss_goes_down(bert_ce: Path, tmp_path: Path) -> None:
    """The same few groups seen for several epochs: the KL loss of the last epoch is well below the first's."""
    out = tmp_path / "s"
    assert _distill(bert_ce, "layers:0", out, "--loss", "kl", "--temperature", "2", "--max-train-queries", "4",
                    "--max-dev-queries", "0", "--groups-per-batch", "1", "--epochs", "6", "--lr", "1e-3", "--no-compare",
                    "--negatives", "7", "--pool-depth", "8",
                    "--warmup-ratio", "0") == 0
    steps = _rows(out / "steps.csv")
    first = [float(r["loss"]) for r in steps if float(r["epoch"]) <= 1]
    last = [float(r["loss"]) for r in steps if float(r["epoch"]) > 5]
    assert len(first) >= 3 and np.mean(last) < 0.5 * np.mean(first)


@pytest.mark.slow
def test_llm_teacher_into_cross_encoder_student(qwen3_lm: Path, bert_ce: Path, tmp_path: Path) -> None:
    """Cross-family: an LLM yes/no teacher scores through rerankd; a cross-encoder student learns its scores
    and (hybrid) its hidden states at the scoring position, across tokenizers."""
    out = tmp_path / "from-llm"
    assert _distill(qwen3_lm, str(bert_ce), out, "--loss", "hybrid", "--response", "kl", "--max-train-queries", "4",
                    "--compare-depth", "4") == 0
    from rerankd import Reranker
    from rerankd.score_cache import read_scores

    assert len(read_scores(out / "teacher_scores.jsonl")) == 4
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["model"] for r in rows][1:] == ["teacher", "student"]
    assert Reranker.from_pretrained(str(out), device="cpu").family.kind == "cross-encoder"
    assert "llm-yes-no teacher" in (out / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [["--loss", "kl"], ["--loss", "hybrid", "--feature-pooling", "mean"]], ids=["kl", "hybrid"])
def test_same_family_smaller_llm_student_of_another_width(qwen3_lm: Path, qwen3_lm_small: Path, tmp_path: Path,
                                                          strategy: list[str]) -> None:
    """Qwen3-Reranker-4B → 0.6B in miniature: a 16-wide 1-layer Qwen3 learns from a 32-wide 2-layer one."""
    out = tmp_path / "small"
    assert _distill(qwen3_lm, str(qwen3_lm_small), out, *strategy, "--max-train-queries", "4", "--max-length", "160",
                    "--no-compare") == 0
    from rerankd import Reranker

    student = Reranker.from_pretrained(str(out), device="cpu", dtype="fp32")
    assert student.family.kind == "llm-yes-no" and json.loads((out / "config.json").read_text())["hidden_size"] == 16
    assert np.all(np.isfinite(student.score("vitamin d", ["bone density", "sleep"])))


@pytest.mark.slow
def test_same_family_smaller_cross_encoder_and_kept_llm_layers(bert_ce: Path, bert_ce_small: Path, qwen3_lm: Path,
                                                               tmp_path: Path) -> None:
    assert _distill(bert_ce, str(bert_ce_small), tmp_path / "ce", "--loss", "feature", "--no-compare",
                    "--max-train-queries", "4") == 0
    assert json.loads((tmp_path / "ce" / "config.json").read_text())["hidden_size"] == 16
    assert _distill(qwen3_lm, "layers:1", tmp_path / "llm", "--loss", "hybrid", "--no-compare", "--max-train-queries", "4",
                    "--max-length", "160") == 0
    from rerankd import Reranker

    cut = Reranker.from_pretrained(str(tmp_path / "llm"), device="cpu")
    assert cut.family.kind == "llm-yes-no" and json.loads((tmp_path / "llm" / "config.json").read_text())["num_hidden_layers"] == 1


@pytest.mark.slow
def test_bi_encoder_teacher_and_bi_encoder_student(bi_encoder: Path, bert_ce: Path, tmp_path: Path) -> None:
    """A bi-encoder teaches a cross-encoder; a cross-encoder teaches a bi-encoder that stays one (cosine scores)."""
    assert _distill(bi_encoder, str(bert_ce), tmp_path / "ce", "--loss", "kl", "--temperature", "0.1", "--no-compare",
                    "--max-train-queries", "4") == 0
    out = tmp_path / "bi"
    assert _distill(bert_ce, str(bi_encoder), out, "--student-family", "bi-encoder", "--loss", "hybrid", "--response", "kl",
                    "--no-compare", "--max-train-queries", "4") == 0
    from rerankd import Reranker

    student = Reranker.from_pretrained(str(out), device="cpu", dtype="fp32")
    assert student.family.kind == "bi-encoder"
    scores = student.score("vitamin d", ["bone density", "sleep"], raw=True)
    assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores)


@pytest.mark.slow
def test_instructions_are_drawn_per_query_for_teacher_and_student(qwen3_lm: Path, tmp_path: Path) -> None:
    from rerankd import Reranker
    from rerankd.errors import InputError
    from rerankd.score_cache import read_scores
    from rerankd.training.instructions import InstructionDraw

    tasks = tmp_path / "tasks.txt"
    tasks.write_text("# one per line\nGiven a scientific claim, retrieve abstracts that support or refute it\n"
                     "Find the paper this claim comes from\n\nRetrieve evidence for the statement\n")
    out = tmp_path / "s"
    assert _distill(qwen3_lm, "layers:0", out, "--loss", "kl", "--instructions", str(tasks), "--max-train-queries", "4",
                    "--max-length", "160", "--no-compare", "--teacher-dtype", "fp32") == 0
    header = json.loads((out / "teacher_scores.jsonl").read_text().splitlines()[0])
    assert header["instruction"].startswith("one per query of 3 (sha256:")
    draw = InstructionDraw(tuple(line for line in tasks.read_text().splitlines() if line and not line.startswith("#")), 0)
    scores = read_scores(out / "teacher_scores.jsonl")
    qid = sorted(scores)[0]
    from rerankd.training.finetune import DataSettings, prepare_data

    texts = prepare_data(DataSettings(str(DATA / "scifact"), max_train_queries=4, max_dev_queries=5, eval_depth=6,
                                      pool_depth=8, instructions=str(tasks)), 0).texts
    assert texts.instructions[qid] == draw.per_query([qid])[qid]
    docs = sorted(scores[qid])[:2]
    teacher = Reranker.from_pretrained(str(qwen3_lm), backend="torch", dtype="fp32")
    expected = teacher.score(texts.queries[qid], [texts.docs[d] for d in docs], instruction=texts.instructions[qid], raw=True)
    assert [scores[qid][d] for d in docs] == pytest.approx(expected, abs=1e-4)
    other = teacher.score(texts.queries[qid], [texts.docs[d] for d in docs], raw=True)  # the default instruction
    assert max(abs(a - b) for a, b in zip(other, expected)) > 1e-3
    assert "instructions" in (out / "README.md").read_text()
    # Another instruction file is another teacher setting: refused, naming the field.
    tasks.write_text("Retrieve evidence for the statement\n")
    with pytest.raises(InputError, match="instruction="):
        from rerankd.training.distill import DistillSettings, TeacherSettings, distill

        distill(DistillSettings(str(qwen3_lm), "layers:0", str(out), DataSettings(
            str(DATA / "scifact"), max_train_queries=4, max_dev_queries=5, eval_depth=6, pool_depth=8, instructions=str(tasks)),
            loss="kl", negatives=3, teacher_run=TeacherSettings(dtype="fp32")), progress=False)


def _uninterrupted_and_killed(teacher: Path, student: str, tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """One run straight through, one SIGKILLed after its second checkpoint and resumed with the same command."""
    import os
    import signal
    import subprocess
    import sys
    import time

    skip_without_shared("data/scifact")
    args = ["--teacher", str(teacher), "--student", student, *SLICE, "--max-train-queries", "8", "--epochs", "2",
            "--groups-per-batch", "2", "--checkpoint-every", "1", "--no-compare", *extra]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    from rerankd.cli import main

    assert main(["distill", "--out", str(straight), *args]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    child = subprocess.Popen([sys.executable, "-m", "rerankd.cli", "distill", "--out", str(killed), *args],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "checkpoint" / "state.pt"
    deadline = time.monotonic() + 300
    import torch

    while time.monotonic() < deadline and child.poll() is None:
        if state.exists():
            try:
                if torch.load(state, weights_only=False)["step"] >= 2:
                    break
            except Exception:  # noqa: BLE001 - being replaced right now: look again
                pass
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(_rows(killed / "steps.csv")) < len(_rows(straight / "steps.csv")) if (killed / "steps.csv").exists() else True
    assert main(["distill", "--out", str(killed), *args, "--resume"]) == 0
    return straight, killed


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ["bert_ce", "qwen3_vl"])
def test_exact_resume_after_a_kill(teacher: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """SIGKILL mid-run (hybrid: projections and schedule in the state too), then --resume: the same curve and weights
    (a cross-encoder, and a vision-language model keeping text layers of its teacher)."""
    straight, killed = _uninterrupted_and_killed(request.getfixturevalue(teacher), "layers:1", tmp_path, "--loss", "hybrid")
    assert _rows(killed / "steps.csv") == _rows(straight / "steps.csv")
    assert _rows(killed / "evals.csv") == _rows(straight / "evals.csv")
    from safetensors.numpy import load_file

    a, b = load_file(str(straight / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


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


def test_cut_student_keeping_every_layer_equals_teacher(bert_ce: Path, qwen3_lm: Path) -> None:
    import torch

    from rerankd.training.models import PairTexts, load_trainable
    from rerankd.training.students import build_student

    pairs = PairTexts(["a query", "a query"], ["first doc", "a second, longer doc"], [None, None])
    for teacher_dir, every in ((bert_ce, "layers:0,1"), (qwen3_lm, "layers:0,1")):
        teacher = load_trainable(teacher_dir).train(False)
        student = build_student(every, teacher=teacher_dir).train(False)
        with torch.no_grad():
            assert torch.allclose(teacher.forward(teacher.encode(pairs)).scores, student.forward(student.encode(pairs)).scores)
    assert build_student("layers:1", teacher=bert_ce).num_layers == 1


@pytest.mark.slow
def test_trainable_scores_equal_the_engine_for_every_family(bert_ce: Path, qwen3_lm: Path, qwen3_seq_cls: Path,
                                                            bi_encoder: Path, qwen3_vl: Path) -> None:
    """Training reads pairs exactly as rerankd serves them: the trainable model's fp32 scores are the engine's."""
    import torch

    from rerankd import Reranker
    from rerankd.training.models import PairTexts, load_trainable

    docs = ["Vitamin D supplements increase bone density.", "Bananas are yellow.", "Sleep matters."]
    for model, family in ((bert_ce, "auto"), (qwen3_lm, "auto"), (qwen3_seq_cls, "auto"), (bi_encoder, "bi-encoder"),
                          (qwen3_vl, "auto")):
        trainable = load_trainable(model, family=family).train(False)
        with torch.no_grad():
            ours = trainable.forward(trainable.encode(PairTexts(["vitamin d"] * 3, docs, ["Find evidence"] * 3))).scores
        engine = Reranker.from_pretrained(str(model), device="cpu", dtype="fp32").score("vitamin d", docs, raw=True,
                                                                                        instruction="Find evidence")
        np.testing.assert_allclose(ours.numpy(), engine, atol=1e-5, err_msg=str(model))
