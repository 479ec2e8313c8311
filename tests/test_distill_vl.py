"""Distillation with vision-language (Qwen3-VL) teachers and students: VL→VL (smaller, layers kept),
VL→cross-encoder, image documents through the training forward, scores equal to the engine's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_distill import _distill, _rows

QUERY = "vitamin d and bone density"
DOCS = ["Vitamin D supplements increase bone density.", "Bananas are yellow.", "Sleep matters."]


def _image(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)):  # type: ignore[no-untyped-def]
    """A small solid PIL image with a stripe (4x3 merged patches at the tiny model's 16-pixel patches)."""
    from PIL import Image

    image = Image.new("RGB", size, colour)
    image.paste((255 - colour[0], 40, 200), (0, 0, size[0] // 2, 8))
    return image


def _scores_of(model, pairs):  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return model.forward(model.encode(pairs)).scores.numpy()


def test_vl_trainable_equals_the_engine_on_image_documents_and_trains_the_tower(qwen3_vl: Path) -> None:
    """Pairs with image documents (and an image in the query) run the vision tower in training as rerankd serves
    them; the loss reaches the tower's weights."""
    import torch

    from rerankd import Reranker
    from rerankd.documents import Document
    from rerankd.training.models import PairTexts, load_trainable

    docs = [Document.image(_image((200, 30, 30))), Document.of(Document.text("a caption"), Document.image(_image((20, 90, 220)))),
            Document.text("Bananas are yellow.")]
    query = Document.of(Document.text("which picture?"), Document.image(_image((10, 200, 10), (32, 32))))
    model = load_trainable(qwen3_vl).train(False)
    assert model.kind == "yes-no-row/vision" and model.num_layers == 3 and model.width == 64
    ours = _scores_of(model, PairTexts([query] * 3, docs, [None] * 3))
    engine = Reranker.from_pretrained(str(qwen3_vl), device="cpu", dtype="fp32").score(query, docs, raw=True)
    np.testing.assert_allclose(ours, engine, atol=1e-4)
    assert np.ptp(ours) > 1e-3  # the documents score apart: the comparison is not of constants

    model.train(True)
    out = model.forward(model.encode(PairTexts([query] * 2, docs[:2], [None] * 2)))
    torch.nn.functional.mse_loss(out.scores, torch.tensor([3.0, -3.0])).backward()
    visual = model.hf.model.visual
    assert visual.patch_embed.proj.weight.grad is not None and float(visual.patch_embed.proj.weight.grad.abs().sum()) > 0


def test_vl_features_and_a_cut_student_keeping_every_layer(qwen3_vl: Path) -> None:
    """Feature vectors per text layer; cutting the text stack (not the vision tower, which has as many blocks)
    keeping every layer scores as the teacher, and keeping fewer shortens only the text model."""
    from rerankd.training.models import PairTexts, cut_student, load_trainable

    teacher = load_trainable(qwen3_vl).train(False)
    pairs = PairTexts([QUERY] * 3, DOCS, ["Find evidence"] * 3)
    import torch

    with torch.no_grad():
        out = teacher.forward(teacher.encode(pairs), layers=[1, 3], pooling="mean")
    assert [tuple(f.shape) for f in out.features] == [(3, 64), (3, 64)]
    whole = cut_student(teacher, [0, 1, 2]).train(False)
    np.testing.assert_allclose(_scores_of(whole, pairs), _scores_of(teacher, pairs), atol=1e-6)
    cut = cut_student(teacher, [0, 2])
    assert cut.num_layers == 2 and len(cut.hf.model.language_model.layers) == 2
    assert len(cut.hf.model.visual.blocks) == 3 and teacher.num_layers == 3


def test_vl_teacher_into_a_smaller_vl_student_loss_goes_down(qwen3_vl: Path, qwen3_vl_small: Path, tmp_path: Path) -> None:
    """Qwen3-VL-Reranker-8B → 2B in miniature: the same few groups for several epochs, listwise KL falls; the
    student is saved as a vision-language reranker rerankd serves (text and images)."""
    out = tmp_path / "small"
    # 256 tokens per pair: the Qwen3-VL prompt alone is longer than the slice's 64, which would cut every
    # document's text away (the same sequence for every document: nothing to learn).
    assert _distill(qwen3_vl, str(qwen3_vl_small), out, "--loss", "kl", "--temperature", "2", "--max-train-queries", "2",
                    "--max-dev-queries", "0", "--groups-per-batch", "1", "--epochs", "5", "--lr", "3e-3", "--no-compare",
                    "--warmup-ratio", "0", "--no-bf16", "--max-length", "256") == 0
    steps = _rows(out / "steps.csv")
    first = [float(r["loss"]) for r in steps if float(r["epoch"]) <= 1]
    last = [float(r["loss"]) for r in steps if float(r["epoch"]) > 4]
    assert len(first) >= 2 and np.mean(last) < 0.5 * np.mean(first)
    from rerankd import Reranker
    from rerankd.documents import Document

    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 32 and (out / "preprocessor_config.json").is_file()
    student = Reranker.from_pretrained(str(out), device="cpu", dtype="fp32")
    assert student.family.kind == "vision-language"
    assert np.all(np.isfinite(student.score(QUERY, [DOCS[0], Document.image(_image((1, 2, 3)))])))
    assert "vision-language teacher" in (out / "README.md").read_text()


@pytest.mark.slow
def test_vl_kept_layers_hybrid_and_vl_teacher_into_cross_encoder(qwen3_vl: Path, bert_ce: Path, tmp_path: Path) -> None:
    """Layers kept from a VL teacher (hybrid: feature loss at the answer position), and the practical
    cross-family pair: a VL teacher's scores into a fast cross-encoder student."""
    from rerankd import Reranker

    cut = tmp_path / "cut"
    assert _distill(qwen3_vl, "layers:0,2", cut, "--loss", "hybrid", "--response", "kl", "--max-train-queries", "4",
                    "--no-compare", "--max-length", "256") == 0
    config = json.loads((cut / "config.json").read_text())
    assert config["text_config"]["num_hidden_layers"] == 2 and config["vision_config"]["depth"] == 3
    assert Reranker.from_pretrained(str(cut), device="cpu").family.kind == "vision-language"
    assert "kept teacher layers [0, 2]" in (cut / "README.md").read_text()

    ce = tmp_path / "ce"
    assert _distill(qwen3_vl, str(bert_ce), ce, "--loss", "kl", "--max-train-queries", "4", "--compare-depth", "4") == 0
    rows = json.loads((ce / "comparison.json").read_text())["rows"]
    assert [r["model"] for r in rows][1:] == ["teacher", "student"]
    assert Reranker.from_pretrained(str(ce), device="cpu").family.kind == "cross-encoder"


def test_vl_model_cannot_train_as_a_cross_encoder(qwen3_vl: Path) -> None:
    from rerankd.errors import InputError
    from rerankd.training.models import load_trainable

    with pytest.raises(InputError, match="vision-language model"):
        load_trainable(qwen3_vl, family="cross-encoder")
