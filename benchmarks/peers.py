"""rerankd against the rerankers users would pick instead, on the rerank-100 workload, in one command.

Usage:
    python benchmarks/peers.py [--shapes minilm xlmr] [--rows KEY ...] [--reps 3] [--compete N] [--docs N]
    python benchmarks/peers.py --list          # the row keys

Systems (``--rows`` keys; all by default): rerankd's default (``Reranker.from_pretrained(dir)``, no
options) and its other paths (torch fp32 / bf16, ONNX fp32 / int8 written by ``rerankd export``);
sentence-transformers CrossEncoder with default settings, backend="onnx" (plain export, O3-optimized,
dynamic int8 via ``export_dynamic_quantized_onnx_model`` with the preset for this CPU), backend="openvino"
(fp32, static int8); Infinity (torch and optimum engines); FlashRank (fp32 and int8 graphs).

Each system runs in its own worker process (``peer_worker.py``). rerankd and the ST default run in this
interpreter's environment; peers whose pins clash with it (Infinity: sentence-transformers < 4 and
numpy < 2; ST's onnx/openvino extras and optimum: transformers < 4.58) run in virtualenvs this script
creates on first use under ``~/.cache/rerankd/peers-venvs/NAME`` (torch pinned to this environment's
version, so pip never pulls a CUDA build). FlashRank only loads graphs from its own cache layout
(``cache_dir/<model name>/<file>``) and downloads them otherwise; here the graphs it would download are
made from the same random-weight model (optimum's ONNX export, fp32 and dynamic int8) and laid out
under two of its model names, so it runs offline on the same weights as everyone else.

Method: every worker loads its system and scores the workload once (warm-up; those scores give max |Δ|
and Spearman against rerankd torch fp32 on the same inputs, in [0, 1] score space), then the parent
times rounds in turns, one system at a time, so load on a shared machine hits all alike; median of
``--reps`` rounds. ``--compete N`` runs N single-threaded CPU-bound processes during the timed rounds.
If memory runs short (XLM-R: ~2-3 GB a worker), systems are timed in groups, each group with the ST
default, and ratios are taken within the group. Prints the CPU flags, cores, and each environment's
library versions beside the table.

``--cpu-isa avx2`` / ``--cpu-isa avx512_bf16`` run every system as that older CPU class would, on this
machine: the instruction sets the libraries choose at run time are capped (oneDNN's
``ONEDNN_MAX_CPU_ISA``, which rerankd's own defaults follow; ATen's ``ATEN_CPU_CAPABILITY``; MKL's
``MKL_ENABLE_INSTRUCTIONS``), and OpenVINO is told the precision it picks on such a CPU (its own bf16
check ignores the cap). ONNX Runtime's MLAS kernels and OpenVINO's fp32 kernels read cpuid and cannot
be capped: those rows keep this CPU's whole instruction set, which flatters them. Clock, caches and
memory stay this machine's, so the emulation shows ratios, not the other class's absolute speed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload

WORKER = Path(__file__).resolve().parent / "peer_worker.py"
VENV_ROOT = Path.home() / ".cache" / "rerankd" / "peers-venvs"
ANCHOR = "st"
REFERENCE = "rerankd-fp32"
GIB = 2**30
GROWTH = 2.0  # a live worker's peak RSS times this is what it may come to hold while timing

# --cpu-isa: the environment that makes every worker run as the named CPU class (see the docstring),
# and OpenVINO's inference precision on that class (it keeps its own default where absent).
CPU_CLASSES: dict[str, dict[str, str]] = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512_bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ATEN_CPU_CAPABILITY": "avx512",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
}
OPENVINO_PRECISION = {"avx2": "f32"}  # no bf16 units: OpenVINO computes fp32 there


@dataclass(frozen=True)
class Venv:
    """A peer's own environment: what pip installs after torch (pinned) when it is created."""

    requirements: tuple[str, ...]
    torch: bool = True


# Versions pinned so the worker's calls keep matching the libraries; bump them together with peer_worker.py.
VENVS = {
    # The onnx/openvino extras pull optimum(-onnx/-intel), which cap transformers below 4.58; datasets: the
    # static OpenVINO quantizer's calibration set; huggingface-hub < 1: transformers 4.57 refuses newer.
    "st": Venv(("sentence-transformers[onnx,openvino]==5.7.0", "datasets<5", "huggingface-hub<1.0")),
    "infinity": Venv(("infinity-emb[torch,optimum]==0.0.78",)),
    "flashrank": Venv(("flashrank==0.2.10",), torch=False),
}


@dataclass(frozen=True)
class Row:
    """One system: its label, the environment it runs in, the worker loader, and what it loads."""

    label: str
    env: str  # "main" (this interpreter) or a key of VENVS
    kind: str  # a loader of peer_worker.LOADERS
    options: Callable[[Shape], dict[str, Any]]
    needs: tuple[str, ...] = ()  # prepared artifacts (keys of Shape.artifacts)


@dataclass
class Shape:
    """One model shape and everything prepared from it."""

    name: str
    model_dir: Path
    work: Path  # <models-dir>/<shape>-peers: the peers' copies and graphs
    onnx_dir: Path  # rerankd export output (shared with cpu_backends.py)
    artifacts: dict[str, str] = field(default_factory=dict)  # artifact → file inside st_dir (or path), or "" when failed
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def st_dir(self) -> Path:
        return self.work / "st"


def _st(backend: str | None, artifact: str | None = None) -> Callable[[Shape], dict[str, Any]]:
    return lambda s: {"model": str(s.st_dir), "backend": backend, "file_name": s.artifacts.get(artifact) if artifact else None}


ROWS: dict[str, Row] = {
    "rerankd-default": Row("rerankd default (`Reranker.from_pretrained(dir)`)", "main", "rerankd", lambda s: {"model": str(s.model_dir)}),
    "rerankd-fp32": Row("rerankd torch fp32", "main", "rerankd",
                        lambda s: {"model": str(s.model_dir), "kwargs": {"backend": "torch", "dtype": "fp32"}}),
    "rerankd-bf16": Row("rerankd torch bf16", "main", "rerankd",
                        lambda s: {"model": str(s.model_dir), "kwargs": {"backend": "torch", "dtype": "bf16"}}),
    "rerankd-onnx-fp32": Row("rerankd ONNX fp32 (`rerankd export`)", "main", "rerankd",
                             lambda s: {"model": str(s.onnx_dir / "fp32"), "kwargs": {"backend": "onnx"}}, ("rerankd-onnx-fp32",)),
    "rerankd-onnx-int8": Row("rerankd ONNX int8 (`rerankd export --precision int8`)", "main", "rerankd",
                             lambda s: {"model": str(s.onnx_dir / "int8"), "kwargs": {"backend": "onnx"}}, ("rerankd-onnx-int8",)),
    "st": Row("sentence-transformers CrossEncoder default (torch fp32)", "main", "st", lambda s: {"model": str(s.model_dir)}),
    "st-onnx": Row('ST backend="onnx"', "st", "st", _st("onnx", "onnx"), ("onnx",)),
    "st-onnx-o3": Row('ST backend="onnx", O3-optimized', "st", "st", _st("onnx", "onnx-o3"), ("onnx-o3",)),
    "st-onnx-int8": Row('ST backend="onnx", dynamic int8', "st", "st", _st("onnx", "onnx-int8"), ("onnx-int8",)),
    "st-openvino": Row('ST backend="openvino" fp32', "st", "st", _st("openvino", "openvino"), ("openvino",)),
    "st-openvino-int8": Row('ST backend="openvino", static int8', "st", "st", _st("openvino", "openvino-int8"), ("openvino-int8",)),
    "infinity-torch": Row("Infinity, torch engine", "infinity", "infinity",
                          lambda s: {"model": str(s.model_dir), "engine": "torch"}),
    "infinity-optimum": Row("Infinity, optimum engine", "infinity", "infinity",
                            lambda s: {"model": str(s.work / "infinity-onnx"), "cwd": str(s.work / "infinity-onnx"), "engine": "optimum"}, ("onnx",)),
    "flashrank-fp32": Row("FlashRank, fp32 graph", "flashrank", "flashrank",
                          lambda s: {"cache_dir": str(s.work / "flashrank"), "model_name": FLASHRANK_SLOTS["onnx"][0]}, ("onnx",)),
    "flashrank-int8": Row("FlashRank, int8 graph", "flashrank", "flashrank",
                          lambda s: {"cache_dir": str(s.work / "flashrank"), "model_name": FLASHRANK_SLOTS["onnx-int8"][0]}, ("onnx-int8",)),
}
# Off by default: the ST default inside the ST extras' environment (transformers 4.57), to separate the
# library version from the runtime when comparing ST rows.
EXTRA_ROWS: dict[str, Row] = {
    "st-torch-venv": Row("sentence-transformers CrossEncoder default, in the onnx/openvino extras' env", "st", "st", _st(None)),
    # rerankd's default with torch's SDPA instead of its AMX attention kernel, to show what the kernel adds.
    "rerankd-sdpa": Row("rerankd default, `RERANKD_CPU_ATTENTION=sdpa`", "main", "rerankd",
                        lambda s: {"model": str(s.model_dir), "environ": {"RERANKD_CPU_ATTENTION": "sdpa"}}),
}
ALL_ROWS = {**ROWS, **EXTRA_ROWS}

# FlashRank's model names and the graph file each one loads (flashrank/Config.py model_file_map):
# the fp32 graph under a model whose file is fp32, the int8 graph under one whose file is quantized.
FLASHRANK_SLOTS = {"onnx": ("ms-marco-TinyBERT-L-2-v2", "flashrank-TinyBERT-L-2-v2.onnx"),
                   "onnx-int8": ("ms-marco-MiniLM-L-12-v2", "flashrank-MiniLM-L-12-v2_Q.onnx")}
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentencepiece.bpe.model")


# ---------------------------------------------------------------- machine


MATRIX_FLAG_PATTERN = r"avx512[a-z_0-9]*|amx[a-z_0-9]*|avx2"


def cpu_flags() -> list[str]:
    """The flags that decide the fast paths: ``grep -o -E 'avx512[a-z_0-9]*|amx[a-z_0-9]*|avx2' /proc/cpuinfo | sort -u``."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return []
    return sorted(set(re.findall(MATRIX_FLAG_PATTERN, text)))


def machine_lines() -> list[str]:
    """CPU model, flags, cores (online, usable by this process, cgroup quota) and the load right now."""
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = ""
    try:
        quota = f", cgroup cpu.max {Path('/sys/fs/cgroup/cpu.max').read_text().strip()!r}"
    except OSError:
        pass
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    return [f"CPU: {model}; {os.cpu_count()} logical CPUs, {usable} usable by this process{quota}; load average {load}",
            f"CPU flags: {' '.join(cpu_flags()) or '(none of avx2/avx512*/amx*)'}"]


def mem_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 64 * GIB


# ---------------------------------------------------------------- environments


def torch_pin() -> str:
    """``torch==X.Y.Z`` of this environment (local build tag dropped), so peers get the same CPU build."""
    import importlib.metadata

    return "torch==" + importlib.metadata.version("torch").split("+")[0]


def ensure_venv(name: str, root: Path = VENV_ROOT) -> Path:
    """The python of peer environment ``name``, created (or re-installed when its requirements changed) on first use."""
    spec = VENVS[name]
    venv = root / name
    python = venv / "bin" / "python"
    pin = torch_pin() if spec.torch else ""
    want = hashlib.sha256(json.dumps([spec.requirements, pin]).encode()).hexdigest()
    stamp = venv / ".peers-installed"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    print(f"[setup] creating {venv} ({', '.join(spec.requirements)}); this takes a few minutes once", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv / "install.log"
    with open(log, "w", encoding="utf-8") as out:
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        if pin:
            # torch first, alone and pinned, then the peer with torch held by a constraint: a looser
            # requirement anywhere would otherwise pull the multi-GB CUDA build.
            constraints = venv / "constraints.txt"
            constraints.write_text(pin + "\n")
            steps = [pip + [pin], pip + ["-c", str(constraints), *spec.requirements]]
        else:
            steps = [pip + list(spec.requirements)]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise SystemExit(f"pip failed for peer environment {name}; see {log}")
    stamp.write_text(want)
    return python


def python_for(env: str, root: Path) -> Path:
    return Path(sys.executable) if env == "main" else ensure_venv(env, root)


def worker_env(env: str) -> dict[str, str]:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    if env != "main":  # a peer's venv must not see this checkout's rerankd or the main venv
        for key in ("PYTHONPATH", "VIRTUAL_ENV"):
            environ.pop(key, None)
    return environ


# ---------------------------------------------------------------- workers


class WorkerError(RuntimeError):
    pass


class Worker:
    """A peer_worker.py process: started with a spec, then driven line by line."""

    def __init__(self, key: str, python: Path, spec: dict[str, Any], logs: Path, env: str):
        self.key = key
        logs.mkdir(parents=True, exist_ok=True)
        self.spec_path = logs / f"{key}.spec.json"
        self.spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.log_path = logs / f"{key}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - held for the worker's life, closed in close()
        self.proc = subprocess.Popen([str(python), str(WORKER), str(self.spec_path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=worker_env(env))

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("PEER "):
                message = json.loads(line[5:])
                if "error" in message:
                    raise WorkerError(message["error"])
                return message
        self.proc.wait()
        raise WorkerError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self, chars: int = 1500) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:].strip()

    def time(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("time\n")
        self.proc.stdin.flush()
        return float(self.read()["seconds"])

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# ---------------------------------------------------------------- artifacts


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)  # same bytes, no second copy of a 2 GB file; nobody writes these in place
    except OSError:
        shutil.copy2(src, dst)


def _copy_tokenizer_files(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)


def export_rerankd(shape: Shape, precision: str, logs: Path) -> None:
    """``rerankd export --precision P`` into the directory cpu_backends.py uses too (done once per shape)."""
    out = shape.onnx_dir / precision
    if (out / "model.onnx").exists():
        return
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "rerankd.cli", "export", "--model", str(shape.model_dir), "--out", str(out), "--precision", precision]
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"export-{precision}.log", "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=worker_env("main"), check=False)
    if proc.returncode != 0:
        shape.errors[f"rerankd-onnx-{precision}"] = f"rerankd export failed (see {logs / f'export-{precision}.log'})"
        return
    print(f"[setup] {shape.name}: rerankd export --precision {precision} in {time.perf_counter() - start:.0f} s", flush=True)


def prepare_st(shape: Shape, wanted: set[str], calibration: dict[str, Any], venvs: Path, logs: Path) -> None:
    """ST's exports (once per shape, kept in <shape>-peers/st), then Infinity's and FlashRank's dirs from them."""
    st_dir = shape.st_dir
    _copy_tokenizer_files(shape.model_dir, st_dir)
    _link_or_copy(shape.model_dir / "model.safetensors", st_dir / "model.safetensors")
    start = time.perf_counter()
    worker = Worker("st-prepare", python_for("st", venvs),
                    {"kind": "st-prepare", "model": str(st_dir), "artifacts": sorted(wanted), "calibration": calibration}, logs, "st")
    try:
        prepared = worker.read()["prepared"]
    except WorkerError as exc:
        prepared = {f"{a}-error": str(exc) for a in wanted}
    finally:
        worker.close()
    for key, value in prepared.items():
        (shape.errors if key.endswith("-error") else shape.artifacts)[key.removesuffix("-error")] = value
    print(f"[setup] {shape.name}: ST graphs {sorted(k for k in shape.artifacts)} ({time.perf_counter() - start:.0f} s)"
          + (f"; failed: {shape.errors}" if shape.errors else ""), flush=True)
    if "onnx" in shape.artifacts:
        # Infinity's optimum engine looks for *.onnx in the model dir (a quantized one first on CPU when its
        # name says "quantize") and hands the path it found to optimum, which (2.x) matches it against bare
        # file names: only a graph at the top of the dir loads. Give it the plain export there, as
        # optimum's own export writes it.
        infinity = shape.work / "infinity-onnx"
        _copy_tokenizer_files(shape.model_dir, infinity)
        for graph in (st_dir / "onnx").glob("model.onnx*"):
            _link_or_copy(graph, infinity / graph.name)
    for artifact, (model_name, file_name) in FLASHRANK_SLOTS.items():
        if artifact in shape.artifacts:
            _flashrank_dir(shape, st_dir / shape.artifacts[artifact], shape.work / "flashrank" / model_name, file_name)


def _flashrank_dir(shape: Shape, graph: Path, out: Path, file_name: str) -> None:
    """FlashRank's on-disk model layout: the graph under its expected file name, and the tokenizer files it reads."""
    _copy_tokenizer_files(shape.model_dir, out)
    _link_or_copy(graph, out / file_name)
    for data in graph.parent.glob(graph.name + "_data"):  # >2 GB graphs keep weights beside, named in the graph
        _link_or_copy(data, out / data.name)
    config = json.loads((out / "config.json").read_text())
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    if config.get("pad_token_id") is None:
        config["pad_token_id"] = 1 if config.get("model_type") == "xlm-roberta" else 0
        (out / "config.json").write_text(json.dumps(config, indent=2))
    if not (out / "special_tokens_map.json").exists():
        special = {k: v for k, v in tok_config.items() if k.endswith("_token") and isinstance(v, (str, dict))}
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def prepare(shape: Shape, rows: list[str], calibration: dict[str, Any], venvs: Path, logs: Path) -> None:
    needs = {n for key in rows for n in ALL_ROWS[key].needs}
    for precision in ("fp32", "int8"):
        if f"rerankd-onnx-{precision}" in needs:
            export_rerankd(shape, precision, logs)
            if f"rerankd-onnx-{precision}" not in shape.errors:
                shape.artifacts[f"rerankd-onnx-{precision}"] = str(shape.onnx_dir / precision)
    st_needs = needs - {"rerankd-onnx-fp32", "rerankd-onnx-int8"}
    if st_needs:
        prepare_st(shape, st_needs, calibration, venvs, logs)


# ---------------------------------------------------------------- timing


@dataclass
class Result:
    key: str
    per_group: dict[int, list[float]] = field(default_factory=dict)  # only the ST default runs in several groups
    ready: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def times(self) -> list[float]:
        return next(iter(self.per_group.values()), [])

    @property
    def group(self) -> int:
        return next(iter(self.per_group), 0)


COMPETITORS = {
    # One thread each (BLAS threads pinned to 1), so N competitors are N busy cores' worth of work.
    "matmul": "import numpy as np\na = np.random.rand(384, 384)\nwhile True:\n    a @ a\n",
    "python": "x = 0\nwhile True:\n    x = (x * 31 + 7) % 1000003\n",
}


def start_competitors(n: int, kind: str) -> list[subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", COMPETITORS[kind]], env=env) for _ in range(n)]
    time.sleep(1.0 if n else 0.0)
    return procs


def stop_competitors(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()


def time_group(workers: dict[str, Worker], results: dict[str, Result], args: argparse.Namespace, group: int) -> None:
    """``--reps`` rounds; in each, every live worker scores the workload once, in turn."""
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    print(f"[time] group {group}: {', '.join(workers)}; {args.reps} rounds, {args.compete} competing {args.compete_kind} "
          f"process(es); load average before {load}", flush=True)
    competitors = start_competitors(args.compete, args.compete_kind)
    try:
        for round_no in range(args.reps):
            for key, worker in list(workers.items()):
                time.sleep(args.settle)  # let the previous system's spinning thread pools go idle
                try:
                    seconds = worker.time()
                except WorkerError as exc:
                    results[key].error = f"failed while timing: {exc}"
                    workers.pop(key).close()
                    continue
                results[key].per_group.setdefault(group, []).append(seconds)
                print(f"[time]   round {round_no + 1} {key}: {seconds:.2f} s", flush=True)
    finally:
        stop_competitors(competitors)


def run_shape(shape: Shape, rows: list[str], query: str, docs: list[str], args: argparse.Namespace) -> dict[str, Result]:
    """Start a worker per row (the ST default first), time them in interleaved rounds, grouped when memory is short."""
    logs = args.models_dir / f"{shape.name}-peers" / "logs"
    results: dict[str, Result] = {}
    order = ([ANCHOR] if ANCHOR in rows else []) + [k for k in rows if k != ANCHOR]
    live: dict[str, Worker] = {}
    guess = 3 * workload_weights(shape.model_dir)  # a worker's peak RSS before any has loaded
    biggest = 0
    budget = mem_available() - args.memory_margin * GIB  # what this shape's workers may hold together
    group = 0
    try:
        for key in order:
            row = ALL_ROWS[key]
            results[key] = Result(key)
            missing = [n for n in row.needs if n not in shape.artifacts]
            if missing:
                results[key].error = "not available: " + "; ".join(f"{n}: {shape.errors.get(n, 'not prepared')}" for n in missing)
                print(f"[load] {key}: {results[key].error}", flush=True)
                continue
            need = biggest or guess
            # Idle workers keep their allocator's high-water mark and grow past it on later runs (ORT's arena:
            # FlashRank's 100 × 512-token batch went from 3.8 GB at warm-up to 7.2 GB over the rounds),
            # so count every live worker at its peak with room to grow, and check what the machine has now.
            committed = GROWTH * sum(results[k].ready["peak_rss"] for k in live)
            short = committed + need > budget or mem_available() - need < args.memory_margin * GIB
            if len(live) > (ANCHOR in live) and short:
                time_group(live, results, args, group)
                for other in [k for k in live if k != ANCHOR]:
                    live.pop(other).close()
                group += 1
            options = row.options(shape)
            if options.get("backend") == "openvino" and args.cpu_isa in OPENVINO_PRECISION:
                options["ov_config"] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[args.cpu_isa]}
            spec = {"kind": row.kind, "options": options, "query": query, "docs": docs, "warmup": args.warmup}
            try:
                worker = Worker(key, python_for(row.env, args.venvs), spec, logs, row.env)
            except SystemExit as exc:
                results[key].error = str(exc)
                continue
            start = time.perf_counter()
            try:
                results[key].ready = worker.read()
            except WorkerError as exc:
                results[key].error = f"failed to load: {exc}"
                print(f"[load] {key}: {results[key].error}", flush=True)
                worker.close()
                continue
            live[key] = worker
            ready = results[key].ready
            biggest = max(biggest, ready["peak_rss"])
            print(f"[load] {key}: ready in {time.perf_counter() - start:.0f} s (load {ready['load_s']:.0f} s), peak RSS "
                  f"{ready['peak_rss'] / 2**20:.0f} MiB, {ready.get('info', {})}", flush=True)
        if live:
            time_group(live, results, args, group)
    finally:
        for worker in live.values():
            worker.close()
    return results


def workload_weights(model_dir: Path) -> int:
    from rerankd.measure import weights_size_bytes

    return weights_size_bytes(model_dir)


# ---------------------------------------------------------------- report


def table(shape: Shape, rows: list[str], results: dict[str, Result], n_docs: int, args: argparse.Namespace) -> list[str]:
    from rerankd.measure import compare_scores

    reference = results.get(REFERENCE)
    ref_scores = reference.ready.get("scores") if reference and reference.ready else None
    lines = ["| system | pairs/s | × ST default | max \\|Δ score\\| | Spearman | peak RSS MiB | round times s (spread) |",
             "|---|---|---|---|---|---|---|"]
    for key in rows:
        result = results[key]
        label = ALL_ROWS[key].label
        if result.error or not result.times:
            lines.append(f"| {label} | — | — | — | — | — | {result.error or 'no timing'} |")
            continue
        median = statistics.median(result.times)
        anchor = results.get(ANCHOR)
        anchor_times = anchor.per_group.get(result.group) if anchor else None
        ratio = f"{statistics.median(anchor_times) / median:.2f}×" if anchor_times else "—"
        delta = spearman = "—"
        if ref_scores and result.ready.get("scores"):
            agreement = compare_scores(ref_scores, result.ready["scores"])
            delta, spearman = f"{agreement.max_abs_delta:.4f}", f"{agreement.spearman:.4f}"
        spread = max(result.times) / min(result.times) - 1
        times = ", ".join(f"{t:.2f}" for t in result.times)
        group = f" g{result.group}" if any(r.group for r in results.values()) else ""
        lines.append(f"| {label}{group} | {n_docs / median:.2f} | {ratio} | {delta} | {spearman} | "
                     f"{result.ready['peak_rss'] / 2**20:.0f} | {times} ({100 * spread:.0f}%) |")
    return lines


def versions_lines(results: dict[str, Result]) -> list[str]:
    by_env: dict[str, dict[str, str]] = {}
    for key, result in results.items():
        if key in ALL_ROWS and result.ready.get("versions"):
            by_env.setdefault(ALL_ROWS[key].env, {}).update(result.ready["versions"])
    lines = []
    for env, versions in by_env.items():
        where = "rerankd's environment" if env == "main" else f"venv {env}"
        lines.append(f"- {where}: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["minilm", "xlmr"], choices=["minilm", "xlmr"])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), help="row keys (see --list); default: all but the extra rows")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed scorings of the workload per system after load")
    parser.add_argument("--docs", type=int, default=None, help="documents per round (default: 100 for MiniLM, 20 for XLM-R)")
    parser.add_argument("--compete", type=int, default=0, metavar="N", help="N CPU-bound processes run during the timed rounds")
    parser.add_argument("--compete-kind", choices=sorted(COMPETITORS), default="matmul",
                        help="competitor loop: single-threaded numpy matmul, or pure Python")
    parser.add_argument("--cpu-isa", choices=sorted(CPU_CLASSES), default=None,
                        help="run every system as this older CPU class would (instruction sets capped; see above)")
    parser.add_argument("--settle", type=float, default=0.3, help="seconds of pause before each timed run")
    parser.add_argument("--memory-margin", type=float, default=1.5, help="GiB to keep free before starting another worker")
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    parser.add_argument("--venvs", type=Path, default=VENV_ROOT, help="where the peers' virtualenvs live")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--list", action="store_true", help="print the row keys and exit")
    args = parser.parse_args()
    if args.list:
        for key, row in ALL_ROWS.items():
            print(f"{key:20s} {row.label}  [{'this env' if row.env == 'main' else 'venv ' + row.env}]"
                  + ("  (extra, off by default)" if key in EXTRA_ROWS else ""))
        return
    unknown = [k for k in args.rows if k not in ALL_ROWS]
    if unknown:
        parser.error(f"unknown row(s) {unknown}; see --list")

    from transformers import AutoTokenizer

    # A stopped run still closes its workers (run_shape's finally) instead of leaving them to finish a round.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = machine_lines()
    if args.cpu_isa:
        # Set here, before any worker starts, so every process this script runs inherits it.
        os.environ.update(CPU_CLASSES[args.cpu_isa])
        from rerankd.hardware import cpu_info

        cpu_info.cache_clear()
        seen = sorted(f for f in cpu_info().flags if re.fullmatch(MATRIX_FLAG_PATTERN, f))
        report.append(f"Emulated CPU class {args.cpu_isa}: {' '.join(f'{k}={v}' for k, v in CPU_CLASSES[args.cpu_isa].items())}"
                      + (f", OpenVINO INFERENCE_PRECISION_HINT={OPENVINO_PRECISION[args.cpu_isa]}" if args.cpu_isa in OPENVINO_PRECISION else "")
                      + f"; flags as rerankd sees them: {' '.join(seen)}; ONNX Runtime (MLAS) and OpenVINO's fp32 kernels"
                      " are not capped (they read cpuid), so their rows run with the whole instruction set above")
    for line in report:
        print(line, flush=True)
    output: dict[str, Any] = {"machine": report, "shapes": {}}
    tables = []
    for name in args.shapes:
        model_dir = workload.build_shape(name, args.models_dir / name)
        shape = Shape(name, model_dir, args.models_dir / f"{name}-peers", args.models_dir / f"{name}-onnx")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        n_docs = args.docs or workload.docs_for(name)
        docs = workload.make_documents(tokenizer, workload.doc_token_lengths(n_docs))
        # Static int8 calibration: the same query with other documents (another seed), never the timed ones.
        calibration_lengths = workload.doc_token_lengths(64 if name == "minilm" else 16, seed=1)
        calibration_docs = workload.make_documents(tokenizer, workload.doc_token_lengths(n_docs) + calibration_lengths)[n_docs:]
        prepare(shape, args.rows, {"query": workload.QUERY, "docs": calibration_docs}, args.venvs, shape.work / "logs")
        results = run_shape(shape, args.rows, workload.QUERY, docs, args)
        title = (f"### {name}: rerank-100 workload, {n_docs} documents, random weights; {args.reps} interleaved rounds, median; "
                 f"{args.compete} competing process(es)")
        lines = [title, "", *table(shape, args.rows, results, n_docs, args), "", *versions_lines(results)]
        if results.get(REFERENCE) and results[REFERENCE].ready.get("scores"):
            import numpy as np

            ref = np.asarray(results[REFERENCE].ready["scores"])
            lines.append(f"- reference scores (rerankd torch fp32): min {ref.min():.4f}, max {ref.max():.4f}, std {ref.std():.4f}"
                         " (random weights: a narrow spread, so a small |Δ| already reorders documents)")
        for key in ("st-openvino", "st-openvino-int8"):
            precision = results.get(key) and results[key].ready.get("info", {}).get("inference_precision")
            if precision:
                lines.append(f"- {key}: OpenVINO CPU inference precision {precision}")
        describe = results.get("rerankd-default")
        if describe and describe.ready.get("info"):
            lines.append(f"- rerankd default chose: {describe.ready['info'].get('describe')}")
        tables.append(lines)
        print("\n" + "\n".join(lines) + "\n", flush=True)
        output["shapes"][name] = {"docs": n_docs, "rows": {k: {"times": r.per_group, "error": r.error,
                                                                 **{f: r.ready.get(f) for f in ("scores", "peak_rss", "load_s", "versions", "info", "threads")}}
                                                             for k, r in results.items()}}
    print("\n".join(report))
    for lines in tables:
        print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(output, indent=1, default=str))


if __name__ == "__main__":
    main()
