"""The fastest correct way to run a model on this machine: measured, bounded by accuracy, remembered.

Which path is fastest depends on the CPU: with AMX or AVX512-BF16 torch bf16 tends to win, on CPUs
without them ONNX Runtime int8 often does. So rerankd measures the candidates (torch bf16, torch
int8, ONNX Runtime fp32 and int8) on a small fixed workload, keeps those whose scores stay within an
accuracy bound of torch fp32, picks the fastest, and records the measurements as JSON under
``$RERANKD_CACHE`` (default ``~/.cache/rerankd``)/tuning, one file per model and machine.

Example:
    >>> record = tune("BAAI/bge-reranker-v2-m3")              # doctest: +SKIP
    >>> record["choice"], record["why"]                       # doctest: +SKIP
    >>> Reranker.from_pretrained("BAAI/bge-reranker-v2-m3", backend="auto")  # uses the record  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from rerankd.backends.base import Backend
from rerankd.errors import InputError
from rerankd.families import Family, load_family
from rerankd.hardware import machine_fingerprint
from rerankd.hub import cache_root

RECORD_VERSION = 1


@dataclass(frozen=True)
class BackendChoice:
    """One way to run a model: a registered backend name and its precision."""

    backend: str
    dtype: str


@dataclass(frozen=True)
class AccuracyBound:
    """A candidate is accepted when, against torch fp32 on the tuning workload, its normalized scores
    rank the documents alike (Spearman ≥ ``min_spearman``) and move little (max |Δ| ≤ ``max_abs_delta``)."""

    min_spearman: float = 0.99
    max_abs_delta: float = 0.05


CANDIDATES = (BackendChoice("torch", "bf16"), BackendChoice("torch-int8", "int8"), BackendChoice("onnx", "fp32"), BackendChoice("onnx", "int8"))
REFERENCE = BackendChoice("torch", "fp32")


def model_key(model_dir: Path) -> str:
    """Identity of a model's files: path, config, and the size and time of its weight files."""
    digest = hashlib.sha256(str(Path(model_dir).resolve()).encode())
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file() and (path.name == "config.json" or path.suffix in {".safetensors", ".bin", ".onnx"}):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def record_path(model_dir: Path) -> Path:
    machine = hashlib.sha256(json.dumps(machine_fingerprint(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "tuning" / f"{model_key(model_dir)}-{machine}.json"


def load_record(model_dir: Path) -> dict[str, Any] | None:
    """The tuning record of this model on this machine, or None (also when its ONNX files are gone)."""
    path = record_path(model_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    artifact = record.get("choice", {}).get("artifact")
    if record.get("version") != RECORD_VERSION or (artifact and not Path(artifact).exists()):
        return None
    return record


def tune(
    model: str | Path | Family | None,
    *,
    candidates: Sequence[BackendChoice] = CANDIDATES,
    bound: AccuracyBound = AccuracyBound(),
    n_docs: int = 16,
    length_scale: float = 0.5,
    reps: int = 2,
) -> dict[str, Any]:
    """Measure ``candidates`` on this machine, choose the fastest within ``bound``, write and return the record."""
    from rerankd.engine import Reranker
    from rerankd.measure import compare_scores, pairs_per_second, rerank_workload

    family = model if isinstance(model, Family) else _family(model)
    if not candidates:
        raise InputError("no candidates to tune; give at least one backend/dtype pair")
    query, documents = rerank_workload(n_docs, scale=length_scale)
    reference_engine = Reranker(family, _backend(family, REFERENCE))
    reference = reference_engine.score(query, documents)
    reference_speed = pairs_per_second(functools.partial(reference_engine.score, query, documents), len(documents), reps)
    del reference_engine
    rows = []
    for candidate in candidates:
        row: dict[str, Any] = {**asdict(candidate), "artifact": _artifact(family, candidate)}
        try:
            engine = Reranker(family, _backend(family, candidate, row["artifact"]))
            scores = engine.score(query, documents)
            row["pairs_per_s"] = round(pairs_per_second(functools.partial(engine.score, query, documents), len(documents), reps), 3)
            agreement = compare_scores(reference, scores)
            row.update(agreement.as_dict())
            row["accepted"], row["reason"] = _judge(agreement.spearman, agreement.max_abs_delta, bound)
            del engine
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run here is rejected, not fatal
            row.update(pairs_per_s=None, accepted=False, reason=f"failed: {type(exc).__name__}: {exc}"[:300])
        gc.collect()
        rows.append(row)
    accepted = [r for r in rows if r["accepted"]]
    best = max(accepted, key=lambda r: r["pairs_per_s"]) if accepted else None
    choice = {k: best[k] for k in ("backend", "dtype", "artifact")} if best else {**asdict(REFERENCE), "artifact": None}
    record = {
        "version": RECORD_VERSION,
        "model": str(family.model_dir),
        "family": family.kind,
        "machine": machine_fingerprint(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workload": {"documents": len(documents), "length_scale": length_scale, "reps": reps},
        "bound": asdict(bound),
        "reference": {**asdict(REFERENCE), "pairs_per_s": round(reference_speed, 3)},
        "candidates": rows,
        "choice": choice,
        "why": _why(best, rows, reference_speed, bound),
    }
    path = record_path(family.model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return record


def auto_backend(family: Family, device: str | None = None, dtype: str | None = None) -> Backend:
    """The ``auto`` backend: the recorded choice for this model and machine, tuning first if there is none.

    Accelerators skip tuning: torch in its default precision is the fast path there.
    """
    from rerankd.device import resolve_device

    if resolve_device(device) != "cpu":
        return _backend(family, BackendChoice("torch", dtype or "auto"), device=device)
    record = load_record(family.model_dir) or tune(family)
    choice = record["choice"]
    return _backend(family, BackendChoice(choice["backend"], choice["dtype"]), choice.get("artifact"))


def tuning_summary(model_dir: Path) -> dict[str, Any]:
    """``{"tuned": ...}`` for ``rerankd info`` when a record exists: the choice, why, and what was measured."""
    record = load_record(model_dir)
    if record is None:
        return {}
    measured = {r["backend"] + " " + r["dtype"]: {"pairs_per_s": r.get("pairs_per_s"), "spearman": r.get("spearman"),
                                                  "max_abs_delta": r.get("max_abs_delta"), "accepted": r["accepted"]}
                for r in record["candidates"]}
    return {"tuned": {"choice": f"{record['choice']['backend']} {record['choice']['dtype']}", "why": record["why"],
                      "measured": measured, "record": str(record_path(model_dir)), "created": record["created"]}}


# -- helpers ------------------------------------------------------------------------------------------

def _family(model: str | Path | None) -> Family:
    from rerankd.hub import resolve_model

    model_dir, _ = resolve_model(str(model) if model is not None else None)
    return load_family(model_dir)


def _artifact(family: Family, candidate: BackendChoice) -> str | None:
    """The exported ONNX directory an ``onnx`` candidate runs (exported once into the cache)."""
    if candidate.backend != "onnx":
        return None
    from rerankd.export import export_model

    out = cache_root() / "onnx" / model_key(family.model_dir) / candidate.dtype
    if not (out / "model.onnx").is_file():
        export_model(str(family.model_dir), out, precision=candidate.dtype, overwrite=True)
    return str(out)


def _backend(family: Family, candidate: BackendChoice, artifact: str | None = None, device: str | None = "cpu") -> Backend:
    from rerankd.backends.registry import create_backend

    if candidate.backend == "onnx":
        return create_backend("onnx", family, device=device, dtype=candidate.dtype, model_path=artifact)
    dtype = None if candidate.dtype in ("int8", "auto") else candidate.dtype
    return create_backend(candidate.backend, family, device=device, dtype=dtype)


def _judge(spearman: float, max_delta: float, bound: AccuracyBound) -> tuple[bool, str]:
    if spearman < bound.min_spearman:
        return False, f"Spearman {spearman:.4f} < {bound.min_spearman} against torch fp32"
    if max_delta > bound.max_abs_delta:
        return False, f"max |Δscore| {max_delta:.4f} > {bound.max_abs_delta} against torch fp32"
    return True, "within the accuracy bound"


def _why(best: dict[str, Any] | None, rows: list[dict[str, Any]], reference_speed: float, bound: AccuracyBound) -> str:
    rejected = "; ".join(f"{r['backend']} {r['dtype']}: {r['reason']}" for r in rows if not r["accepted"])
    if best is None:
        return f"no candidate stayed within the bound (Spearman ≥ {bound.min_spearman}, max |Δ| ≤ {bound.max_abs_delta}), so torch fp32 is used; {rejected}"
    others = sorted((r for r in rows if r["accepted"] and r is not best), key=lambda r: -r["pairs_per_s"])
    runner_up = f", {best['pairs_per_s'] / others[0]['pairs_per_s']:.2f}× the next accepted ({others[0]['backend']} {others[0]['dtype']})" if others else ""
    text = (f"{best['backend']} {best['dtype']} was the fastest within the bound: {best['pairs_per_s']:.1f} pairs/s, "
            f"{best['pairs_per_s'] / reference_speed:.2f}× torch fp32{runner_up}; Spearman {best['spearman']:.4f}, "
            f"max |Δ| {best['max_abs_delta']:.4f}")
    return text + (f". Rejected: {rejected}" if rejected else "")
