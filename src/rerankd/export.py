"""ONNX export of rerankd's scoring modules: graph, graph optimization, dynamic int8 or 4-bit weights, a loadable directory.

The exported graph is the same module the torch backend runs (``build_module``): a padded batch
``(input_ids, attention_mask[, token_type_ids])`` in, ``scores`` (rows,) or ``embeddings`` (rows, dim)
out. LLM rerankers end in the one-row yes−no head at the last position, so the graph never computes
vocabulary logits.

The saved directory holds ``model.onnx`` (+ ``model.onnx.data`` above 2 GB), the source model's
config and tokenizer files (so :func:`rerankd.families.load_family` reads it like the source), and
``rerankd/export.json`` with the family, precision, source, opset and library versions.

Example:
    >>> from rerankd.export import export_model
    >>> export_model(None, "minilm-int8", precision="int8")   # doctest: +SKIP
    >>> Reranker.from_pretrained("minilm-int8", backend="onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rerankd._optional import require
from rerankd.errors import InputError, ModelError
from rerankd.families import Family, load_family

METADATA_PATH = "rerankd/export.json"
MODEL_FILE = "model.onnx"
PRECISIONS = ("fp32", "fp16", "int8", "int4")
DEFAULT_OPSET = 17
# 4-bit tensors exist from opset 21 (IR version 10) on.
_INT4_OPSET, _INT4_IR_VERSION = 21, 10
INT4_BLOCK_SIZE = 32
# onnxruntime.transformers' fusions (attention, LayerNorm, GELU, embedding) by the model_type it knows.
_ORT_OPTIMIZER_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert",
                        "electra": "bert", "distilbert": "bert"}
# protobuf cannot hold more than 2 GB: bigger graphs keep their weights in an external file.
_EXTERNAL_DATA_BYTES = 1_800_000_000
# Files of the source model that are weights (the graph replaces them) or other runtimes' exports.
_SKIPPED_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".gguf", ".ot", ".data"}
_SKIPPED_DIRS = {"onnx", "rerankd", "openvino", ".cache", ".git"}


@dataclass(frozen=True)
class ExportInfo:
    """What ``rerankd/export.json`` records about an exported directory."""

    family: str
    precision: str
    source: str
    model_type: str
    opset: int
    inputs: list[str]
    output: str
    optimization: str
    quantization: dict[str, Any] | None
    versions: dict[str, str]


def read_export_info(model_dir: Path) -> ExportInfo | None:
    """The export record of a directory written by :func:`export_model`, or None."""
    path = Path(model_dir) / METADATA_PATH
    if not path.is_file():
        return None
    try:
        return ExportInfo(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{path} is not a valid rerankd export record: {exc}") from exc


def input_names(family: Family) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if family.uses_token_type_ids else names


def output_name(family: Family) -> str:
    return "embeddings" if family.output == "vector" else "scores"


def export_model(
    model: str | Path | None,
    out: str | Path,
    *,
    precision: str = "fp32",
    revision: str | None = None,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
    per_channel: bool = True,
    keep_ffn_output: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export ``model`` (directory, hub id, or None for the bundled model) to an ONNX directory ``out``.

    The directory is built next to ``out`` and moved into place only when complete, so a failed
    export leaves nothing behind.
    """
    from rerankd.hub import resolve_model

    if precision not in PRECISIONS:
        hint = " (ONNX Runtime's CPU provider has no bf16 kernels: use `rerankd quantize --to bf16`, which runs on torch)" if precision == "bf16" else ""
        raise InputError(f"unknown export precision {precision!r}; use one of {', '.join(PRECISIONS)}{hint}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} already exists and is not empty; pick another --out or remove it")
    model_dir, name = resolve_model(str(model) if model is not None else None, revision)
    family = load_family(model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rerankd-export-", dir=out.parent) as work:
        work_dir = Path(work)
        staged = work_dir / "out"
        staged.mkdir()
        raw = work_dir / "raw" / MODEL_FILE
        raw.parent.mkdir()
        trace_to_onnx(family, raw, opset)
        # 4-bit tensors need a newer opset than torch traces to; the other precisions keep the traced one.
        graph_opset = max(opset, _INT4_OPSET) if precision == "int4" else opset
        if graph_opset != opset:
            raise_opset(raw, graph_opset)
        optimized = work_dir / "optimized" / MODEL_FILE
        optimized.parent.mkdir()
        how = optimize_graph(family, raw, optimized) if optimize else _copy_graph(raw, optimized, "none")
        quantization = None
        if precision == "int8":
            quantization = quantize_int8(optimized, staged / MODEL_FILE, per_channel=per_channel, keep_ffn_output=keep_ffn_output)
        elif precision == "int4":
            quantization = quantize_int4(optimized, staged / MODEL_FILE)
        elif precision == "fp16":
            convert_fp16(optimized, staged / MODEL_FILE)
        else:
            _copy_graph(optimized, staged / MODEL_FILE, how)
        copy_model_files(model_dir, staged)
        info = ExportInfo(
            family=family.kind, precision=precision, source=name, model_type=str(family.config.get("model_type", "")),
            opset=graph_opset, inputs=input_names(family), output=output_name(family), optimization=how,
            quantization=quantization, versions=_versions(),
        )
        (staged / "rerankd").mkdir(exist_ok=True)
        (staged / METADATA_PATH).write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
        load_family(staged)  # the directory must read back as the same family before it is published
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    return out


# -- the steps ----------------------------------------------------------------------------------------

def trace_to_onnx(family: Family, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Trace the family's fp32 scoring module with torch's TorchScript exporter (dynamic batch and length).

    The TorchScript exporter (``dynamo=False``) handles transformers models more robustly than the
    dynamo one today. Attention is switched to the eager implementation for the export only: SDPA's
    mask preprocessing in transformers specializes on the traced shapes, while the eager
    softmax(QKᵀ + mask)V subgraph traces with dynamic shapes and is the pattern onnxruntime's
    attention fusion recognizes.
    """
    torch = require("torch")
    from rerankd.backends.torch_modules import build_module

    if getattr(family.head, "vision", False):
        from rerankd.errors import UnsupportedModelError

        # The graph would need the vision tower, the pad scatter and 3-row positions as inputs.
        raise UnsupportedModelError("ONNX export of vision-language models (Qwen3-VL) is not supported; "
                                    "serve them with --backend torch")
    module = build_module(family, torch.float32, "cpu")
    for sub in module.modules():
        if hasattr(sub, "set_attn_implementation") and hasattr(sub, "config"):
            sub.set_attn_implementation("eager")
    names = input_names(family)
    sample = _sample_inputs(family, names)
    output = output_name(family)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python-side shape checks: the parity tests cover what they warn about.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, tuple(sample[n] for n in names), str(path), input_names=names, output_names=[output],
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    _consolidate(path)


def _sample_inputs(family: Family, names: list[str]) -> dict[str, Any]:
    """Two rows of different lengths, padded on the family's side, so the mask path is traced."""
    torch = require("torch")
    ids = torch.full((2, 12), int(family.pad_token_id), dtype=torch.long)
    mask = torch.zeros((2, 12), dtype=torch.long)
    real = torch.arange(5, 17, dtype=torch.long)
    if family.padding_side == "left":
        ids[0], ids[1, 4:] = real, real[:8]
        mask[0], mask[1, 4:] = 1, 1
    else:
        ids[0], ids[1, :8] = real, real[:8]
        mask[0], mask[1, :8] = 1, 1
    sample = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        types = torch.zeros((2, 12), dtype=torch.long)
        types[:, 6:] = 1
        sample["token_type_ids"] = types * mask
    return sample


def optimize_graph(family: Family, source: Path, target: Path) -> str:
    """Fuse attention, LayerNorm and GELU with onnxruntime.transformers where it knows the model type,
    else run ONNX Runtime's own (provider-independent) graph optimizations offline. Returns which."""
    model_type = str(family.config.get("model_type", ""))
    if model_type in _ORT_OPTIMIZER_TYPES:
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions

        hidden = int(family.config.get("hidden_size", 0) or 0)
        heads = int(family.config.get("num_attention_heads", 0) or 0)
        options = FusionOptions(_ORT_OPTIMIZER_TYPES[model_type])
        large = _needs_external_data(source)
        if large:
            # Symbolic shape inference copies the whole in-memory graph, weights included, several times:
            # on the XLM-R large shape (2.2 GB) it passed 15 GiB of RSS (and was OOM-killed at 24 GiB),
            # while without it the optimizer peaks at 3.8 GiB and makes the same fusions (Attention×24,
            # BiasGelu×24, SkipLayerNormalization×48), since the heads and hidden size are given.
            options.enable_shape_inference = False
        optimized = optimizer.optimize_model(str(source), model_type=_ORT_OPTIMIZER_TYPES[model_type],
                                             num_heads=heads, hidden_size=hidden, opt_level=1,
                                             optimization_options=options)
        optimized.save_model_to_file(str(target), use_external_data_format=large)
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        return "onnxruntime.transformers optimizer (" + ", ".join(f"{k}×{v}" for k, v in sorted(fused.items())) + ")"
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    # EXTENDED, not ALL: the layout changes of level ALL are specific to the CPU that runs them.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    if _needs_external_data(source):
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", MODEL_FILE + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return "onnxruntime session graph optimization (extended), no transformer fusion for this model type"


def quantize_int8(source: Path, target: Path, *, per_channel: bool = True, keep_ffn_output: bool = True) -> dict[str, Any]:
    """Dynamic int8 (weights int8 ahead of time, activations quantized per batch) with onnxruntime.

    Only the matrix products are quantized: they hold the time, while int8 embedding tables (Gather)
    cost accuracy for no speed. Per-channel weight scales keep the per-row ranges of each matrix.
    ``keep_ffn_output`` leaves the FFN down-projections in fp32: their input (after GELU/SiLU) has
    outliers that one per-tensor activation scale cannot hold (``--int8-all`` quantizes them too:
    faster, less accurate; the README has the measured ranking agreement).
    """
    onnx = require("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = ["MatMul", "Attention"]
    graph = onnx.load(str(source), load_external_data=False).graph
    ffn_outputs = [n.name for n in graph.node if n.op_type == "MatMul" and is_ffn_output(n.name)] if keep_ffn_output else []
    # A product with a vector (the LLM family's yes−no row) gets a per-channel zero point that ONNX Runtime's
    # DynamicQuantizeMatMul rejects at run time ("b zero point is not valid"); it is one dot product per row.
    vector_products = _vector_products(graph)
    excluded = ffn_outputs + vector_products
    kept = [f"{len(names)} {what}" for names, what in ((ffn_outputs, "FFN down-projections"), (vector_products, "products with a vector")) if names]
    settings = {"weight_type": "QInt8", "per_channel": per_channel, "op_types": op_types, "reduce_range": False,
                "kept_fp32": ", ".join(kept) or "none"}
    quantize_dynamic(str(source), str(target), op_types_to_quantize=op_types, per_channel=per_channel,
                     weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                     use_external_data_format=_needs_external_data(source),
                     # Fused com.microsoft ops defeat ONNX shape inference; their tensors are float.
                     extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    _consolidate(target)
    return settings


def quantize_int4(source: Path, target: Path, *, block_size: int = INT4_BLOCK_SIZE) -> dict[str, Any]:
    """Weight-only 4-bit, block-wise, with onnxruntime's ``MatMulNBitsQuantizer``.

    Each run of ``block_size`` weights along the input dimension shares one fp32 scale (symmetric,
    no zero point). Matrix products with a constant weight become ``MatMulNBits`` and a plain token
    embedding table ``GatherBlockQuantized``; ONNX Runtime computes them with int8 activations
    (accuracy level 4). What stays fp32 is recorded: the input projections inside a fused
    ``Attention`` and the embeddings inside ``EmbedLayerNormalization`` (the quantizer handles
    neither), and products with a vector (the LLM yes−no row: one dot product per row).

    It is for size, not speed, and costs more ranking quality than int8; blocks of 128 lost more
    than blocks of 32, hence the default (``benchmarks/cpu_backends.py`` and the README's int4 table).

    ``source`` must be at opset 21 already (:func:`raise_opset` on the traced graph): on an older
    graph the quantizer only relabels the opset import, which breaks ops whose signature changed by
    then (ReduceL2's ``axes``).
    """
    onnx = require("onnx")
    require("onnx_ir")  # imported by the quantizer module below; fail with the extra's hint
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(source))
    model.ir_version = max(model.ir_version, _INT4_IR_VERSION)
    vector_products = _vector_products(model.graph)
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=vector_products, op_types_to_quantize=("MatMul", "Gather"),
                                     quant_axes=(("MatMul", 0), ("Gather", 1)))
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # it logs every node it visits at INFO
    try:
        quantizer.process()
    finally:
        quiet.setLevel(level)
    quantized = quantizer.model.model
    ops = [n.op_type for n in quantized.graph.node]
    quantizer.model.save_model_to_file(str(target), _too_big_for_protobuf(quantized))
    kept = [f"{what} of {ops.count(op)} fused {op}" for op, what in (("Attention", "input projections"),
                                                                      ("EmbedLayerNormalization", "embedding tables"))
            if ops.count(op)]
    kept += [f"{len(vector_products)} products with a vector"] if vector_products else []
    return {"weight_type": "int4", "block_size": block_size, "symmetric": True, "accuracy_level": 4,
            "quantized": f"{ops.count('MatMulNBits')} MatMulNBits, {ops.count('GatherBlockQuantized')} GatherBlockQuantized",
            "kept_fp32": ", ".join(kept) or "none"}


def raise_opset(path: Path, opset: int) -> None:
    """Convert a traced graph to a newer opset in place with ONNX's version converter.

    Done before graph optimization: the converter knows only standard ops, not the fused ones
    ONNX Runtime writes (SimplifiedLayerNormalization, Attention). The weights are not loaded: the
    converter serializes the graph, which protobuf refuses past 2 GB, and a large graph's weights
    can stay in the side file they already live in.
    """
    onnx = require("onnx")
    from onnx import version_converter

    converted = version_converter.convert_version(onnx.load(str(path), load_external_data=False), opset)
    onnx.save_model(converted, str(path))


def _vector_products(graph: Any) -> list[str]:
    """Names of the MatMul nodes whose weight is a constant vector."""
    vectors = {t.name for t in graph.initializer if len(t.dims) < 2}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in vectors]


def is_ffn_output(name: str) -> bool:
    """Whether a node or module name is an FFN down-projection (BERT-family ``output.dense``, LLM ``down_proj``)."""
    name = name.replace(".", "/")
    return "down_proj" in name or ("/output/dense" in name and "attention" not in name)


def convert_fp16(source: Path, target: Path) -> None:
    """fp16 weights and compute, fp32 inputs and outputs (onnxruntime.transformers' converter)."""
    onnx = require("onnx")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(model, keep_io_types=True)
    _save(converted, target)


def copy_model_files(model_dir: Path, out: Path) -> None:
    """Copy the config, tokenizer and sentence-transformers module files (never the weights)."""
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        if not path.is_file() or rel.parts[0] in _SKIPPED_DIRS or path.suffix in _SKIPPED_SUFFIXES:
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


# -- helpers --------------------------------------------------------------------------------------------

def _needs_external_data(path: Path) -> bool:
    return sum(f.stat().st_size for f in path.parent.iterdir() if f.is_file()) > _EXTERNAL_DATA_BYTES


def _too_big_for_protobuf(model: Any) -> bool:
    try:
        return model.ByteSize() > _EXTERNAL_DATA_BYTES
    except ValueError:  # protobuf refuses ByteSize on > 2 GB messages
        return True


def _save(model: Any, target: Path) -> None:
    onnx = require("onnx")
    big = _too_big_for_protobuf(model)
    onnx.save_model(model, str(target), save_as_external_data=big, location=MODEL_FILE + ".data" if big else None)


def _consolidate(path: Path) -> None:
    """Gather a graph's scattered external tensors (the exporters write one file per tensor) into one file."""
    onnx = require("onnx")
    extra = [f for f in path.parent.iterdir() if f.is_file() and f != path]
    if not extra:
        return
    model = onnx.load(str(path))
    for f in extra:
        f.unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, location=MODEL_FILE + ".data", all_tensors_to_one_file=True)


def _copy_graph(source: Path, target: Path, how: str) -> str:
    for f in source.parent.iterdir():
        if f.is_file():
            shutil.copy2(f, target.parent / f.name)
    return how


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("rerankd", "torch", "transformers", "onnx", "onnxruntime"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


__all__ = ["ExportInfo", "METADATA_PATH", "MODEL_FILE", "PRECISIONS", "export_model", "read_export_info"]