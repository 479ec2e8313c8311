"""The vision-language family through the command line: ``rank`` on JSONL media documents, ``info``'s media
limits, and ``eval`` on an image corpus (coco-mini as caption→image retrieval) with the tiny Qwen3-VL."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny_models import DATA

from rerankd.cli import main

pytest.importorskip("torch")
pytest.importorskip("PIL")

COCO = DATA / "coco-mini"
needs_coco = pytest.mark.skipif(not (COCO / "captions.jsonl").exists(), reason="needs ../shared/data/coco-mini")


def rerankd(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str,
            stdin: str | None = None) -> Any:
    """The CLI in this process (the subprocess path is tests/test_cli.py's): its exit code and JSON output."""
    capsys.readouterr()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@needs_coco
def test_rank_reads_jsonl_media_documents(qwen3_vl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd import Document, Reranker

    images = sorted((COCO / "images").glob("*.jpg"))[:2]
    (tmp_path / "pics").mkdir()
    local = tmp_path / "pics" / images[1].name
    local.write_bytes(images[1].read_bytes())
    docs = tmp_path / "docs.jsonl"
    lines = [{"image": str(images[0])}, {"text": "a birthday cake"}, {"image": f"pics/{local.name}", "text": "a photo"},
             "plain string line"]
    docs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = rerankd(capsys, monkeypatch, "rank", "-m", str(qwen3_vl), "--dtype", "fp32", "-q", "people eating cake",
                  "-d", str(docs))
    got = {r["index"]: r for r in out["results"]}
    assert got[2]["document"] == {"image": str(tmp_path / "pics" / local.name), "text": "a photo"}  # relative to the file
    want = Reranker.from_pretrained(qwen3_vl, dtype="fp32").score(
        "people eating cake", [Document.image(images[0]), "a birthday cake",
                               {"image": str(local), "text": "a photo"}, "plain string line"], raw=True)
    assert [got[i]["raw_score"] for i in range(4)] == pytest.approx(want, rel=1e-5, abs=1e-5)
    # an image query
    out = rerankd(capsys, monkeypatch, "rank", "-m", str(qwen3_vl), "--dtype", "fp32", "--query-image", str(images[0]),
                  "-d", "-", stdin="a cake\na train\n")
    assert out["query"] == {"image": [str(images[0])]} and len(out["results"]) == 2


def test_info_shows_the_family_and_its_media_limits(qwen3_vl: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    info = rerankd(capsys, monkeypatch, "info", "-m", str(qwen3_vl))
    assert info["family"] == "vision-language" and info["modalities"] == ["image", "text", "video"]
    media = info["media"]
    assert media["image_pixels"] == [4 * 32 * 32, 1800 * 32 * 32] and media["video_max_frames"] == 64
    assert media["server_defaults"]["remote_domains"] == [] and media["server_defaults"]["local_root"] is None
    assert media["server_defaults"]["max_images_per_request"] == 64


def test_captions_folder_is_caption_to_image_retrieval() -> None:
    if not (COCO / "captions.jsonl").exists():
        pytest.skip("needs ../shared/data/coco-mini")
    from rerankd.evaluation.datasets import load_beir

    data = load_beir(COCO)
    assert len(data.corpus) == 40 and len(data.queries) == 200
    doc = data.corpus["000000000790"]
    assert Path(doc.image).is_file() and doc.document() == {"image": doc.image}
    assert data.qrels["000000000790-0"] == {"000000000790": 1}


def test_image_corpus_refuses_text_first_stages(tmp_path: Path) -> None:
    from rerankd.errors import InputError
    from rerankd.evaluation.datasets import Doc
    from rerankd.evaluation.first_stage import first_stage_run

    corpus = {"a": Doc("", "", "/x.jpg"), "b": Doc("", "", "/y.jpg")}
    with pytest.raises(InputError, match="no bm25 first stage over them; use --first-stage all"):
        first_stage_run("bm25", corpus, {"q": "x"})
    assert first_stage_run("all", corpus, {"q": "x"}) == ("all", {"q": {"a": 0.0, "b": 0.0}})


def test_beir_corpus_with_image_paths(tmp_path: Path) -> None:
    from rerankd.errors import InputError
    from rerankd.evaluation.datasets import load_beir

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"x")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "a", "image": "img/a.png"}) + "\n"
                                           + json.dumps({"_id": "t", "text": "words"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "a picture"}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    data = load_beir(tmp_path)
    assert data.corpus["a"].image == str((tmp_path / "img" / "a.png").resolve())
    assert data.corpus["t"].document() == "words"
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "a", "image": "img/missing.png"}) + "\n")
    with pytest.raises(InputError, match=r"corpus.jsonl:1: field 'image' names 'img/missing.png', which is not a file"):
        load_beir(tmp_path)


@needs_coco
def test_eval_run_on_coco_mini(qwen3_vl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A slice of coco-mini in its own layout (8 images, their captions): seconds on the tiny model.
    data = tmp_path / "coco-slice"
    (data / "images").mkdir(parents=True)
    rows = [json.loads(line) for line in (COCO / "captions.jsonl").read_text().splitlines()[:8]]
    for row in rows:
        os.symlink(COCO / row["image"], data / row["image"])
    (data / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main(["eval", "run", "--data", str(data), "--max-queries", "2", "--k", "3", "-m", str(qwen3_vl),
                 "--dtype", "fp32", "--out", str(out), "--no-progress", "--no-charts", "--metrics", "ndcg@10,recall@5"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["first_stage"]["label"] == "all"
    reranked = [p for p in (out / "runs").glob("*.trec") if p.stem != "all"]
    assert len(reranked) == 1
    first = Path(rows[0]["image"]).stem
    lines = [line.split() for line in reranked[0].read_text().splitlines() if line.split()[0] == f"{first}-0"]
    assert len(lines) == 8  # every image a candidate (--k 3 does not cut "all"), each scored
    assert len({float(line[4]) for line in lines}) == 8
    assert "ndcg@10" in capsys.readouterr().out


def test_serve_media_flags_build_a_strict_policy(tmp_path: Path) -> None:
    from rerankd.cli import build_parser
    from rerankd.commands.serve import settings_from
    from rerankd.errors import InputError

    parse = build_parser().parse_args
    defaults = settings_from(parse(["serve"])).media
    assert not defaults.allow_domains and defaults.allowed_local_root is None and not defaults.allow_private_addresses
    assert defaults.max_images_per_request == 64 and defaults.max_frames == 64 and defaults.max_fps == 2.0
    args = parse(["serve", "--allow-media-domains", "img.example.com, cdn.example.org", "--allowed-local-media-path",
                  str(tmp_path), "--trusted-media-networks", "10.1.2.0/24", "--max-images-per-request", "8",
                  "--max-video-frames", "16", "--max-video-fps", "1", "--max-image-bytes", "1000000",
                  "--image-timeout", "2", "--vision-cache-bytes", "0"])
    policy = settings_from(args).media
    assert policy.allow_domains == frozenset({"img.example.com", "cdn.example.org"})
    assert policy.allowed_local_root == tmp_path and policy.trusted_networks == ("10.1.2.0/24",)
    assert (policy.max_images_per_request, policy.max_frames, policy.max_fps, policy.max_bytes,
            policy.image_timeout_s) == (8, 16, 1.0, 1_000_000, 2.0)
    assert args.vision_cache_bytes == 0
    with pytest.raises(InputError, match="is not a directory"):
        settings_from(parse(["serve", "--allowed-local-media-path", str(tmp_path / "nope")]))
    with pytest.raises(InputError, match="CIDR"):
        settings_from(parse(["serve", "--trusted-media-networks", "not-a-network"]))
