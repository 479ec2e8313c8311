"""The ONNX Runtime backend: directories written by ``rerankd export``, and hub repos that ship
``onnx/model*.onnx`` (the sentence-transformers layout).

A rerankd export already ends in the family's head (``scores`` or ``embeddings``). A hub export ends
in the transformer's own output, so the head runs here in numpy: the classifier logits of a
cross-encoder, the pooling of a bi-encoder, the yes−no logits at the last position of an LLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rerankd._optional import require
from rerankd.batching import pad_batch
from rerankd.errors import InputError, ModelNotFoundError, UnsupportedModelError
from rerankd.families import Encoded, Family
from rerankd.families.heads import Head
from rerankd.hardware import cpu_flags, physical_cores

# Hub file names per precision, best first (sentence-transformers' export_dynamic_quantized_onnx_model
# and optimum name their files this way).
_INT8_FILES = {"avx512_vnni": "model_qint8_avx512_vnni.onnx", "avx512f": "model_qint8_avx512.onnx", "avx2": "model_quint8_avx2.onnx"}
_PRECISION_ALIASES = {"fp32": "fp32", "float32": "fp32", "int8": "int8", "qint8": "int8", "fp16": "fp16", "float16": "fp16",
                      "int4": "int4", "q4": "int4"}


def find_onnx_file(path: Path, precision: str | None = None) -> Path:
    """The graph to load from a rerankd export, a hub layout (``onnx/model*.onnx``), or a .onnx file."""
    if path.is_file() and path.suffix == ".onnx":
        return path
    wanted = _PRECISION_ALIASES.get((precision or "auto").lower()) if precision and precision != "auto" else None
    if precision not in (None, "auto") and wanted is None:
        raise InputError(f"unknown ONNX precision {precision!r}; use auto, fp32, fp16, int8 or int4")
    if (path / "model.onnx").is_file():
        return path / "model.onnx"
    folder = path / "onnx"
    if not folder.is_dir():
        raise ModelNotFoundError(f"{path} has no model.onnx and no onnx/ folder; export it first: rerankd export --model {path} --out DIR")
    if wanted == "int8":
        flags = cpu_flags()
        for flag, name in _INT8_FILES.items():
            if (flag in flags or flag == "avx2") and (folder / name).is_file():
                return folder / name
        candidates = sorted(folder.glob("model*int8*.onnx")) + sorted(folder.glob("model*quantized*.onnx"))
    elif wanted == "fp16":
        candidates = sorted(folder.glob("model*fp16*.onnx"))
    elif wanted == "int4":  # transformers.js names its 4-bit graphs model_q4.onnx
        candidates = sorted(folder.glob("model*int4*.onnx")) + sorted(folder.glob("model*q4.onnx"))
    else:
        candidates = [folder / "model.onnx"] if (folder / "model.onnx").is_file() else []
    if not candidates:
        found = ", ".join(sorted(f.name for f in folder.glob("*.onnx"))) or "none"
        raise ModelNotFoundError(f"{folder} has no {wanted or 'fp32'} graph (found: {found}); pick another dtype")
    return candidates[0]


class OnnxBackend:
    """Runs an ONNX graph with ONNX Runtime; one session, reused for every batch.

    Example:
        >>> Reranker.from_pretrained("exported-dir", backend="onnx").score("q", ["a", "b"])  # doctest: +SKIP
    """

    name = "onnx"
    pads = True

    def __init__(
        self,
        family: Family,
        device: str | None = None,
        dtype: str | None = None,
        model_path: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        ort = require("onnxruntime")
        from rerankd.export import read_export_info

        self.family = family
        root = Path(model_path) if model_path is not None else family.model_dir
        self.model_file = find_onnx_file(root, dtype)
        info = read_export_info(self.model_file.parent)
        self.precision = info.precision if info else _precision_from_name(self.model_file.name)
        self.optimization = info.optimization if info else "hub export"
        self.threads = threads or physical_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self.device = "cpu"
        if (device or "").startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
            self.device = "cuda"
        self.session = ort.InferenceSession(str(self.model_file), options, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        if any(name.startswith("past_key_values") for name in self.inputs):
            raise UnsupportedModelError(f"{self.model_file} is a generation graph with a KV cache; export it with rerankd export")
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = next((n for n in ("scores", "embeddings", "logits", "token_embeddings", "last_hidden_state") if n in outputs), outputs[0])

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        batch = pad_batch(sequences, self.family.padding)
        feeds: dict[str, np.ndarray] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = batch.token_type_ids if batch.token_type_ids is not None else np.zeros_like(batch.input_ids)
        if "position_ids" in self.inputs:  # decoder hub exports: positions count real tokens only (left padding)
            feeds["position_ids"] = np.clip(np.cumsum(batch.attention_mask, axis=1) - 1, 0, None)
        out = self.session.run([self.output], {k: v for k, v in feeds.items() if k in self.inputs})[0]
        if self.output in ("scores", "embeddings"):
            return np.asarray(out, dtype=np.float32)
        head = self.family.head
        apply = HUB_HEADS.get(head.kind)
        if apply is None:
            raise UnsupportedModelError(f"the onnx backend has no head for a {head.kind!r} head")
        return apply(head, np.asarray(out, dtype=np.float32), batch.attention_mask)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "dtype": self.precision, "model_file": str(self.model_file),
                "threads": self.threads, "optimization": self.optimization}


def pair_score(head: Any, logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A hub classifier graph's logits → the relevance logit (1 label) or the log-odds (2 labels)."""
    return logits[:, 0] if head.num_labels == 1 or logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


def yes_minus_no(head: Any, logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A hub causal-LM graph's vocabulary logits at the last position → l_yes − l_no."""
    last = logits[:, -1] if logits.ndim == 3 else logits
    return last[:, head.yes_id] - last[:, head.no_id]


def pooled(head: Any, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return pool(hidden, mask, head.pooling, head.normalize)


#: head kind → the numpy head that finishes a hub graph's raw output.
HUB_HEADS: dict[str, Callable[[Head, np.ndarray, np.ndarray], np.ndarray]] = {
    "pair-logit": pair_score,
    "yes-no-row": yes_minus_no,
    "pooled-embedding": pooled,
}


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str, normalize: bool) -> np.ndarray:
    """sentence-transformers pooling of token embeddings (rows, tokens, dim) → (rows, dim)."""
    m = mask[:, :, None].astype(hidden.dtype)
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = np.where(m > 0, hidden, -np.inf).max(axis=1)
    elif mode == "lasttoken":
        pooled = hidden[np.arange(hidden.shape[0]), mask.sum(axis=1) - 1]
    else:
        counts = np.clip(m.sum(axis=1), 1e-9, None)
        pooled = (hidden * m).sum(axis=1) / (np.sqrt(counts) if mode == "mean_sqrt_len" else counts)
    if normalize:
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return pooled


def _precision_from_name(name: str) -> str:
    lowered = name.lower()
    if "int8" in lowered or "quantized" in lowered:
        return "int8"
    if "int4" in lowered or lowered.endswith("q4.onnx"):
        return "int4"
    return "fp16" if "fp16" in lowered else "fp32"
