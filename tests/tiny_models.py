"""Tiny random models of the real architectures, saved to disk the way the hub ships them.

Weights are drawn with a large init range so that scores differ clearly between documents: parity
tests on near-constant scores would pass for the wrong reasons.
"""

from __future__ import annotations

import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
TOKENIZERS = SHARED / "tokenizers"
DATA = SHARED / "data"
MINILM_TOKENIZER = TOKENIZERS / "ms-marco-MiniLM-L-6-v2"
QWEN3_TOKENIZER = TOKENIZERS / "qwen3"

INIT_RANGE = 0.3


def missing_shared(*parts: str) -> str | None:
    """A skip reason naming the first of ``../shared/<part>`` that is absent; None when all are there."""
    for part in parts:
        if not (SHARED / part).exists():
            return f"needs ../shared/{part} (CI has it; a user's clone does not)"
    return None


def requires_shared(*parts: str):  # type: ignore[no-untyped-def]
    """A mark that skips a test (or, as ``pytestmark``, a module) unless ``../shared/<part>`` exists."""
    import pytest

    reason = missing_shared(*parts)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def skip_without_shared(*parts: str) -> None:
    """Skip the calling test or fixture unless ``../shared/<part>`` exists (for tiny-model fixtures)."""
    import pytest

    reason = missing_shared(*parts)
    if reason:
        pytest.skip(reason)


def _seed() -> None:
    import torch

    torch.manual_seed(0)


def _save(model, tokenizer, out: Path) -> Path:  # type: ignore[no-untyped-def]
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def bert_cross_encoder(out: Path, num_labels: int = 1, hidden: int = 32, layers: int = 2) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    _seed()
    tok = AutoTokenizer.from_pretrained(str(MINILM_TOKENIZER))
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=2 * hidden, num_labels=num_labels, max_position_embeddings=512, initializer_range=INIT_RANGE,
    )
    return _save(BertForSequenceClassification(cfg), tok, out)


def xlmr_tokenizer(out: Path):  # type: ignore[no-untyped-def]
    """An XLM-R (SentencePiece unigram) tokenizer trained on real SciFact text: none ships in shared/."""
    import transformers
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizer

    texts = []
    with open(DATA / "scifact" / "corpus.jsonl", encoding="utf-8") as fh:
        for _, line in zip(range(1500), fh):
            texts.append(json.loads(line)["text"])
    trainer = SentencePieceUnigramTokenizer()
    trainer.train_from_iterator(texts, vocab_size=1500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>")
    vocab = [(piece, score) for piece, score in json.loads(trainer.to_str())["model"]["vocab"]]
    if int(transformers.__version__.split(".")[0]) >= 5:
        return XLMRobertaTokenizer(vocab=vocab)
    # transformers 4.x builds XLMRobertaTokenizer from a SentencePiece file only: wrap the trained
    # tokenizer with XLM-R's template instead (the same ids as the 5.x tokenizer above).
    from tokenizers import Tokenizer, processors
    from transformers import XLMRobertaTokenizerFast

    inner = Tokenizer.from_str(trainer.to_str())
    inner.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return XLMRobertaTokenizerFast(tokenizer_object=inner, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def xlmr_cross_encoder(out: Path) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    tok = xlmr_tokenizer(out)
    _seed()
    cfg = XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_labels=1, max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        initializer_range=INIT_RANGE, type_vocab_size=1,
    )
    return _save(XLMRobertaForSequenceClassification(cfg), tok, out)


def _qwen3_config(hidden: int = 32, layers: int = 2, head_dim: int = 8, **extra):  # type: ignore[no-untyped-def]
    from transformers import Qwen3Config

    real = json.loads((QWEN3_TOKENIZER / "config.json").read_text())
    return Qwen3Config(
        vocab_size=real["vocab_size"], hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        head_dim=head_dim, intermediate_size=2 * hidden, max_position_embeddings=8192, tie_word_embeddings=True,
        initializer_range=INIT_RANGE, rope_theta=real.get("rope_theta", 1000000), **extra,
    )


def qwen3_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER))


def qwen3_causal_lm(out: Path, tie: bool = True, hidden: int = 32, layers: int = 2, head_dim: int = 8) -> Path:
    """A Qwen3-Reranker-shaped causal LM; ``hidden``/``layers`` make a smaller one of the same family."""
    from transformers import Qwen3ForCausalLM

    _seed()
    cfg = _qwen3_config(hidden, layers, head_dim)
    cfg.tie_word_embeddings = tie
    return _save(Qwen3ForCausalLM(cfg), qwen3_tokenizer(), out)


def qwen3_seq_cls(out: Path) -> Path:
    """The converted 1-label form: score row = w_yes − w_no of a causal LM."""
    import torch
    from transformers import Qwen3ForCausalLM, Qwen3ForSequenceClassification

    tok = qwen3_tokenizer()
    _seed()
    lm = Qwen3ForCausalLM(_qwen3_config())
    cfg = _qwen3_config(num_labels=1, pad_token_id=tok.pad_token_id)
    cls = Qwen3ForSequenceClassification(cfg)
    cls.model.load_state_dict(lm.model.state_dict())
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    with torch.no_grad():
        cls.score.weight.copy_((lm.lm_head.weight[yes] - lm.lm_head.weight[no]).unsqueeze(0))
    return _save(cls, tok, out)


def bi_encoder(out: Path) -> Path:
    """A tiny BERT saved in the sentence-transformers layout (Transformer → mean Pooling → Normalize)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    _seed()
    tok = AutoTokenizer.from_pretrained(str(MINILM_TOKENIZER))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=512, initializer_range=INIT_RANGE)
    raw = out.parent / (out.name + "-raw")
    _save(BertModel(cfg), tok, raw)
    transformer = models.Transformer(str(raw), max_seq_length=128)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()]).save(str(out))
    return out


def encoder_cross_encoder(out: Path, model_type: str) -> Path:
    """A tiny 1-label cross-encoder of another encoder architecture, on the real MiniLM tokenizer."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    _seed()
    tok = AutoTokenizer.from_pretrained(str(MINILM_TOKENIZER))
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    extra: dict = {"electra": {"embedding_size": 32}, "deberta-v2": {"type_vocab_size": 0}, "modernbert": {"global_attn_every_n_layers": 1}}.get(model_type, {})
    cfg = AutoConfig.for_model(model_type, vocab_size=tok.vocab_size, num_labels=1, pad_token_id=tok.pad_token_id,
                               max_position_embeddings=512, initializer_range=INIT_RANGE, **sizes, **extra)
    return _save(AutoModelForSequenceClassification.from_config(cfg), tok, out)


# -- Qwen3-VL ------------------------------------------------------------------------------------------

#: The Qwen3-VL chat template's rendering of text, image and video content items (the Instruct
#: models' template, no <think> block): items are concatenated with nothing between them.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}"
    "{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content.type == 'video' or 'video' in content %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in content %}{{- content.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: Qwen3-VL-2B-Instruct's shapes (its config.json; transformers' Qwen3VLConfig defaults are the 8B's).
QWEN3_VL_2B_TEXT = dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                        head_dim=128, intermediate_size=6144, max_position_embeddings=262144,
                        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                         "mrope_section": [24, 20, 20], "mrope_interleaved": True})
QWEN3_VL_2B_VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                          deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304)
QWEN3_VL_TINY_TEXT = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=16, intermediate_size=128, max_position_embeddings=32768,
                          rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                           "mrope_section": [4, 2, 2], "mrope_interleaved": True})
QWEN3_VL_TINY_VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                            deepstack_visual_indexes=[0, 1], num_position_embeddings=64)
#: A smaller model of the same family (a distillation student): half as wide, one text layer.
QWEN3_VL_SMALL_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                           head_dim=16, intermediate_size=64, max_position_embeddings=32768,
                           rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                            "mrope_section": [4, 2, 2], "mrope_interleaved": True})
QWEN3_VL_SMALL_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                             deepstack_visual_indexes=[0], num_position_embeddings=64)


def qwen3_vl(out: Path, shape: str = "tiny", init_range: float = 0.1) -> Path:
    """A random Qwen3VLForConditionalGeneration saved as the hub ships it (config, weights, tokenizer,
    preprocessor_config.json, chat_template.json). ``shape``: ``tiny`` (tests), ``small`` (a narrower,
    1-layer student of the tiny one) or ``2b`` (benchmarks)."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tok = qwen3_tokenizer()
    text, vision = {"tiny": (QWEN3_VL_TINY_TEXT, QWEN3_VL_TINY_VISION), "small": (QWEN3_VL_SMALL_TEXT, QWEN3_VL_SMALL_VISION),
                    "2b": (QWEN3_VL_2B_TEXT, QWEN3_VL_2B_VISION)}[shape]
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=151936, hidden_act="silu", rms_norm_eps=1e-6, initializer_range=init_range,
                         tie_word_embeddings=True, **text),
        vision_config=dict(patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                           hidden_act="gelu_pytorch_tanh", initializer_range=init_range, **vision),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    if shape == "2b":
        model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class": "Qwen3VLProcessor",
        "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "size": {"longest_edge": 16777216, "shortest_edge": 65536},
    }, indent=2))
    # The processor's template (the tokenizer saved above wrote the text Qwen3's in chat_template.jinja).
    (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN3_VL_CHAT_TEMPLATE}))
    (out / "chat_template.jinja").write_text(QWEN3_VL_CHAT_TEMPLATE)
    return out
