"""Models to train: a cross-encoder from any encoder checkpoint, or a student cut from a teacher.

Example:
    >>> model, tok = load_cross_encoder("sentence-transformers/all-MiniLM-L6-v2")        # doctest: +SKIP
    >>> student, tok = build_student("layers:0,3,5", teacher_dir="runs/teacher")          # doctest: +SKIP
    >>> student.config.num_hidden_layers
    3
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerankd._optional import require
from rerankd.errors import InputError, UnsupportedModelError

LAYERS_PREFIX = "layers:"


def load_cross_encoder(model: str | Path, *, dropout_attention: bool = False) -> tuple[Any, Any]:
    """A 1-label ``*ForSequenceClassification`` and its tokenizer, from a cross-encoder or a bare encoder.

    A bare encoder (e.g. the bundled all-MiniLM-L6-v2, a ``BertModel``) gets a new, randomly
    initialised classification head; a classifier with another number of labels is refused.
    """
    transformers = require("transformers")
    from rerankd.hub import resolve_model

    model_dir, _ = resolve_model(str(model) if model else None)
    config = transformers.AutoConfig.from_pretrained(str(model_dir))
    labels = len(getattr(config, "id2label", None) or {}) if _is_classifier(config) else 1
    if labels not in (0, 1):
        raise UnsupportedModelError(
            f"{model_dir} is a classifier with {labels} labels; training needs an encoder or a 1-label cross-encoder"
        )
    config.num_labels = 1
    if not dropout_attention:
        # Attention dropout makes torch skip the fused SDPA kernel: measured 7.4 s vs 1.0 s for the
        # attention forward of a 32x256 MiniLM batch on CPU (PERF.md). Hidden dropout alone is cheap
        # and keeps most of the regularisation.
        _disable_attention_dropout(config)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir), config=config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    return net, tokenizer


def _is_classifier(config: Any) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))


def _disable_attention_dropout(config: Any) -> None:
    for name in ("attention_probs_dropout_prob", "attention_dropout"):
        if hasattr(config, name):
            setattr(config, name, 0.0)


def transformer_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of transformer blocks of any HF encoder or decoder model."""
    torch = require("torch")
    count = int(model.config.num_hidden_layers)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise UnsupportedModelError(f"could not find the {count} transformer layers of {type(model).__name__}")


def parse_layer_spec(spec: str, num_layers: int) -> list[int]:
    """``layers:0,3,5`` → [0, 3, 5], checked against the teacher's layer count."""
    body = spec[len(LAYERS_PREFIX):]
    try:
        layers = [int(x) for x in body.split(",") if x.strip()]
    except ValueError as exc:
        raise InputError(f"student spec {spec!r} is not layers:I,J,... with integer layer numbers") from exc
    if not layers:
        raise InputError(f"student spec {spec!r} names no layers; e.g. layers:0,3,5")
    if sorted(set(layers)) != layers:
        raise InputError(f"student layers must be increasing and distinct, got {layers}")
    if layers[0] < 0 or layers[-1] >= num_layers:
        raise InputError(f"student layers {layers} are out of range: the teacher has layers 0..{num_layers - 1}")
    return layers


@dataclass
class Student:
    """A student model, its tokenizer, and which teacher layer each of its layers came from (if cut)."""

    model: Any
    tokenizer: Any
    kept_layers: list[int] | None


def build_student(spec: str, *, teacher_dir: str | Path) -> Student:
    """``layers:I,J,...`` keeps those layers of the teacher (embeddings and head copied); anything
    else is a model directory or hub id of an encoder/cross-encoder to start from."""
    if spec.startswith(LAYERS_PREFIX):
        teacher, tokenizer = load_cross_encoder(teacher_dir)
        model, kept = cut_layers(teacher, spec)
        return Student(model, tokenizer, kept)
    model, tokenizer = load_cross_encoder(spec)
    return Student(model, tokenizer, None)


def cut_layers(teacher: Any, spec: str) -> tuple[Any, list[int]]:
    """A deep copy of ``teacher`` with only the layers named by ``spec`` (e.g. ``layers:0,3,5``)."""
    torch = require("torch")
    layers = parse_layer_spec(spec, int(teacher.config.num_hidden_layers))
    student = copy.deepcopy(teacher)
    blocks = transformer_layers(student)
    kept = torch.nn.ModuleList([blocks[i] for i in layers])
    _replace_module(student, blocks, kept)
    student.config.num_hidden_layers = len(layers)
    # Per-layer metadata some architectures carry (e.g. Qwen's sliding-window layer types).
    if isinstance(getattr(student.config, "layer_types", None), list):
        student.config.layer_types = [student.config.layer_types[i] for i in layers]
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    return student, layers


def _replace_module(root: Any, old: Any, new: Any) -> None:
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise UnsupportedModelError("could not replace the layer list of the student")


def feature_layer_pairs(student: Student, teacher_layers: int, chosen: list[int] | None) -> list[tuple[int, int]]:
    """Pairs of ``output_hidden_states`` indices (student, teacher) for feature distillation.

    A cut student's layer j (output index j + 1) pairs with the teacher layer it was copied from;
    another student's layers map evenly onto the teacher's depth. ``chosen`` picks student layers
    (0-based block numbers); default: all of them.
    """
    count = int(student.model.config.num_hidden_layers)
    chosen = list(range(count)) if chosen is None else chosen
    for j in chosen:
        if not 0 <= j < count:
            raise InputError(f"feature layer {j} is out of range: the student has layers 0..{count - 1}")
    pairs = []
    for j in chosen:
        if student.kept_layers is not None:
            teacher_block = student.kept_layers[j]
        else:
            teacher_block = round((j + 1) * teacher_layers / count) - 1
        pairs.append((j + 1, teacher_block + 1))
    return pairs


def same_tokenizer(a: Any, b: Any) -> bool:
    """Feature distillation compares token positions, so both sides must split text the same way."""
    return type(a).__name__ == type(b).__name__ and a.get_vocab() == b.get_vocab()


def count_parameters(model: Any) -> int:
    return sum(int(p.numel()) for p in model.parameters())
