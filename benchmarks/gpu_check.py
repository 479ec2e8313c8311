"""The GPU verification of rerankd's CUDA path, in one run (≤ 8 minutes on one H200).

Random weights of real architectures, built on the GPU from configs written here (no download):
MiniLM-L6 (BERT cross-encoder), XLM-R large (cross-encoder), Qwen3-0.6B and Qwen3-4B (yes−no LLM
rerankers); synthetic token ids with the rerank-100 length mix (and a shared prompt prefix for the
LLMs). Per model, through rerankd's own modules, backend and pipeline:

* scores: padded bf16, packed bf16 (varlen attention) and padded fp32: max |Δ| and Spearman;
* speed: pairs/s and tokens/s, padded and packed, at 3 token budgets; % of the measured bf16
  matmul peak (useful FLOPs: real tokens only); peak GPU memory;
* the memory plan at load (profiling pass, budget, warm-up at the budget);
* a forced OOM (a per-process memory cap): the batch is split, the budget drops, scores are right;
* 4/8-bit and fp8 rows where the libraries (and the GPU) allow.

Usage:
    python benchmarks/gpu_check.py                 # everything; prints a markdown report, writes --out JSON
    python benchmarks/gpu_check.py --models minilm qwen3-0.6b --budgets 16384 65536
    python benchmarks/gpu_check.py --dry-run       # configs, workloads and FLOP counts only (no GPU needed)

Needs torch ≥ 2.4 and transformers ≥ 4.51 (written against torch 2.11 + transformers 5.17).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from rerankd.batching import BatchLimits  # noqa: E402
from rerankd.families.base import Encoded, Padding  # noqa: E402
from rerankd.families.heads import PairLogit, YesNoRow  # noqa: E402
from rerankd.measure import compare_scores, document_lengths  # noqa: E402

#: Qwen3's token ids of "yes" and "no" (its real tokenizer's), read by the yes−no row.
QWEN_YES, QWEN_NO = 9693, 2152
DEFAULT_BUDGETS = (8192, 32768, 131072)
#: The whole run must end within this (the GPU session's limit is 8 minutes); later sections skip.
DEADLINE_S = 450.0
#: Pairs per speed measurement (10 rerank-100 requests), fewer for the largest model.
SPEED_PAIRS = {"qwen3-4b": 300}
TARGETS = {"xlmr-large": ("XLM-R large at 256 tokens", 0.50), "qwen3-0.6b": ("Qwen3-0.6B pairs/s", 1700.0),
           "packed_speedup": ("packed vs padded, rerank-100 mix", 1.5)}


@dataclass(frozen=True)
class Shape:
    """One architecture to check: its transformers config, head, padding and workload lengths."""

    name: str
    arch: str  # transformers class name
    config: dict[str, Any]
    head: Any
    padding: Padding
    max_length: int
    query_tokens: int
    #: LLMs: the prompt before the query and the suffix after the document (shared by every pair).
    prefix_tokens: int = 0
    suffix_tokens: int = 0

    @property
    def kind(self) -> str:
        return "llm-yes-no" if isinstance(self.head, YesNoRow) else "cross-encoder"


def shapes() -> dict[str, Shape]:
    """The real configs of the four models (values from their hub config.json)."""
    minilm = dict(model_type="bert", vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                  intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                  layer_norm_eps=1e-12, num_labels=1, pad_token_id=0)
    xlmr = dict(model_type="xlm-roberta", vocab_size=250002, hidden_size=1024, num_hidden_layers=24,
                num_attention_heads=16, intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1,
                hidden_act="gelu", layer_norm_eps=1e-5, num_labels=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    qwen_common = dict(model_type="qwen3", vocab_size=151669, max_position_embeddings=40960, rope_theta=1000000,
                       rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True, head_dim=128,
                       attention_bias=False, pad_token_id=151643)
    qwen06 = dict(qwen_common, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                  intermediate_size=3072)
    qwen4 = dict(qwen_common, hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=9728)
    llm = dict(head=YesNoRow(QWEN_YES, QWEN_NO), padding=Padding(151643, "left", False), max_length=1024,
               query_tokens=12, prefix_tokens=40, suffix_tokens=10)
    return {
        "minilm": Shape("minilm", "BertForSequenceClassification", minilm, PairLogit(1), Padding(0, "right", True), 512, 12),
        "xlmr-large": Shape("xlmr-large", "XLMRobertaForSequenceClassification", xlmr, PairLogit(1),
                            Padding(1, "right", False), 512, 12),
        "qwen3-0.6b": Shape("qwen3-0.6b", "Qwen3Model", qwen06, **llm),
        "qwen3-4b": Shape("qwen3-4b", "Qwen3Model", qwen4, **llm),
    }


def build_config(shape: Shape) -> Any:
    import transformers

    cls = getattr(transformers, shape.arch).config_class
    fields = {k: v for k, v in shape.config.items() if k != "model_type"}
    return cls(**fields, attn_implementation="sdpa")


def count_parameters(shape: Shape) -> tuple[int, int]:
    """(all parameters, those outside the embedding tables), from the model built on the meta device."""
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, shape.arch)(build_config(shape))
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return total, total - embedding


# -- workloads: synthetic token ids ----------------------------------------------------------------------


def sequences(shape: Shape, n: int, seed: int = 0, doc_length: int | None = None) -> list[Encoded]:
    """``n`` (query, document) sequences: rerank-100 document lengths (or all ``doc_length``)."""
    rng = np.random.default_rng(seed)
    lengths = [doc_length] * n if doc_length else [int(x) for x in document_lengths(n, seed)]
    vocab = int(shape.config["vocab_size"])
    query = rng.integers(1000, min(vocab, 100_000), shape.query_tokens).tolist()
    out = []
    if shape.kind == "llm-yes-no":
        prefix = rng.integers(1000, 100_000, shape.prefix_tokens).tolist() + query
        suffix = rng.integers(1000, 100_000, shape.suffix_tokens).tolist()
        room = shape.max_length - len(prefix) - len(suffix)
        for length in lengths:
            doc = rng.integers(1000, 100_000, max(1, min(length, room))).tolist()
            out.append(Encoded(tuple(prefix + doc + suffix)))
        return out
    cls_id, sep_id = (101, 102) if shape.config["model_type"] == "bert" else (0, 2)
    head = [cls_id] + query + [sep_id] + ([] if shape.config["model_type"] == "bert" else [sep_id])
    room = shape.max_length - len(head) - 1
    for length in lengths:
        doc = rng.integers(1000, min(vocab, 100_000), max(1, min(length, room))).tolist()
        ids = head + doc + [sep_id]
        types = tuple([0] * len(head) + [1] * (len(doc) + 1)) if shape.padding.token_type_ids else None
        out.append(Encoded(tuple(ids), types))
    return out


def useful_flops(shape: Shape, seqs: list[Encoded], non_embedding: int) -> float:
    """Matmul FLOPs of the real tokens: 2 × weights × tokens, plus QKᵀ and AV (4 × layers × hidden × len²)."""
    layers = int(shape.config["num_hidden_layers"])
    width = int(shape.config.get("head_dim", 0)) * int(shape.config["num_attention_heads"]) or int(shape.config["hidden_size"])
    tokens = sum(len(s) for s in seqs)
    return 2.0 * non_embedding * tokens + 4.0 * layers * width * sum(len(s) ** 2 for s in seqs)


# -- on the GPU -----------------------------------------------------------------------------------------


@dataclass
class BenchFamily:
    """What rerankd's backend and pipeline read of a family, for a model built in memory (no files)."""

    shape: Shape
    model_dir: Path = Path("<in-memory>")
    config: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.config = dict(self.shape.config)

    @property
    def head(self) -> Any:
        return self.shape.head

    @property
    def padding(self) -> Padding:
        return self.shape.padding

    @property
    def max_length(self) -> int:
        return self.shape.max_length

    @property
    def kind(self) -> str:
        return self.shape.kind


def build_module(shape: Shape, family: BenchFamily, dtype: Any) -> Any:
    """rerankd's padded scoring module around a randomly initialised model, on the GPU."""
    import transformers

    from rerankd.backends.torch_modules import LastTokenYesNo, pair_logit_module, yes_minus_no_row

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = getattr(transformers, shape.arch)(build_config(shape))
    model = model.to(dtype).eval()
    if isinstance(shape.head, YesNoRow):
        return LastTokenYesNo(model, yes_minus_no_row(family, shape.head, model)).eval()
    return pair_logit_module(model, shape.head.num_labels).eval()


def make_pipeline(family: BenchFamily, module: Any, dtype: str, packed: bool, budget: int) -> Any:
    from rerankd.backends.torch_backend import TorchBackend
    from rerankd.pipeline import Pipeline

    backend = TorchBackend(family, device="cuda", dtype=dtype, packed=packed, module=module)  # type: ignore[arg-type]
    return Pipeline(family, backend, name=f"{family.shape.name}-{dtype}-{'packed' if packed else 'padded'}",  # type: ignore[arg-type]
                    batch_limits=BatchLimits(budget, 1024))


def timed(fn: Callable[[], Any], reps: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_flops() -> float:
    """Measured bf16 dense matmul FLOP/s (8192³, best of 10 after warm-up)."""
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    seconds = timed(lambda: [a @ b for _ in range(10)], reps=3) / 10
    return 2.0 * n**3 / seconds


def check_model(shape: Shape, budgets: tuple[int, ...], peak: float, started: float) -> dict[str, Any]:
    family = BenchFamily(shape)
    total, non_embedding = count_parameters(shape)
    row: dict[str, Any] = {"model": shape.name, "parameters": total}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    # Built three times from the same seed: the same weights, each model with its own attention setting.
    fp32 = build_module(shape, family, torch.float32)
    bf16_padded = build_module(shape, family, torch.bfloat16)
    bf16_packed = build_module(shape, family, torch.bfloat16)
    work = sequences(shape, 100)
    pipes = {"fp32": make_pipeline(family, fp32, "fp32", False, 32768),
             "bf16 padded": make_pipeline(family, bf16_padded, "bf16", False, 32768)}
    try:
        pipes["bf16 packed"] = make_pipeline(family, bf16_packed, "bf16", True, 32768)
        row["attention"] = pipes["bf16 packed"].backend.attention()
    except Exception as exc:  # noqa: BLE001 - reported, the rest still runs
        row["packed_error"] = f"{type(exc).__name__}: {exc}"
    scores: dict[str, np.ndarray] = {}
    for name, pipe in pipes.items():
        try:
            scores[name] = pipe.execute(work)
        except Exception as exc:  # noqa: BLE001
            row[f"{name} error"] = f"{type(exc).__name__}: {exc}"[:300]
    for name in ("bf16 padded", "bf16 packed"):
        if name in scores and "fp32" in scores:
            agreement = compare_scores(scores["fp32"], scores[name])
            row[f"{name} vs fp32"] = {"max_abs_delta": agreement.max_abs_delta, "spearman": agreement.spearman}
    if "bf16 packed" in scores and "bf16 padded" in scores:
        agreement = compare_scores(scores["bf16 padded"], scores["bf16 packed"])
        row["packed vs padded"] = {"max_abs_delta": agreement.max_abs_delta, "spearman": agreement.spearman}
    if "fp32" in scores:  # random weights score in a narrow band: read Spearman against this spread
        row["fp32_score_std"] = float(np.std(scores["fp32"]))
    row["distinct_bf16_scores"] = len(set(scores["bf16 padded"].tolist())) if "bf16 padded" in scores else None
    # Speed at each budget, on 10 rerank-100 requests (1000 pairs; 3 for the 4B, to stay in the time limit).
    many = sequences(shape, SPEED_PAIRS.get(shape.name, 1000), seed=1)
    flops = useful_flops(shape, many, non_embedding)
    tokens = sum(len(s) for s in many)
    speed: dict[str, dict[str, Any]] = {}
    for name in ("bf16 padded", "bf16 packed"):
        if name not in scores:
            continue
        for budget in budgets:
            if time.monotonic() - started > DEADLINE_S:
                row["skipped"] = "deadline"
                break
            pipe = pipes[name]
            pipe.batch_limits = BatchLimits(budget, 1024)
            try:
                seconds = timed(lambda: pipe.execute(many), reps=2)
            except Exception as exc:  # noqa: BLE001
                speed[f"{name} @ {budget}"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                continue
            speed[f"{name} @ {budget}"] = {"pairs_per_s": len(many) / seconds, "tokens_per_s": tokens / seconds,
                                          "peak_pct": 100.0 * flops / seconds / peak}
    row["speed"] = speed
    if shape.name == "xlmr-large" and "bf16 padded" in pipes:  # the target's own shape: 256-token pairs
        fixed = sequences(shape, 512, seed=2, doc_length=256 - shape.query_tokens - 4)
        pipe = pipes["bf16 padded"]
        pipe.batch_limits = BatchLimits(65536, 1024)
        seconds = timed(lambda: pipe.execute(fixed), reps=2)
        row["at 256 tokens"] = {"pairs_per_s": len(fixed) / seconds,
                                "peak_pct": 100.0 * useful_flops(shape, fixed, non_embedding) / seconds / peak}
    row["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
    padded = pipes.pop("bf16 padded")
    del pipes, fp32, bf16_packed  # the plan counts what is allocated as weights: only this model's
    torch.cuda.empty_cache()
    row["memory_plan"] = check_memory_plan(padded)
    del padded, bf16_padded
    torch.cuda.empty_cache()
    return row


def check_memory_plan(pipe: Any) -> dict[str, Any]:
    """rerankd's profiling pass and warm-up at the planned budget (gpu_setup.after_load) on this model."""
    from rerankd.gpu_memory import read_device_memory
    from rerankd.gpu_setup import GpuSetup, after_load

    before = read_device_memory("cuda")
    assert before is not None
    weights = torch.cuda.memory_allocated()
    setup = GpuSetup("cuda", "bfloat16", None, before=replace_allocated(before, weights))
    try:
        after_load(setup, pipe, None)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {**setup.describe().get("memory_plan", {}), "notes": setup.notes}


def replace_allocated(memory: Any, weights: int) -> Any:
    """The memory as if measured before the weights were loaded (they are loaded already here)."""
    from dataclasses import replace

    return replace(memory, free=memory.free + weights, allocated=memory.allocated - weights)


def check_oom_backoff(shape: Shape) -> dict[str, Any]:
    """A memory cap a little above the weights: a large batch OOMs, is split, the budget drops, scores stay right."""
    from rerankd.gpu_memory import SequenceTooLargeError

    family = BenchFamily(shape)
    module = build_module(shape, family, torch.bfloat16)
    pipe = make_pipeline(family, module, "bf16", False, 1 << 20)
    work = sequences(shape, 256, seed=3, doc_length=shape.max_length - shape.query_tokens - 4)
    reference = make_pipeline(family, module, "bf16", False, 8192).execute(work)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = (torch.cuda.memory_allocated() + (256 << 20)) / total  # weights + 256 MiB: the 131k-token batch cannot fit
    torch.cuda.set_per_process_memory_fraction(cap)
    result: dict[str, Any] = {"model": shape.name, "cap_bytes": int(cap * total)}
    try:
        got = pipe.execute(work)
        result.update(backoffs=pipe.budget.backoffs, budget_after=pipe.batch_limits.max_tokens,
                      max_abs_delta=float(np.max(np.abs(got - reference))))
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + (1 << 20)) / total)
        try:
            pipe.execute(work[:1])
            result["alone"] = "fit (no 413)"
        except SequenceTooLargeError as exc:
            result["alone"] = f"413 as expected: {exc}"[:200]
    except Exception as exc:  # noqa: BLE001
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        del module, pipe
        torch.cuda.empty_cache()
    return result


def check_quantized(shape: Shape, name: str) -> dict[str, Any]:
    """Load the model through transformers' quantization config (rerankd's), score, time it."""
    import transformers

    from rerankd.backends.torch_modules import LastTokenYesNo, pair_logit_module, yes_minus_no_row
    from rerankd.gpu_quantization import check_quantization, quantization_config

    row: dict[str, Any] = {"model": shape.name, "quantization": name}
    try:
        check_quantization(name, "cuda")
    except Exception as exc:  # noqa: BLE001 - a missing library or GPU feature is the row's answer
        row["skipped"] = str(exc)
        return row
    family = BenchFamily(shape)
    with tempfile.TemporaryDirectory() as tmp:
        reference_module = build_module(shape, family, torch.bfloat16)
        inner = reference_module.base if hasattr(reference_module, "base") else reference_module.model
        inner.save_pretrained(tmp)
        work = sequences(shape, 100)
        reference = make_pipeline(family, reference_module, "bf16", False, 32768).execute(work)
        del reference_module, inner
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            loaded = getattr(transformers, shape.arch).from_pretrained(
                tmp, quantization_config=quantization_config(name, shape.head.kind, torch.bfloat16),
                device_map={"": "cuda"}, dtype=torch.bfloat16)
            if isinstance(shape.head, YesNoRow):
                module = LastTokenYesNo(loaded, yes_minus_no_row(family, shape.head, loaded).to("cuda"))
            else:
                module = pair_logit_module(loaded, shape.head.num_labels)
            pipe = make_pipeline(family, module.eval(), "bf16", False, 32768)
            got = pipe.execute(work)
            agreement = compare_scores(reference, got)
            seconds = timed(lambda: pipe.execute(work), reps=2)
            row.update(spearman_vs_bf16=agreement.spearman, max_abs_delta=agreement.max_abs_delta,
                       pairs_per_s=len(work) / seconds, peak_memory_bytes=int(torch.cuda.max_memory_allocated()))
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            traceback.print_exc()
    torch.cuda.empty_cache()
    return row


# -- report ------------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# rerankd GPU check: {report['device']}", "",
             f"torch {report['torch']}, transformers {report['transformers']}; measured bf16 matmul peak "
             f"{report['peak_tflops']:.0f} TFLOP/s", "",
             "| model | attention (packed) | bf16 padded vs fp32 max\\|Δ\\| / Spearman | packed vs fp32 | "
             "packed vs padded | peak memory |", "|---|---|---|---|---|---|"]
    for row in report["models"]:
        def pair(key: str) -> str:
            v = row.get(key)
            return f"{v['max_abs_delta']:.3g} / {v['spearman']:.4f}" if v else row.get("packed_error", "—")[:60]
        lines.append(f"| {row['model']} | {row.get('attention', '—')} | {pair('bf16 padded vs fp32')} | "
                     f"{pair('bf16 packed vs fp32')} | {pair('packed vs padded')} | "
                     f"{row['peak_memory_bytes'] / 2**30:.1f} GiB |")
    lines += ["", "| model | path @ budget | pairs/s | tokens/s | % bf16 peak |", "|---|---|---|---|---|"]
    for row in report["models"]:
        for key, v in row.get("speed", {}).items():
            if "error" in v:
                lines.append(f"| {row['model']} | {key} | error: {v['error'][:60]} | | |")
            else:
                lines.append(f"| {row['model']} | {key} | {v['pairs_per_s']:.0f} | {v['tokens_per_s']:.0f} | "
                             f"{v['peak_pct']:.1f}% |")
        if "at 256 tokens" in row:
            v = row["at 256 tokens"]
            lines.append(f"| {row['model']} | padded, 256-token pairs | {v['pairs_per_s']:.0f} | | {v['peak_pct']:.1f}% |")
    lines += ["", "Memory plans: " + "; ".join(f"{r['model']}: {r['memory_plan'].get('budget_tokens', r['memory_plan'])}"
                                                f" tokens" for r in report["models"])]
    lines += ["", f"OOM back-off: {json.dumps(report.get('oom'))}", ""]
    lines += ["| quantized | Spearman vs bf16 | max \\|Δ\\| | pairs/s | peak memory |", "|---|---|---|---|---|"]
    for row in report.get("quantized", []):
        if "skipped" in row or "error" in row:
            lines.append(f"| {row['model']} {row['quantization']} | {row.get('skipped') or 'error: ' + row['error'][:80]} | | | |")
        else:
            lines.append(f"| {row['model']} {row['quantization']} | {row['spearman_vs_bf16']:.4f} | {row['max_abs_delta']:.3g} | "
                         f"{row['pairs_per_s']:.0f} | {row['peak_memory_bytes'] / 2**30:.2f} GiB |")
    lines += ["", "Targets: " + "; ".join(f"{k}: {v}" for k, v in report.get("targets", {}).items())]
    return "\n".join(lines) + "\n"


def targets(report: dict[str, Any]) -> dict[str, str]:
    out = {}
    rows = {r["model"]: r for r in report["models"]}
    if "xlmr-large" in rows and "at 256 tokens" in rows["xlmr-large"]:
        pct = rows["xlmr-large"]["at 256 tokens"]["peak_pct"]
        out["XLM-R large 256 tokens ≥ 50% peak"] = f"{pct:.1f}% {'PASS' if pct >= 50 else 'FAIL'}"
    if "qwen3-0.6b" in rows:
        best = max((v.get("pairs_per_s", 0) for v in rows["qwen3-0.6b"].get("speed", {}).values()), default=0)
        out["Qwen3-0.6B ≥ 1.7k pairs/s"] = f"{best:.0f} {'PASS' if best >= 1700 else 'FAIL'}"
    for name, row in rows.items():
        speed = row.get("speed", {})
        padded = max((v.get("pairs_per_s", 0) for k, v in speed.items() if k.startswith("bf16 padded")), default=0)
        packed = max((v.get("pairs_per_s", 0) for k, v in speed.items() if k.startswith("bf16 packed")), default=0)
        if padded and packed:
            out[f"{name} packed ≥ 1.5× padded"] = f"{packed / padded:.2f}× {'PASS' if packed >= 1.5 * padded else 'FAIL'}"
    return out


def dry_run(names: list[str], budgets: tuple[int, ...]) -> dict[str, Any]:
    """Everything that needs no GPU: configs, parameter counts, workloads and their FLOPs."""
    out: dict[str, Any] = {"budgets": list(budgets), "models": []}
    table = shapes()
    for name in names:
        shape = table[name]
        total, non_embedding = count_parameters(shape)
        work = sequences(shape, 100)
        out["models"].append({"model": name, "parameters": total, "non_embedding": non_embedding,
                              "pairs": len(work), "tokens": sum(len(s) for s in work),
                              "longest": max(len(s) for s in work),
                              "tflop_per_rerank100": useful_flops(shape, work, non_embedding) / 1e12})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(shapes()), choices=list(shapes()))
    parser.add_argument("--budgets", nargs="*", type=int, default=list(DEFAULT_BUDGETS))
    parser.add_argument("--quantized", nargs="*", default=["bnb-4bit", "bnb-8bit", "int8-weight", "fp8"],
                        help="quantizations to try on Qwen3-0.6B (rows say why one is skipped)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--dry-run", action="store_true", help="configs, workloads and FLOPs only; no GPU needed")
    args = parser.parse_args(argv)
    budgets = tuple(args.budgets)
    if args.dry_run:
        print(json.dumps(dry_run(args.models, budgets), indent=2))
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was measured. "
              "Run it on a GPU machine, or pass --dry-run.")
        return 0
    import transformers

    started = time.monotonic()
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                              "transformers": transformers.__version__, "capability": list(torch.cuda.get_device_capability(0))}
    report["peak_tflops"] = matmul_peak_flops() / 1e12
    print(f"{report['device']}: bf16 peak {report['peak_tflops']:.0f} TFLOP/s", flush=True)
    table = shapes()
    report["models"] = []
    for name in args.models:
        if time.monotonic() - started > DEADLINE_S:
            print(f"skipping {name}: past the deadline", flush=True)
            continue
        print(f"checking {name} ...", flush=True)
        try:
            report["models"].append(check_model(table[name], budgets, report["peak_tflops"] * 1e12, started))
        except Exception as exc:  # noqa: BLE001 - one model's failure is reported, the others still run
            traceback.print_exc()
            report["models"].append({"model": name, "error": f"{type(exc).__name__}: {exc}"[:300],
                                     "peak_memory_bytes": 0, "memory_plan": {}})
        print(json.dumps(report["models"][-1], default=str)[:2000], flush=True)
    if time.monotonic() - started < DEADLINE_S:
        report["oom"] = check_oom_backoff(table["minilm"])
        print(f"oom: {report['oom']}", flush=True)
    report["quantized"] = []
    for name in args.quantized:
        if time.monotonic() - started > DEADLINE_S:
            report["quantized"].append({"model": "qwen3-0.6b", "quantization": name, "skipped": "deadline"})
            continue
        report["quantized"].append(check_quantized(table["qwen3-0.6b"], name))
        print(report["quantized"][-1], flush=True)
    report["targets"] = targets(report)
    report["seconds"] = time.monotonic() - started
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
