"""Trainable rerankers, one class per family head, reading pairs exactly as rerankd serves them.

A :class:`TrainableModel` pairs the torch-free :class:`rerankd.families.Family` (tokenization, prompt,
instruction, truncation, padding side — the same code inference runs) with a trainable torch module
for the family's head (:mod:`rerankd.families.heads`):

* ``pair-logit`` (:class:`PairLogitModel`): a ``*ForSequenceClassification`` encoder; score = the logit
  (or the 2-label log-odds); its scoring position is the first token.
* ``yes-no-row`` (:class:`YesNoModel`): a decoder LLM; score = last hidden state · (w_yes − w_no), the
  row read from the LM head (or the converted classifier's ``score`` row) at every step, so a trained
  or LoRA-adapted model scores exactly as rerankd's inference head; its scoring position is the last
  token (sequences are left-padded).
* ``yes-no-row/vision`` (:class:`VisionLanguageYesNoModel`): a Qwen3-VL ``*ForConditionalGeneration``;
  the same score, its forward the inference module's (:class:`rerankd.backends.vision_language.VisionLanguageYesNo`:
  vision tower on the pairs' images and videos, visual tokens and deepstack features scattered in,
  M-RoPE positions), left-padded. Text-only pairs run the text model alone.
* ``pooled-embedding`` (:class:`PooledModel`): a sentence-transformers bi-encoder; the query and the
  documents are embedded apart and scored by cosine.

Every model returns per-pair scores and, when asked, per-pair feature vectors of chosen hidden-state
layers (at the scoring position or mean-pooled), which is what feature distillation compares across
families and widths. A new family plugs in by registering its head key
(:func:`rerankd.backends.torch_modules.head_key`) in :data:`MODELS`.

Example:
    >>> student = load_trainable("runs/ce", max_length=256)                     # doctest: +SKIP
    >>> out = student.forward(student.encode(PairTexts(["q"], ["doc"], [None])))  # doctest: +SKIP
    >>> out.scores.shape
    torch.Size([1])
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rerankd._optional import require
from rerankd.errors import InputError, UnsupportedModelError

FEATURE_POOLINGS = ("position", "mean")
STUDENT_FAMILIES = ("auto", "cross-encoder", "llm-yes-no", "vision-language", "bi-encoder")


@dataclass
class PairTexts:
    """Flat (query, document) pairs of a batch, with the task instruction of each pair's query.

    Queries and documents are texts, or :class:`rerankd.documents.Document` s with images or videos
    for a vision-language model.
    """

    queries: list[Any]
    docs: list[Any]
    instructions: list[str | None]

    def __len__(self) -> int:
        return len(self.queries)

    def take(self, rows: Sequence[int]) -> "PairTexts":
        return PairTexts([self.queries[i] for i in rows], [self.docs[i] for i in rows], [self.instructions[i] for i in rows])


@dataclass
class ModelOutput:
    """Scores of each pair (fp32) and, when asked, one (pairs, width) feature tensor per chosen layer."""

    scores: Any
    features: list[Any] | None = None


def _runs(pairs: PairTexts) -> list[tuple[int, int]]:
    """[start, end) of consecutive pairs sharing a query and an instruction: one family request each."""
    runs, start = [], 0
    for i in range(1, len(pairs) + 1):
        if i == len(pairs) or (pairs.queries[i], pairs.instructions[i]) != (pairs.queries[start], pairs.instructions[start]):
            runs.append((start, i))
            start = i
    return runs


def _document(value: Any) -> Any:
    from rerankd.documents import Document

    return value if isinstance(value, Document) else Document.text(value)


def _size(value: Any) -> int:
    """A length to sort pairs by (characters of text; a document's text, plus a share for each medium)."""
    from rerankd.documents import Document

    if not isinstance(value, Document):
        return len(value)
    return sum(len(p.value) if p.modality == "text" else 1000 for p in value.parts)


def _masked_mean(hidden: Any, mask: Any) -> Any:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class TrainableModel:
    """A family (tokenization, same as inference) and the torch module trained for its head.

    Attributes:
        family: the rerankd family that turns (query, document, instruction) into token ids.
        net: the Hugging Face model (or its peft wrapper) whose parameters are trained.
        tokenizer: the transformers tokenizer saved beside the model.
        source: the directory the weights came from.
        kept_layers: for a student cut from a teacher, which teacher layer each layer came from.
    """

    kind: str = ""

    def __init__(self, family: Any, net: Any, tokenizer: Any, source: Path, kept_layers: list[int] | None = None) -> None:
        self.family = family
        self.net = net
        self.tokenizer = tokenizer
        self.source = Path(source)
        self.kept_layers = kept_layers
        self.device = "cpu"
        self.lora: Any = None  # a LoraSpec once peft wraps the model (rerankd.training.lora)

    # -- shape ----------------------------------------------------------------------------------------

    @property
    def hf(self) -> Any:
        """The plain transformers model under any peft wrapper."""
        return self.net.get_base_model() if hasattr(self.net, "get_base_model") else self.net

    @property
    def config(self) -> Any:
        return self.hf.config

    @property
    def text_config(self) -> Any:
        """The config of the stack that scores (a vision-language model's text model; the config itself otherwise)."""
        return self.config.get_text_config()

    @property
    def width(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    def parameters(self) -> Any:
        return self.net.parameters()

    def named_parameters(self) -> Any:
        return self.net.named_parameters()

    def parameter_count(self) -> int:
        return sum(int(p.numel()) for p in self.hf.parameters())

    def to(self, device: str) -> "TrainableModel":
        self.device = device
        self.net.to(device)
        return self

    def train(self, mode: bool = True) -> "TrainableModel":
        self.net.train(mode)
        return self

    @property
    def training(self) -> bool:
        return bool(self.net.training)

    def freeze(self) -> "TrainableModel":
        """A teacher: eval mode, no gradients."""
        self.net.eval().requires_grad_(False)
        return self

    # -- checkpoint state: the trained parameters only when the rest is frozen (LoRA) -------------------

    def trainable_state(self) -> dict[str, Any]:
        if self.lora is None:
            return self.net.state_dict()
        return {n: p.detach().clone() for n, p in self.net.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, Any]) -> None:
        missing, unexpected = self.net.load_state_dict(state, strict=self.lora is None)
        if unexpected:
            raise InputError(f"the checkpoint holds parameters this model lacks, e.g. {unexpected[0]}; use a new --out")

    # -- inputs ---------------------------------------------------------------------------------------

    def _tensors(self, sequences: Sequence[Any]) -> dict[str, Any]:
        torch = require("torch")
        from rerankd.batching import pad_batch

        if any(s.extras for s in sequences):
            # Extras (media, M-RoPE positions) only come from vision-language families, whose model
            # collates its sequences itself (VisionLanguageYesNoModel.encode).
            raise UnsupportedModelError(f"{type(self).__name__} cannot read the media of {self.family.kind} sequences")
        batch = pad_batch(sequences, self.family.padding)
        inputs = {"input_ids": torch.from_numpy(batch.input_ids).to(self.device),
                  "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device)}
        if batch.token_type_ids is not None:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self.device)
        return inputs

    def _requests(self, pairs: PairTexts) -> list[tuple[int, int, Any]]:
        return [(start, end, self.family.prepare(_document(pairs.queries[start]),
                                                 [_document(d) for d in pairs.docs[start:end]],
                                                 instruction=pairs.instructions[start]))
                for start, end in _runs(pairs)]

    def _doc_sequences(self, pairs: PairTexts) -> list[Any]:
        """The family's encoded sequence of every pair, in order."""
        sequences = []
        for _, _, request in self._requests(pairs):
            sequences += [request.sequences[i] for i in request.doc_sequences]
        return sequences

    def encode(self, pairs: PairTexts) -> dict[str, Any]:
        """Padded tensors for the pairs, tokenized by the family exactly as at inference."""
        return self._tensors(self._doc_sequences(pairs))

    # -- forward --------------------------------------------------------------------------------------

    def forward(self, inputs: dict[str, Any], layers: Sequence[int] = (), pooling: str = "position") -> ModelOutput:
        """Scores of the pairs; with ``layers`` (``output_hidden_states`` indices), their feature vectors."""
        raise NotImplementedError

    def _features(self, hidden_states: Sequence[Any], mask: Any, layers: Sequence[int], pooling: str) -> list[Any]:
        if pooling not in FEATURE_POOLINGS:
            raise InputError(f"feature pooling must be one of {FEATURE_POOLINGS}, got {pooling!r}")
        out = []
        for layer in layers:
            if not 0 <= layer < len(hidden_states):
                raise InputError(f"hidden-state layer {layer} is out of range: the model has layers 0..{len(hidden_states) - 1}")
            hidden = hidden_states[layer].float()
            out.append(_masked_mean(hidden, mask) if pooling == "mean" else self._at_scoring_position(hidden, mask))
        return out

    def _at_scoring_position(self, hidden: Any, mask: Any) -> Any:
        return hidden[:, 0]

    def score(self, pairs: PairTexts, batch_pairs: int, bf16: bool) -> np.ndarray:
        """Scores of many pairs: length-sorted batches, eval mode, no grad."""
        torch = require("torch")
        from rerankd.training.trainer import autocast

        lengths = [_size(q) + _size(d) for q, d in zip(pairs.queries, pairs.docs)]
        order = np.argsort(lengths, kind="stable")
        out = np.zeros(len(pairs), dtype=np.float64)
        was_training = self.training
        self.net.eval()
        with torch.inference_mode(), autocast(self.device, bf16):
            for start in range(0, len(order), batch_pairs):
                rows = [int(i) for i in order[start : start + batch_pairs]]
                out[rows] = self.forward(self.encode(pairs.take(rows))).scores.float().cpu().numpy()
        self.net.train(was_training)
        return out

    # -- saving ---------------------------------------------------------------------------------------

    def save(self, out_dir: Path, max_length: int) -> None:
        """The model in the Hugging Face layout, loadable by rerankd (merged, or a LoRA adapter)."""
        if self.lora is not None:
            from rerankd.training.lora import save_lora

            save_lora(self, Path(out_dir), max_length)
            return
        self.save_weights(self.hf, Path(out_dir), max_length)

    def save_weights(self, model: Any, out_dir: Path, max_length: int) -> None:
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(out_dir)
        # Inference should read as many tokens as training did: rerankd and CrossEncoder both take
        # the tokenizer's model_max_length as the pair limit.
        self.tokenizer.model_max_length = max_length
        self.tokenizer.save_pretrained(out_dir)


class PairLogitModel(TrainableModel):
    kind = "pair-logit"

    def forward(self, inputs: dict[str, Any], layers: Sequence[int] = (), pooling: str = "position") -> ModelOutput:
        from rerankd.backends.torch_modules import pair_score

        out = self.net(**inputs, output_hidden_states=bool(layers))
        scores = pair_score(out.logits, self.family.num_labels)
        features = self._features(out.hidden_states, inputs["attention_mask"], layers, pooling) if layers else None
        return ModelOutput(scores, features)


class YesNoModel(TrainableModel):
    kind = "yes-no-row"

    def _row(self) -> Any:
        """w_yes − w_no from the current weights (trained, tied or adapted), as inference reads it."""
        head = self.family.head
        if head.row_source == "score":
            weight = self.hf.score.weight
            return weight[0] if weight.shape[0] == 1 else weight[1] - weight[0]
        weight = self.hf.get_output_embeddings().weight
        return weight[head.yes_id] - weight[head.no_id]

    def forward(self, inputs: dict[str, Any], layers: Sequence[int] = (), pooling: str = "position") -> ModelOutput:
        out = self.hf.base_model(**inputs, output_hidden_states=bool(layers), use_cache=False)
        scores = out.last_hidden_state[:, -1, :].float() @ self._row().float()
        features = self._features(out.hidden_states, inputs["attention_mask"], layers, pooling) if layers else None
        return ModelOutput(scores, features)

    def _at_scoring_position(self, hidden: Any, mask: Any) -> Any:
        return hidden[:, -1]  # left-padded: the answer position of every row


class VisionLanguageYesNoModel(YesNoModel):
    """A Qwen3-VL yes/no reranker: the inference module's forward (vision tower, visual tokens and deepstack
    features scattered in, M-RoPE positions), left-padded, scored with the current yes − no row."""

    kind = "yes-no-row/vision"

    def encode(self, pairs: PairTexts) -> dict[str, Any]:
        """The family's sequences (token ids, media, positions): the module pads them as inference does."""
        return {"sequences": self._doc_sequences(pairs)}

    def _module(self) -> Any:
        from rerankd.backends.vision_language import VisionLanguageYesNo

        config = self.config
        # No feature cache: the tower's output carries gradients, and the tower may be training.
        # The row given here only places the inputs; scores use _row() so that gradients reach it.
        row = self._row().detach()
        return VisionLanguageYesNo(self.hf.model, row, self.family.pad_token_id, int(config.image_token_id),
                                   int(config.video_token_id))

    def forward(self, inputs: dict[str, Any], layers: Sequence[int] = (), pooling: str = "position") -> ModelOutput:
        module = self._module()
        sequences = inputs["sequences"]
        out, mask = module.padded_text(sequences, module.visual_features(sequences), hidden_states=bool(layers))
        scores = out.last_hidden_state[:, -1, :].float() @ self._row().float()
        features = self._features(out.hidden_states, mask, layers, pooling) if layers else None
        return ModelOutput(scores, features)

    def save_weights(self, model: Any, out_dir: Path, max_length: int) -> None:
        super().save_weights(model, out_dir, max_length)
        # The image processor's settings and the chat template: the family reads them at load.
        for name in VL_PROCESSOR_FILES:
            if (self.source / name).is_file():
                shutil.copy2(self.source / name, Path(out_dir) / name)


#: The processor files of a Qwen3-VL model folder, beside its weights and tokenizer.
VL_PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "chat_template.json",
                      "chat_template.jinja")


class PooledModel(TrainableModel):
    """A bi-encoder: each pair's query and document embedded apart (each distinct query once)."""

    kind = "pooled-embedding"

    def encode(self, pairs: PairTexts) -> dict[str, Any]:
        torch = require("torch")
        sequences, query_rows, doc_rows = [], [], []
        for start, end, request in self._requests(pairs):
            query_row = len(sequences)
            sequences.append(request.sequences[0])
            for i in request.doc_sequences:
                query_rows.append(query_row)
                doc_rows.append(len(sequences))
                sequences.append(request.sequences[i])
        inputs = self._tensors(sequences)
        inputs["query_rows"] = torch.tensor(query_rows, device=self.device)
        inputs["doc_rows"] = torch.tensor(doc_rows, device=self.device)
        return inputs

    def forward(self, inputs: dict[str, Any], layers: Sequence[int] = (), pooling: str = "position") -> ModelOutput:
        from rerankd.backends.torch_modules import pool

        tensors = {k: v for k, v in inputs.items() if k not in ("query_rows", "doc_rows")}
        out = self.net(**tensors, output_hidden_states=bool(layers))
        mask = tensors["attention_mask"]
        embeddings = pool(out.last_hidden_state, mask, self.family.pooling, self.family.normalize_embeddings)
        unit = require("torch").nn.functional.normalize(embeddings, p=2, dim=1)
        docs = inputs["doc_rows"]
        scores = (unit[inputs["query_rows"]] * unit[docs]).sum(dim=1)
        features = None
        if layers:  # the document's side: what the model computes for the pair's document
            features = [f[docs] for f in self._features(out.hidden_states, mask, layers, pooling)]
        return ModelOutput(scores, features)

    def _at_scoring_position(self, hidden: Any, mask: Any) -> Any:
        from rerankd.backends.torch_modules import pool

        return pool(hidden, mask, self.family.pooling, False)

    def save_weights(self, model: Any, out_dir: Path, max_length: int) -> None:
        super().save_weights(model, out_dir, max_length)
        # The sentence-transformers modules (pooling, normalize) come along unchanged.
        from rerankd.families.bi_encoder import read_modules

        for module in read_modules(self.source):
            path = str(module.get("path", ""))
            if path and (self.source / path).is_dir():
                shutil.copytree(self.source / path, Path(out_dir) / path, dirs_exist_ok=True)
        for name in ("modules.json", "config_sentence_transformers.json"):
            if (self.source / name).is_file():
                shutil.copy2(self.source / name, Path(out_dir) / name)
        import json

        (Path(out_dir) / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_length, "do_lower_case": False}), encoding="utf-8")


#: head key (``head_key``) → the trainable model class and the transformers auto class its weights load with.
MODELS: dict[str, tuple[type[TrainableModel], Callable[[Any], str]]] = {
    "pair-logit": (PairLogitModel, lambda head: "AutoModelForSequenceClassification"),
    "yes-no-row": (YesNoModel, lambda head: "AutoModelForSequenceClassification" if head.row_source == "score" else "AutoModelForCausalLM"),
    "yes-no-row/vision": (VisionLanguageYesNoModel, lambda head: "AutoModelForImageTextToText"),
    "pooled-embedding": (PooledModel, lambda head: "AutoModel"),
}


def _disable_attention_dropout(config: Any) -> None:
    # Attention dropout makes torch skip the fused SDPA kernel: measured 7.4 s vs 1.0 s for the
    # attention forward of a 32x256 MiniLM batch on CPU (PERF.md). Hidden dropout alone is cheap
    # and keeps most of the regularisation.
    # A vision-language config keeps its text model's settings in a sub-config.
    text = config.get_text_config()
    for sub in [config] if text is config else [config, text]:
        for name in ("attention_probs_dropout_prob", "attention_dropout"):
            if hasattr(sub, name):
                setattr(sub, name, 0.0)


def _family_of(model_dir: Path, wanted: str, max_length: int | None, teacher: bool) -> Any:
    """The family a model trains as: its own, or (``auto``) a cross-encoder for a bi-encoder or a bare encoder."""
    from rerankd.families import CrossEncoderFamily, load_family
    from rerankd.families.base import load_tokenizer, read_json
    from rerankd.families.detect import DECODER_TYPES, VISION_LANGUAGE_TYPES, detect_kind

    if wanted not in STUDENT_FAMILIES:
        raise InputError(f"unknown model family {wanted!r}; use one of {STUDENT_FAMILIES}")
    config = read_json(model_dir / "config.json")
    try:
        kind: str | None = detect_kind(model_dir, config)
    except UnsupportedModelError:
        kind = None  # a bare encoder (e.g. a BertModel): it trains as a cross-encoder with a new head
    if wanted == "auto":
        wanted = kind if kind in ("llm-yes-no", "vision-language", "cross-encoder") or (teacher and kind) else "cross-encoder"
    if wanted != "cross-encoder" and wanted != kind:
        raise InputError(f"{model_dir} is a {kind or 'bare encoder'} model; it cannot train as a {wanted}")
    if wanted != "cross-encoder" or kind == "cross-encoder":
        family = load_family(model_dir, max_length)
        if family.kind == "cross-encoder" and family.num_labels != 1 and not teacher:
            raise UnsupportedModelError(
                f"{model_dir} is a classifier with {family.num_labels} labels; training needs an encoder or a 1-label cross-encoder")
        return family
    if str(config.get("model_type", "")) in DECODER_TYPES:
        raise InputError(f"{model_dir} is a decoder; it trains as an LLM yes/no reranker, not a cross-encoder")
    if str(config.get("model_type", "")) in VISION_LANGUAGE_TYPES:
        raise InputError(f"{model_dir} is a vision-language model; it trains as a vision-language reranker, not a cross-encoder")
    fresh = {**config, "num_labels": 1, "id2label": {"0": "LABEL_0"}}
    length = max_length or 512
    return CrossEncoderFamily(model_dir, fresh, load_tokenizer(model_dir), length)


def load_trainable(model: str | Path | None, *, family: str = "auto", max_length: int | None = None,
                   teacher: bool = False, dropout_attention: bool = False) -> TrainableModel:
    """A trainable model of ``model`` (directory, hub id, ``None`` for the bundled all-MiniLM-L6-v2).

    Args:
        family: ``auto`` keeps an LLM or vision-language reranker or a cross-encoder as it is and makes a bi-encoder or a
            bare encoder a cross-encoder with a new 1-label head (what ``rerankd train`` has always
            done); ``bi-encoder`` trains a bi-encoder as one.
        max_length: tokens per pair (the family's default when ``None``).
        teacher: loading a frozen teacher (any family, 2-label classifiers too).
    """
    transformers = require("transformers")
    from rerankd.hub import resolve_model

    model_dir, _ = resolve_model(str(model) if model else None)
    fam = _family_of(model_dir, family, max_length, teacher)
    from rerankd.backends.torch_modules import head_key

    cls, auto_name = MODELS[head_key(fam.head)]
    config = transformers.AutoConfig.from_pretrained(str(model_dir))
    if fam.kind == "cross-encoder" and not teacher:
        config.num_labels = 1
    if not dropout_attention:
        _disable_attention_dropout(config)
    auto = getattr(transformers, auto_name(fam.head))
    net = auto.from_pretrained(str(model_dir), config=config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    return cls(fam, net, tokenizer, model_dir)


def cut_student(teacher: TrainableModel, layers: list[int]) -> TrainableModel:
    """A copy of ``teacher`` keeping only ``layers`` (embeddings, final norm and head copied)."""
    from rerankd.training.students import cut_layers

    net = cut_layers(teacher.net, layers)
    return type(teacher)(teacher.family, net, copy.deepcopy(teacher.tokenizer), teacher.source, list(layers))
