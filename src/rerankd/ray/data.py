"""Ray Data batch scoring: the chunks of a rerank run scored by a pool of actors, each loading the model once.

:func:`rerankd.evaluation.rerank_run.rerank` cuts a run into chunks and keeps the resumable score
cache; this engine only moves the scoring: each chunk becomes one row of a Ray Dataset, and
``map_batches`` with an actor pool (``concurrency`` actors, ``batch_size=1``) scores it with the same
:func:`~rerankd.evaluation.rerank_run.score_chunk` a single process uses. A chunk is therefore one
``score_many`` call wherever it runs, and its scores are the same bits. Rows come back in whatever
order the actors finish; the driver caches each as it arrives (so a killed job keeps every chunk
that came back) and the run file is sorted when written.

Example:
    >>> engine = RayDataEngine(load_options={"model": "cross-encoder/ms-marco-MiniLM-L-6-v2"}, concurrency=2)
    >>> outcome = rerank(reranker, queries, corpus, run, engine=engine, cache_path="scores.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Iterator

from rerankd.errors import InputError
from rerankd.evaluation.datasets import Run
from rerankd.evaluation.rerank_run import ChunkOptions, ChunkTask, score_chunk


class ChunkScorer:
    """The actor class of the pool: loads the model once, then scores one chunk per call."""

    def __init__(self, load_options: dict[str, Any], fingerprint: dict[str, Any], options: ChunkOptions,
                 threads: int) -> None:
        import os

        # torch threads = the CPUs Ray gave this actor (set before torch starts its pool).
        os.environ["OMP_NUM_THREADS"] = str(threads)
        from rerankd.engine import Reranker

        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # an ONNX-only install: onnxruntime reads OMP_NUM_THREADS' cap through rerankd
            pass
        # every actor on one thread count, as the driver's single-process run: the same bits
        self.reranker = Reranker.from_pretrained(**load_options).pin_threads()
        if self.reranker.fingerprint() != fingerprint:
            # Another file or library on this node would mix other scores into the run: refuse.
            raise InputError(f"the model loaded on a Ray worker is not the driver's: {self.reranker.fingerprint()} "
                             f"!= {fingerprint}; give every node the same model files and rerankd version")
        self.options = options
        self.memo: dict[str, Any] = {}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = []
        for payload in batch["task"]:
            task = ChunkTask(**json.loads(payload))
            out.append(json.dumps(score_chunk(self.reranker, task, self.options, self.memo)))
        return {"index": list(batch["index"]), "scores": out}


class RayDataEngine:
    """Scores chunks on Ray Data with ``concurrency`` actors of ``actor_cpus`` CPUs (and ``actor_gpus`` GPUs) each.

    ``load_options`` are :meth:`Reranker.from_pretrained`'s arguments; every actor loads the model
    with them and checks that its fingerprint is the driver's.
    """

    def __init__(self, load_options: dict[str, Any], *, concurrency: int = 1, actor_cpus: float = 1.0,
                 actor_gpus: float = 0.0, address: str | None = None, progress: bool = False) -> None:
        from rerankd._optional import require

        require("ray")  # a missing extra fails here, before any data is read
        if concurrency < 1:
            raise InputError(f"--concurrency must be at least 1, got {concurrency}")
        if actor_cpus <= 0:
            raise InputError(f"--actor-cpus must be more than 0, got {actor_cpus}")
        self.load_options = load_options
        self.concurrency = concurrency
        self.actor_cpus = actor_cpus
        self.actor_gpus = actor_gpus
        self.address = address
        self.progress = progress

    def score(self, reranker: Any, tasks: list[ChunkTask], options: ChunkOptions) -> Iterator[Run]:
        if not tasks:
            return
        from rerankd.ray.cluster import connect

        ray = connect(self.address)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.progress
        context.print_on_execution_start = self.progress
        rows = [{"index": task.index, "task": json.dumps(asdict(task))} for task in tasks]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        scored = dataset.map_batches(
            ChunkScorer, batch_size=1, concurrency=self.concurrency, num_cpus=self.actor_cpus,
            num_gpus=self.actor_gpus or None, batch_format="numpy",
            fn_constructor_kwargs={"load_options": self.load_options, "fingerprint": reranker.fingerprint(),
                                   "options": options, "threads": max(1, int(self.actor_cpus))},
        )
        for row in scored.iter_rows():
            yield json.loads(row["scores"])

