"""Students: layers kept from the teacher, or a model of its own (same family smaller, or another family).

Example:
    >>> student = build_student("layers:0,3,5", teacher="runs/teacher", max_length=256)   # doctest: +SKIP
    >>> student.num_layers, student.kept_layers
    (3, [0, 3, 5])
    >>> student = build_student("runs/minilm-ce", teacher="Qwen/Qwen3-Reranker-0.6B")      # doctest: +SKIP
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from rerankd._optional import require
from rerankd.errors import InputError, UnsupportedModelError

LAYERS_PREFIX = "layers:"


def _text_config(model: Any) -> Any:
    """The config of the text stack (a vision-language model's ``text_config``; the config itself otherwise)."""
    return model.config.get_text_config()


def transformer_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of transformer blocks of any HF encoder or decoder model.

    For a vision-language model they are its language model's blocks, never the vision tower's
    (which may have as many).
    """
    torch = require("torch")
    text = _text_config(model)
    count = int(text.num_hidden_layers)
    root = model.get_decoder() if text is not model.config else model
    for module in root.modules():
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


def build_student(spec: str, *, teacher: str | Path, family: str = "auto", max_length: int | None = None) -> Any:
    """``layers:I,J,...`` keeps those layers of the teacher (same family, embeddings and head copied);
    anything else is a model directory or hub id to start from, of the teacher's family (smaller) or
    another one (``family`` as in :func:`rerankd.training.models.load_trainable`)."""
    from rerankd.training.models import cut_student, load_trainable

    if spec.startswith(LAYERS_PREFIX):
        whole = load_trainable(teacher, max_length=max_length)
        return cut_student(whole, parse_layer_spec(spec, whole.num_layers))
    return load_trainable(spec, family=family, max_length=max_length)


def cut_layers(model: Any, layers: list[int]) -> Any:
    """A deep copy of ``model`` with only the transformer blocks ``layers``."""
    torch = require("torch")
    student = copy.deepcopy(model)
    blocks = transformer_layers(student)
    kept = torch.nn.ModuleList([blocks[i] for i in layers])
    _replace_module(student, blocks, kept)
    config = _text_config(student)
    config.num_hidden_layers = len(layers)
    # Per-layer metadata some architectures carry (e.g. Qwen's sliding-window layer types).
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in layers]
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    return student


def _replace_module(root: Any, old: Any, new: Any) -> None:
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise UnsupportedModelError("could not replace the layer list of the student")


def feature_layer_pairs(student_layers: int, kept_layers: list[int] | None, teacher_layers: int,
                        chosen: list[int] | None) -> list[tuple[int, int]]:
    """Pairs of ``output_hidden_states`` indices (student, teacher) for feature distillation.

    A cut student's layer j (output index j + 1) pairs with the teacher layer it was copied from;
    another student's layers map evenly onto the teacher's depth. ``chosen`` picks student layers
    (0-based block numbers); default: all of them.

    Example:
        >>> feature_layer_pairs(2, None, 6, None)
        [(1, 3), (2, 6)]
    """
    chosen = list(range(student_layers)) if chosen is None else chosen
    for j in chosen:
        if not 0 <= j < student_layers:
            raise InputError(f"feature layer {j} is out of range: the student has layers 0..{student_layers - 1}")
    pairs = []
    for j in chosen:
        teacher_block = kept_layers[j] if kept_layers is not None else round((j + 1) * teacher_layers / student_layers) - 1
        pairs.append((j + 1, teacher_block + 1))
    return pairs
