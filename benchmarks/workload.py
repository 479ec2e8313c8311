"""The rerank-100 workload of ../shared/perf/PERF.md, shared by every benchmark script.

One query (~20 tokens) and documents whose token lengths are lognormal(median 160, sigma 0.6), seed 0,
clipped to [16, 487]. Three model shapes with random weights and the real configs. Document texts are
real SciFact abstracts cut to the drawn token length, so rerankd's full path (tokenization included)
runs on realistic text.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from rerankd.measure import document_lengths as doc_token_lengths  # noqa: F401 - the one definition, used by every script

SHARED = Path(__file__).resolve().parents[2] / "shared"
SCIFACT = SHARED / "data" / "scifact" / "corpus.jsonl"
MINILM_TOKENIZER = SHARED / "tokenizers" / "ms-marco-MiniLM-L-6-v2"
QWEN3_TOKENIZER = SHARED / "tokenizers" / "qwen3"
QUERY = "Which immune cells drive inflammation in chronic kidney disease after injury?"
SHAPES = ("minilm", "xlmr", "qwen")


def _corpus_texts(limit: int = 3000) -> list[str]:
    texts = []
    with open(SCIFACT, encoding="utf-8") as fh:
        for _, line in zip(range(limit), fh):
            row = json.loads(line)
            texts.append(f"{row.get('title', '')}. {row['text']}")
    return texts


def make_documents(tokenizer: Any, lengths: list[int]) -> list[str]:
    """Real text cut to each target token length (``tokenizer`` is a transformers tokenizer)."""
    stream: list[int] = []
    for text in _corpus_texts():
        stream.extend(tokenizer.encode(text, add_special_tokens=False))
        if len(stream) > sum(lengths) + 1000:
            break
    docs, pos = [], 0
    for n in lengths:
        docs.append(tokenizer.decode(stream[pos : pos + n]))
        pos += n
    return docs


def _xlmr_tokenizer() -> Any:
    # No XLM-R tokenizer ships in shared/: train a SentencePiece unigram one on real text.
    # The model keeps its real 250002-row vocabulary; only ids below the tokenizer's size are used.
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizer

    trainer = SentencePieceUnigramTokenizer()
    trainer.train_from_iterator(_corpus_texts(2000), vocab_size=8000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>")
    vocab = [(piece, score) for piece, score in json.loads(trainer.to_str())["model"]["vocab"]]
    return XLMRobertaTokenizer(vocab=vocab)


def build_shape(shape: str, out: Path | None = None) -> Path:
    """Save a random-weight model of one shape with its tokenizer; returns the directory."""
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    out = out or Path(tempfile.mkdtemp(prefix=f"rerankd-{shape}-"))
    if (out / "config.json").exists():
        return out
    if shape == "minilm":
        from transformers import BertConfig, BertForSequenceClassification

        tok = AutoTokenizer.from_pretrained(str(MINILM_TOKENIZER))
        model = BertForSequenceClassification(BertConfig(
            vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, num_labels=1))
    elif shape == "xlmr":
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

        tok = _xlmr_tokenizer()
        model = XLMRobertaForSequenceClassification(XLMRobertaConfig(
            vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            max_position_embeddings=8194, num_labels=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1))
    elif shape == "qwen":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        tok = AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER))
        model = Qwen3ForCausalLM(Qwen3Config(
            vocab_size=151669, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
            head_dim=128, intermediate_size=3072, tie_word_embeddings=True, max_position_embeddings=40960))
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def docs_for(shape: str) -> int:
    """Documents per run: the full 100 for MiniLM, 20 for the large shapes (as PERF.md's baseline does)."""
    return 100 if shape == "minilm" else 20


def flops_by_part(model_dir: Path, token_lengths: list[int]) -> dict[str, float]:
    """PERF.md's useful work, split: ``linear`` = 2 × non-embedding params × tokens, ``attention`` = 4 × layers × tokens² × hidden."""
    cfg = json.loads((model_dir / "config.json").read_text())
    h, layers, ffn, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    if cfg["model_type"] == "qwen3":
        heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        per_layer = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * ffn
        nonemb = layers * per_layer + h * v  # tied lm_head counted as in PERF.md's baseline
    else:
        nonemb = layers * (4 * h * h + 2 * h * ffn)
    return {"linear": float(sum(2 * nonemb * n for n in token_lengths)),
            "attention": float(sum(4 * layers * n * n * h for n in token_lengths))}


def useful_flops(model_dir: Path, token_lengths: list[int]) -> float:
    """PERF.md's useful work: 2 × non-embedding params × tokens + 4 × layers × tokens² × hidden."""
    return sum(flops_by_part(model_dir, token_lengths).values())


def torch_engine(model_dir: Path, dtype: str, onednn: bool) -> Any:
    """A CPU torch Reranker as ``from_pretrained`` builds it (same batch budget), with or without oneDNN layers."""
    from rerankd import Reranker
    from rerankd.backends.torch_backend import TorchBackend
    from rerankd.batching import BatchLimits
    from rerankd.device import default_batch_tokens
    from rerankd.families import load_family

    family = load_family(model_dir)
    return Reranker(family, TorchBackend(family, device="cpu", dtype=dtype, onednn=onednn),
                    batch_limits=BatchLimits(default_batch_tokens("cpu")))


def attention_seconds(model_dir: Path, token_lengths: list[int], reps: int = 3) -> float:
    """Seconds that exact attention alone takes over the workload: every layer, bf16, per sequence.

    The kernel and the call pattern are the packed CPU path's (backends/packed.py): one mask-free
    ``scaled_dot_product_attention`` per sequence. Decoders attend causally (their shared prompt is
    not split off here, so this overstates their attention a little). What it shows: however fast the
    linear layers get, pairs/s cannot pass pairs ÷ this time with this kernel.
    """
    import torch

    from rerankd.measure import interleaved_median_seconds

    cfg = json.loads((model_dir / "config.json").read_text())
    heads, layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    causal = cfg["model_type"] == "qwen3"
    q, k, v = (torch.randn(1, heads, sum(token_lengths), head_dim, dtype=torch.bfloat16) for _ in range(3))
    bounds = list(itertools.accumulate(token_lengths, initial=0))

    def one_layer() -> None:
        for start, end in zip(bounds[:-1], bounds[1:]):
            torch.nn.functional.scaled_dot_product_attention(q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], is_causal=causal)

    return layers * interleaved_median_seconds({"layer": one_layer}, reps, warmup=1)["layer"]


def gemm_ceiling(dtype: str = "bf16", n: int = 2048, reps: int = 10) -> float:
    """Operations per second of an n³ GEMM through torch: ``bf16`` is the ceiling PERF.md quotes (roofline.py);
    ``int8`` is ``torch._int_mm`` (int8 × int8 → int32), the most any W8A8 path could get from the hardware."""
    import torch

    if dtype == "int8":
        a, b = (torch.randint(-128, 128, (n, n), dtype=torch.int8) for _ in range(2))
        matmul = torch._int_mm
    else:
        a, b = (torch.randn(n, n, dtype=torch.bfloat16) for _ in range(2))
        matmul = torch.matmul
    for _ in range(3):
        matmul(a, b)
    start = time.perf_counter()
    for _ in range(reps):
        matmul(a, b)
    return 2 * n**3 / ((time.perf_counter() - start) / reps)


def interleaved_times(fns: dict[str, Callable[[], Any]], reps: int = 3) -> dict[str, float]:
    """Median seconds of each function, run in turns (one warm-up round) so that noise on a shared machine hits all alike."""
    from rerankd.measure import interleaved_median_seconds

    return interleaved_median_seconds(fns, reps, warmup=1)


def naive_scorer(model_dir: Path, shape: str) -> Callable[[str, list[str]], None]:
    """PERF.md's naive baseline: HF fp32, batch 32 in input order, full-vocab logits for Qwen."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if shape == "qwen":
        tok.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    batch = 32 if shape != "qwen" else 8

    def run(query: str, docs: list[str]) -> None:
        from rerankd.families.llm_yes_no import DEFAULT_INSTRUCTION, PREFIX, SUFFIX, format_body

        with torch.inference_mode():
            for i in range(0, len(docs), batch):
                chunk = docs[i : i + batch]
                if shape == "qwen":  # the official prompt, so both sides score the same tokens
                    texts = [PREFIX + format_body(DEFAULT_INSTRUCTION, query, d) + SUFFIX for d in chunk]
                    enc = tok(texts, padding=True, return_tensors="pt")
                    model(**enc).logits[:, -1, :]
                else:
                    enc = tok([query] * len(chunk), chunk, padding=True, truncation=True, return_tensors="pt")
                    model(**enc).logits
    return run
