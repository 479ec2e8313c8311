"""One scoring system of ``peers.py``, run as a worker process in whichever virtualenv that system needs.

Usage (by peers.py, not by hand): ``python peer_worker.py SPEC.json``

SPEC.json holds ``{"kind", "options", "query", "docs", "warmup"}`` (or ``{"kind": "st-prepare", ...}`` for
the one-shot export step). The worker loads the system, scores the workload ``warmup`` times, then
writes one protocol line ``PEER {"ready": ..., "scores": [...], "peak_rss": ..., "versions": ...}``.
After that it reads commands from stdin, one per line: ``time`` scores the workload once and answers
``PEER {"seconds": s}``; ``quit`` (or end of input) exits. Protocol lines go to the original stdout;
everything else printed (library logs, progress bars) is sent to stderr, so chatter never breaks the
protocol. Scores are in [0, 1] (each system's own sigmoid), as rerankd's normalized scores are.

This file imports only the standard library at top level: it must start under every peer's virtualenv,
none of which has rerankd installed except the main one.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Scorer = Callable[[str, list[str]], list[float]]
DISTRIBUTIONS = ("rerankd", "torch", "transformers", "onnxruntime", "openvino", "optimum", "optimum-onnx", "optimum-intel",
                 "nncf", "sentence-transformers", "infinity-emb", "flashrank", "numpy", "tokenizers")


def _versions() -> dict[str, str]:
    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _threads() -> dict[str, int]:
    threads = {}
    if "torch" in sys.modules:
        threads["torch"] = sys.modules["torch"].get_num_threads()
    return threads


def load_rerankd(options: dict[str, Any]) -> tuple[Scorer, dict[str, Any]]:
    os.environ.update(options.get("environ", {}))  # before rerankd reads it (RERANKD_CPU_ATTENTION)
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(options["model"], **options.get("kwargs", {}))
    return (lambda q, docs: reranker.score(q, docs)), {"describe": reranker.describe()}


def load_st(options: dict[str, Any]) -> tuple[Scorer, dict[str, Any]]:
    from sentence_transformers import CrossEncoder

    kwargs: dict[str, Any] = {"device": "cpu"}
    if options.get("backend"):
        kwargs["backend"] = options["backend"]
    if options.get("file_name") or options.get("ov_config"):
        kwargs["model_kwargs"] = {k: options[k] for k in ("file_name", "ov_config") if options.get(k)}
    model = CrossEncoder(options["model"], **kwargs)

    def score(q: str, docs: list[str]) -> list[float]:
        return [float(x) for x in model.predict([(q, d) for d in docs], show_progress_bar=False)]
    info = {"backend": options.get("backend") or "torch", "file_name": options.get("file_name"),
            "activation": type(model.activation_fn).__name__}
    if options.get("backend") == "openvino":
        import openvino

        # OpenVINO's CPU plugin computes in bf16 by default where the CPU has bf16 units (AMX, AVX512-BF16),
        # whatever the graph's dtype: say which precision the "fp32" model actually ran in.
        info["inference_precision"] = (options.get("ov_config", {}).get("INFERENCE_PRECISION_HINT")
                                       or str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")))
    return score, info


def load_infinity(options: dict[str, Any]) -> tuple[Scorer, dict[str, Any]]:
    model = options["model"]
    if options.get("cwd"):
        # Infinity's optimum engine lists a local dir's *.onnx with the dir as prefix and passes that
        # as optimum's file_name, which optimum compares with bare file names: loading the dir as "."
        # from inside it gives the relative name both sides expect. Its optimized graph goes to
        # HF_HUB_CACHE/infinity_onnx/, kept beside the artifacts here.
        os.environ["HF_HUB_CACHE"] = str(Path(options["cwd"]) / ".hf-cache")
        os.chdir(options["cwd"])
        model = "."
    from infinity_emb import EngineArgs, SyncEngineArray

    args = EngineArgs(model_name_or_path=model, engine=options["engine"], device="cpu")
    array = SyncEngineArray.from_args([args])
    name = args.served_model_name

    def score(q: str, docs: list[str]) -> list[float]:
        results, _usage = array.rerank(model=name, query=q, docs=docs).result()
        by_index = {r.index: float(r.relevance_score) for r in results}
        return [by_index[i] for i in range(len(docs))]
    return score, {"engine": options["engine"], "_keep": array}


def load_flashrank(options: dict[str, Any]) -> tuple[Scorer, dict[str, Any]]:
    from flashrank import Ranker, RerankRequest

    ranker = Ranker(model_name=options["model_name"], cache_dir=options["cache_dir"], log_level="WARNING")

    def score(q: str, docs: list[str]) -> list[float]:
        results = ranker.rerank(RerankRequest(query=q, passages=[{"id": i, "text": d} for i, d in enumerate(docs)]))
        by_id = {r["id"]: float(r["score"]) for r in results}
        return [by_id[i] for i in range(len(docs))]
    return score, {"model_name": options["model_name"], "graph": str(ranker.model_dir)}


LOADERS: dict[str, Callable[[dict[str, Any]], tuple[Scorer, dict[str, Any]]]] = {
    "rerankd": load_rerankd, "st": load_st, "infinity": load_infinity, "flashrank": load_flashrank,
}


def _quantization_arch() -> str:
    """The ``AutoQuantizationConfig`` preset that ST's docs pick for this CPU (arm64 / avx512_vnni / avx512 / avx2)."""
    import platform

    if platform.machine().lower() in {"arm64", "aarch64"}:
        return "arm64"
    flags = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    return "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"


def _save_subfolder(model: Any, target: Path, subfolder: str) -> None:
    """Save an exported ST model's backend files (``onnx/`` or ``openvino/``) into ``target``, nothing else."""
    staging = target / f".save-{subfolder}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    shutil.rmtree(target / subfolder, ignore_errors=True)
    shutil.move(str(staging / subfolder), str(target / subfolder))
    shutil.rmtree(staging, ignore_errors=True)


def st_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Write the graphs ST users make from one model dir: ONNX (plain, O3, dynamic int8) and OpenVINO (fp32, static int8).

    Each step is the one sentence-transformers documents (export on load + save_pretrained,
    ``export_optimized_onnx_model``, ``export_dynamic_quantized_onnx_model``), except static int8
    OpenVINO: ``export_static_quantized_openvino_model`` calibrates on GLUE/SST-2 from the hub, so
    here the same optimum-intel calls run on a calibration set made of the workload's own query and
    other documents (``calibration``), written under ST's file name.
    """
    from sentence_transformers import CrossEncoder
    from sentence_transformers.backend import (
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    target = Path(spec["model"])
    wanted = set(spec["artifacts"])
    done: dict[str, Any] = {}
    if wanted & {"onnx", "onnx-o3", "onnx-int8"}:
        try:
            if not (target / "onnx" / "model.onnx").exists():
                _save_subfolder(CrossEncoder(str(target), device="cpu", backend="onnx"), target, "onnx")
            model = CrossEncoder(str(target), device="cpu", backend="onnx")
            done["onnx"] = "onnx/model.onnx"
            if "onnx-o3" in wanted and not (target / "onnx" / "model_O3.onnx").exists():
                try:
                    export_optimized_onnx_model(model, "O3", str(target))
                except Exception as exc:  # noqa: BLE001 - reported in the table, the other steps go on
                    done["onnx-o3-error"] = f"{type(exc).__name__}: {exc}"[:400]
            if (target / "onnx" / "model_O3.onnx").exists():
                done["onnx-o3"] = "onnx/model_O3.onnx"
            arch = _quantization_arch()
            # ST names the file after the preset's weight type: model_qint8_avx512_vnni.onnx, model_quint8_avx2.onnx
            found = sorted((target / "onnx").glob(f"model_*int8_{arch}.onnx"))
            if "onnx-int8" in wanted and not found:
                try:
                    export_dynamic_quantized_onnx_model(model, arch, str(target))
                except Exception as exc:  # noqa: BLE001
                    done["onnx-int8-error"] = f"{type(exc).__name__}: {exc}"[:400]
                found = sorted((target / "onnx").glob(f"model_*int8_{arch}.onnx"))
            if found:
                done["onnx-int8"] = f"onnx/{found[0].name}"
            del model
        except Exception as exc:  # noqa: BLE001
            done["onnx-error"] = f"{type(exc).__name__}: {exc}"[:400]
    if wanted & {"openvino", "openvino-int8"}:
        try:
            if not (target / "openvino" / "openvino_model.xml").exists():
                _save_subfolder(CrossEncoder(str(target), device="cpu", backend="openvino"), target, "openvino")
            done["openvino"] = "openvino/openvino_model.xml"
            static = target / "openvino" / "openvino_model_qint8_quantized.xml"
            if "openvino-int8" in wanted and not static.exists():
                try:
                    _openvino_static_int8(target, spec["calibration"])
                except Exception as exc:  # noqa: BLE001
                    done["openvino-int8-error"] = f"{type(exc).__name__}: {exc}"[:400]
            if static.exists():
                done["openvino-int8"] = "openvino/openvino_model_qint8_quantized.xml"
        except Exception as exc:  # noqa: BLE001
            done["openvino-error"] = f"{type(exc).__name__}: {exc}"[:400]
    return done


def _openvino_static_int8(target: Path, calibration: dict[str, Any]) -> None:
    """ST's static OpenVINO int8 export, calibrated on local (query, document) pairs instead of SST-2."""
    import datasets
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import CrossEncoder
    from sentence_transformers.backend.utils import save_or_push_to_hub_model

    model = CrossEncoder(str(target), device="cpu", backend="openvino")
    pairs = [(calibration["query"], d) for d in calibration["docs"]]
    # ST pads calibration inputs to 384 tokens; pairs keep their first/second segment (token types).
    encoded = model.tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding="max_length", max_length=384, truncation=True)
    dataset = datasets.Dataset.from_dict(dict(encoded))
    config = OVQuantizationConfig(num_samples=len(pairs))
    quantizer = OVQuantizer.from_pretrained(model.transformers_model)
    save_or_push_to_hub_model(
        export_function=lambda save_dir: quantizer.quantize(dataset, save_directory=save_dir, ov_config=OVConfig(quantization_config=config)),
        export_function_name="export_static_quantized_openvino_model", config=config, model_name_or_path=str(target),
        push_to_hub=False, create_pr=False, file_suffix="qint8_quantized", backend="openvino", model=model,
    )


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    # Keep the protocol channel to ourselves: fd 1 now goes to stderr for every library.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        protocol.write("PEER " + json.dumps(message) + "\n")
        protocol.flush()

    if spec["kind"] == "st-prepare":
        send({"prepared": st_prepare(spec), "versions": _versions()})
        return
    start = time.perf_counter()
    try:
        score, info = LOADERS[spec["kind"]](spec["options"])
        load_s = time.perf_counter() - start
        query, docs = spec["query"], spec["docs"]
        scores: list[float] = []
        for _ in range(max(1, int(spec.get("warmup", 1)))):
            scores = score(query, docs)
    except Exception as exc:  # noqa: BLE001 - the parent reports it in the table and goes on
        import traceback

        traceback.print_exc()
        send({"error": f"{type(exc).__name__}: {exc}"[:600]})
        return
    info.pop("_keep", None)
    send({"ready": True, "scores": scores, "load_s": load_s, "rss": _status_kib("VmRSS"), "peak_rss": _status_kib("VmHWM"),
          "versions": _versions(), "threads": _threads(), "info": info})
    for line in sys.stdin:
        command = line.strip()
        if command == "time":
            start = time.perf_counter()
            score(query, docs)
            send({"seconds": time.perf_counter() - start})
        elif command == "quit":
            break
    protocol.flush()
    os._exit(0)  # skip library atexit hooks (Infinity's engine loop) that can hang a clean shutdown


if __name__ == "__main__":
    main()
