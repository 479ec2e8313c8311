"""Teacher, students, BM25 and the bi-encoder side by side on the SciFact dev split, in one run.

The dev split is the one ``rerankd train`` makes: a fixed-seed share of the *train* queries held out
(``--dev-fraction``, ``--seed``), so no test data is touched. Every reranker reorders the same
stemmed-BM25 top-``depth`` candidates through the rerankd engine; pairs/s are measured on one fixed
slice of those pairs, the models interleaved, median of ``--repeats``: only ratios between rows of one
run mean something on shared cores, so the run prints each student's NDCG@10 as a share of the
teacher's and its pairs/s as a multiple of the teacher's, both from this run.

    python benchmarks/distill_scifact.py --teacher runs/scifact-ce --student 3-layer=runs/scifact-s3 --out runs/table

``--small-recipe RUNS`` first trains a teacher (the bundled all-MiniLM-L6-v2 weights: the claims and 500
corpus titles, then the claims with deeper negatives, one epoch each), a 3-layer student cut from it
(listwise KL at T=6, 2 epochs, on the teacher's scores for the claims, the titles and 1000 abstract
sentences) and a 2-layer student cut from that student and taught by it, resuming whatever exists in
RUNS, then measures them: the recipe of scripts/train_scifact.sh at a size a 2-core machine runs in
about 2 hours.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rerankd.hardware import cpu_flags
from rerankd.training.compare import compare_models, first_stage_row, held_out, models_table, write_comparison
from rerankd.training.finetune import DataSettings


#: The 2-layer student's epochs: its loss was still falling after 2.
TWO_LAYER_EPOCHS = 4
#: (BM25 pool depth, folder) of the 2-layer student's later stages, 2 epochs each at lr 5e-5.
DEEPER_POOLS = ((60, "student-2l-deep"), (100, "student-2l-top100"))


def small_recipe(runs: Path, data: str, seed: int, max_length: int, train_queries: int | None,
                 title_queries: int, sentence_queries: int) -> tuple[str, dict[str, str]]:
    """scripts/train_scifact.sh at a size a 2-core machine runs in about 2 hours, trained (or resumed) in ``runs``.

    Teacher stage 1: the claims plus ``title_queries`` corpus titles, BM25 top-50 negatives, 1 epoch
    (the full recipe: 1500 titles, 2 epochs); stage 2: the claims with top-100 negatives, 1 epoch.
    A one-stage teacher on the claims alone stays below BM25 (dev NDCG@10 0.49 at top-20 after one
    epoch): ~650 claims do not teach a bi-encoder's weights to read pairs. Students, listwise KL at
    T=6 (the best epoch kept) on teacher scores for more queries than the teacher saw — the claims,
    the same titles and ``sentence_queries`` abstract sentences: the teacher's layers 0,1,2 for 2
    epochs (one epoch of the claims alone left it on its loss plateau, dev NDCG@10 0.34); then
    layers 0,2 of that student, taught by it, for ``TWO_LAYER_EPOCHS`` on BM25's top 30, then 2 more
    epochs on its top 60 and 2 on its top 100 (``DEEPER_POOLS``). Returns the teacher dir and the students.
    """
    from rerankd.cli import main

    common = ["--data", data, "--dev-fraction", "0.2", "--seed", str(seed), "--cache-dir", str(runs / "cache"), "--resume",
              "--max-length", str(max_length), "--groups-per-batch", "8", "--checkpoint-every", "20",
              "--no-progress", "--no-compare", "--warmup-ratio", "0.1", "--negatives", "7", "--eval-depth", "20",
              *(["--max-train-queries", str(train_queries)] if train_queries else [])]
    titles = ["--title-queries", str(title_queries)] if title_queries else []
    stage1, teacher = runs / "teacher-stage1", runs / "teacher"
    if main(["train", "--out", str(stage1), *common, *titles, "--epochs", "1", "--pool-depth", "50", "--lr", "5e-5"]) != 0:
        raise SystemExit("training the teacher (stage 1) failed")
    if main(["train", "--base", str(stage1), "--out", str(teacher), *common, "--epochs", "1", "--pool-depth", "100",
             "--lr", "2e-5"]) != 0:
        raise SystemExit("training the teacher (stage 2) failed")
    students: dict[str, str] = {}
    distill = ["distill", *common, *titles, "--sentence-queries", str(sentence_queries), "--loss", "kl", "--temperature", "6",
               "--pool-depth", "30", "--lr", "1e-4"]
    three = runs / "student-3l"
    if main([*distill, "--teacher", str(teacher), "--student", "layers:0,1,2", "--out", str(three), "--epochs", "2"]) != 0:
        raise SystemExit("distilling the 3-layer student failed")
    students["3-layer student (teacher layers 0,1,2)"] = str(three)
    # Cut from the teacher, a 2-layer student stayed on its loss plateau (layers 0,1 at lr 1e-4 and
    # 3e-4, 0,5, 0,5 with the hidden-state hybrid: listwise KL ~1.2-1.4, dev NDCG@10 0.34-0.37 at top
    # 20); cut from the trained 3-layer student and taught by it (a teacher assistant), it starts from
    # layers that already read pairs and leaves the plateau.
    # Not student-2l: the earlier recipe's 2-layer student (teacher layers 0,1) may live there.
    two = runs / "student-2l-ta"
    if main([*distill, "--teacher", str(three), "--student", "layers:0,2", "--out", str(two),
             "--epochs", str(TWO_LAYER_EPOCHS)]) != 0:
        raise SystemExit("distilling the 2-layer student failed")
    # Then from that student on ever deeper candidates (the table reranks BM25's top 100, the pool so
    # far was its top 30), each stage from the last. The same teacher: its cached scores serve, only the
    # new pairs are scored.
    previous = two
    for depth, out in DEEPER_POOLS:
        stage = runs / out
        if not (stage / "teacher_scores.jsonl").exists():
            stage.mkdir(parents=True, exist_ok=True)
            shutil.copy2(previous / "teacher_scores.jsonl", stage / "teacher_scores.jsonl")
        if main([*distill, "--teacher", str(three), "--student", str(previous), "--out", str(stage), "--epochs", "2",
                 "--pool-depth", str(depth), "--lr", "5e-5"]) != 0:
            raise SystemExit(f"distilling the 2-layer student on BM25's top {depth} failed")
        previous = stage
    students["2-layer student (layers 0,2 of the 3-layer student, taught by it)"] = str(previous)
    return str(teacher), students


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--teacher", default=None, help="teacher model folder (or train one with --small-recipe)")
    parser.add_argument("--student", action="append", default=[], help="NAME=DIR, repeatable (split at the last =, so a name may hold one)")
    parser.add_argument("--small-recipe", default=None, metavar="RUNS", help="train a teacher and 2/3-layer students in RUNS first")
    parser.add_argument("--train-queries", type=int, default=None, help="--small-recipe: train on the first N training queries only")
    parser.add_argument("--title-queries", type=int, default=500, help="--small-recipe: corpus titles as extra training queries")
    parser.add_argument("--sentence-queries", type=int, default=1000, help="--small-recipe: abstract sentences as extra student queries")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--max-dev-queries", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=256, help="tokens per pair (training and, with --small-recipe, the table)")
    parser.add_argument("--throughput-pairs", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-bi-encoder", action="store_true")
    parser.add_argument("--out", default=None, help="write OUT/comparison.{md,json,png}")
    args = parser.parse_args()

    students = dict(s.rsplit("=", 1) for s in args.student)
    teacher = args.teacher
    if args.small_recipe:
        teacher, trained = small_recipe(Path(args.small_recipe), args.data, args.seed, args.max_length,
                                        args.train_queries, args.title_queries, args.sentence_queries)
        students = {**trained, **students}
    if not teacher:
        parser.error("give --teacher or --small-recipe")
    data = DataSettings(args.data, dev_fraction=args.dev_fraction, max_train_queries=0, max_dev_queries=args.max_dev_queries)
    held = held_out(data, args.seed, args.depth)
    models = {"teacher": teacher, **students}
    if not args.no_bi_encoder:
        models["bi-encoder (all-MiniLM-L6-v2)"] = ""
    rows = [first_stage_row("BM25 (stemmed), first stage", held.qrels, held.run, held.candidates)]
    rows += compare_models(models, held.texts, held.qrels, held.candidates, max_length=args.max_length if args.small_recipe else None,
                           throughput_pairs=args.throughput_pairs, repeats=args.repeats)
    by_name = {r.name: r for r in rows}
    ratios = {name: {"ndcg@10 share of teacher": by_name[name].ndcg10 / by_name["teacher"].ndcg10,
                     "pairs/s ratio to teacher": (by_name[name].pairs_per_s or 0.0) / (by_name["teacher"].pairs_per_s or 1.0)}
              for name in students}
    header = (f"SciFact {held.description} (fraction {args.dev_fraction} of the train queries, seed {args.seed}); rerankers "
              f"reorder stemmed-BM25 top-{args.depth}; pairs/s on the same {args.throughput_pairs} pairs, models interleaved, "
              f"median of {args.repeats}; CPU flags: {' '.join(sorted(f for f in cpu_flags() if f.startswith(('avx', 'amx'))))}.")
    lines = [f"- {name}: NDCG@10 {r['ndcg@10 share of teacher']:.1%} of the teacher's at {r['pairs/s ratio to teacher']:.2f}x "
             "its pairs/s (same run, interleaved)" for name, r in ratios.items()]
    print(header + "\n\n" + models_table(rows) + "\n\n" + "\n".join(lines))
    if args.out:
        paths = write_comparison(Path(args.out), rows, header)
        with open(paths["md"], "a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines) + "\n")
        Path(args.out, "ratios.json").write_text(json.dumps(ratios, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
