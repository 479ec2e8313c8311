"""Which family a model directory belongs to, read from the model's own files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerankd.errors import InputError, ModelNotFoundError, UnsupportedModelError
from rerankd.families.base import Family, FamilyKind, load_tokenizer, positive_int, read_json
from rerankd.families.bi_encoder import BiEncoderFamily, pooling_dir
from rerankd.families.cross_encoder import CrossEncoderFamily
from rerankd.families.llm_yes_no import DEFAULT_MAX_LENGTH, LlmYesNoFamily
from rerankd.families.vision_language import DEFAULT_MAX_LENGTH as VL_MAX_LENGTH
from rerankd.families.vision_language import VisionLanguageFamily

# Decoder-only model types: a sequence classifier of one of these is an LLM reranker in the converted
# 1-label form (e.g. Qwen3ForSequenceClassification), prompted and padded like the causal LM.
DECODER_TYPES = {"qwen3", "qwen2", "llama", "mistral", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3", "qwen3_moe"}

SUPPORTED = (
    "cross-encoders (*ForSequenceClassification with 1 or 2 labels), "
    "LLM yes/no rerankers (*ForCausalLM such as Qwen3-Reranker, or their 1-label *ForSequenceClassification form), "
    "vision-language yes/no rerankers (Qwen3-VL *ForConditionalGeneration such as Qwen3-VL-Reranker), "
    "and sentence-transformers bi-encoders (modules.json with a Pooling module)"
)

_FAMILIES: dict[FamilyKind, type[Family]] = {
    "cross-encoder": CrossEncoderFamily,
    "llm-yes-no": LlmYesNoFamily,
    "bi-encoder": BiEncoderFamily,
    "vision-language": VisionLanguageFamily,
}

#: model types whose *ForConditionalGeneration is scored as a vision-language yes/no reranker.
VISION_LANGUAGE_TYPES = {"qwen3_vl"}


def detect_kind(model_dir: Path, config: dict[str, Any]) -> FamilyKind:
    architectures = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type", ""))
    if model_type in VISION_LANGUAGE_TYPES and any(a.endswith("ForConditionalGeneration") for a in architectures):
        return "vision-language"
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "llm-yes-no" if model_type in DECODER_TYPES else "cross-encoder"
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "llm-yes-no"
    if pooling_dir(model_dir) is not None:
        return "bi-encoder"
    raise UnsupportedModelError(
        f"{model_dir} (architectures {architectures or 'none'}, model_type {model_type or 'none'}) is not a model "
        f"rerankd can score; supported: {SUPPORTED}"
    )


#: Families whose default length is the official models' (their tokenizers carry the context window).
FAMILY_MAX_LENGTH: dict[FamilyKind, int] = {"llm-yes-no": DEFAULT_MAX_LENGTH, "vision-language": VL_MAX_LENGTH}


def tokenizer_max_length(model_dir: Path) -> int:
    """The tokenizer's ``model_max_length``; 0 when it is absent or the "no limit" sentinel (int(1e30))."""
    return positive_int(read_json(model_dir / "tokenizer_config.json").get("model_max_length"), 0)


def default_max_length(kind: FamilyKind, model_dir: Path, config: dict[str, Any]) -> int:
    """Tokens per sequence when the caller gives no ``max_length``.

    A saved student records the length it trained at as its tokenizer's ``model_max_length``
    (:meth:`rerankd.training.models.TrainableModel.save_weights`), and every family reads it back.
    For the LLM and vision-language families it can only lower the family default: the hub's Qwen3
    tokenizers carry the context window (131072), far past the length the rerankers are run at.

    Example:
        >>> default_max_length("llm-yes-no", Path("no-such-dir"), {})
        8192
    """
    tokenizer_max = tokenizer_max_length(model_dir)
    if kind in FAMILY_MAX_LENGTH:
        family_max = FAMILY_MAX_LENGTH[kind]
        return min(family_max, tokenizer_max) if tokenizer_max else family_max
    st = read_json(model_dir / "sentence_bert_config.json")
    if st.get("max_seq_length"):
        return positive_int(st["max_seq_length"], 512)
    if tokenizer_max:
        return tokenizer_max
    positions = positive_int(config.get("max_position_embeddings"), 514)
    # RoBERTa-style models reserve padding_idx + 1 positions.
    return positions - 2 if config.get("model_type") in {"roberta", "xlm-roberta", "camembert"} else positions


def load_family(model_dir: Path, max_length: int | None = None) -> Family:
    """Read a model directory and build the family that tokenizes and scores for it.

    Example:
        >>> family = load_family(Path("my-cross-encoder"))   # doctest: +SKIP
        >>> family.kind                                       # doctest: +SKIP
        'cross-encoder'
    """
    if not (model_dir / "config.json").is_file():
        raise ModelNotFoundError(f"{model_dir} is not a model directory: it has no config.json")
    config = read_json(model_dir / "config.json")
    kind = detect_kind(model_dir, config)
    if max_length is not None and max_length < 8:
        raise InputError(f"max_length must be at least 8 tokens, got {max_length}")
    length = max_length or default_max_length(kind, model_dir, config)
    return _FAMILIES[kind](model_dir, config, load_tokenizer(model_dir), length)
