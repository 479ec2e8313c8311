"""The training loop shared by ``rerankd train`` and ``rerankd distill``.

What it guarantees:

* **Reproducible**: seeds for python, numpy and torch; data order and negatives depend only on
  (seed, epoch) (see :mod:`rerankd.training.data`).
* **Resumable exactly**: a checkpoint holds model, loss-module (projections), optimizer, scheduler,
  every RNG state, the step and the position in the epoch; a run resumed from it produces the same
  weights and loss curve as one that was never stopped (on CPU, same thread count).
* **Best checkpoint kept**: the dev split is reranked after every epoch; whenever NDCG@10 improves,
  the model is saved to the output directory in the Hugging Face layout.
* **Curves**: ``steps.csv`` (loss, lr per step), ``evals.csv`` (dev metrics per epoch), ``curves.png``.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from rerankd._optional import require
from rerankd.errors import InputError
from rerankd.training.curves import plot_curves, write_csv
from rerankd.training.data import Group, GroupSampler, batches, ranked_ids
from rerankd.training.models import PairTexts

torch = require("torch")

PRIMARY_METRIC = "ndcg@10"
DEV_METRICS = ("ndcg@10", "mrr@10")
CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainConfig:
    """Settings of one run (written to ``training_args.json`` and the model card)."""

    epochs: int = 1
    groups_per_batch: int = 4
    lr: float = 3e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 256
    seed: int = 0
    device: str = "cpu"
    bf16: bool = True
    checkpoint_every: int = 100
    #: Stop (after checkpointing) once this many steps are done: a time box, or a simulated interruption.
    stop_after: int | None = None
    eval_batch_pairs: int = 64

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be at least 1, got {self.epochs}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise InputError(f"warmup ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_length < 16:
            raise InputError(f"max_length must be at least 16 tokens, got {self.max_length}")
        if self.checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be at least 1 step, got {self.checkpoint_every}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: str, enabled: bool) -> Any:
    """bf16 autocast where asked (master weights and optimizer stay fp32)."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled)


@dataclass
class TextLookup:
    """Query and document texts by id, and the task instruction of each query (LLM rerankers read it)."""

    queries: Mapping[str, str]
    docs: Mapping[str, str]
    instructions: Mapping[str, str] = field(default_factory=dict)

    def pairs(self, groups: Sequence[Group]) -> PairTexts:
        return self.for_pairs([(g.qid, d) for g in groups for d in g.doc_ids])

    def for_pairs(self, pairs: Sequence[tuple[str, str]]) -> PairTexts:
        return PairTexts([self.queries[q] for q, _ in pairs], [self.docs[d] for _, d in pairs],
                         [self.instructions.get(q) for q, _ in pairs])


class Objective(Protocol):
    """What a step minimises; holds any trainable parameters of its own (e.g. feature projections)."""

    def loss(self, model: Any, pairs: Any, groups: Sequence[Group], progress: float) -> Any: ...

    def modules(self) -> Sequence[Any]: ...


class DevEvaluator:
    """Reranks the first-stage top-``depth`` of each dev query and scores the run (NDCG@10, MRR@10)."""

    def __init__(
        self, qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], texts: TextLookup,
        qids: Sequence[str], depth: int,
    ) -> None:
        if depth < 1:
            raise InputError(f"dev rerank depth must be at least 1, got {depth}")
        self.qrels = {q: dict(qrels[q]) for q in qids if q in qrels}
        self.candidates = {q: ranked_ids(run, q, depth) for q in sorted(self.qrels)}
        self.texts = texts
        self.depth = depth

    def __call__(self, model: Any, batch_pairs: int, bf16: bool) -> dict[str, float]:
        from rerankd.evaluation.metrics import evaluate

        pairs = [(q, d) for q, docs in self.candidates.items() for d in docs]
        scores = model.score(self.texts.for_pairs(pairs), batch_pairs, bf16)
        run: dict[str, dict[str, float]] = {q: {} for q in self.candidates}
        for (q, d), s in zip(pairs, scores):
            run[q][d] = float(s)
        result = evaluate(self.qrels, run, metrics=DEV_METRICS)
        return {m: float(result.mean[m]) for m in DEV_METRICS}


@dataclass
class TrainResult:
    steps: int
    completed: bool
    best: dict[str, float] | None
    evals: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Runs an objective over a sampler's groups, evaluates each epoch, keeps the best model.

    Args:
        model: a :class:`rerankd.training.models.TrainableModel` of any family (trained in place).
        objective: computes the loss of a batch of groups.
        sampler: the groups of each epoch.
        texts: query and document texts.
        config: run settings.
        out_dir: where the best model, curves and checkpoint go.
        evaluator: dev evaluation; ``None`` keeps the last model instead of the best.
        on_save: called with the output directory after each save of the model (e.g. to write the card).
    """

    def __init__(
        self, model: Any, objective: Objective, sampler: GroupSampler, texts: TextLookup,
        config: TrainConfig, out_dir: Path, evaluator: DevEvaluator | None = None,
        on_save: Callable[[Path, "TrainResult"], None] | None = None,
    ) -> None:
        self.model = model.to(config.device)
        self.objective = objective
        self.sampler = sampler
        self.texts = texts
        self.config = config
        self.out_dir = Path(out_dir)
        self.evaluator = evaluator
        self.on_save = on_save
        self.steps_per_epoch = math.ceil(len(sampler) / config.groups_per_batch)
        self.total_steps = self.steps_per_epoch * config.epochs
        for module in objective.modules():
            module.to(config.device)
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=config.lr)
        transformers = require("transformers")
        self.scheduler = transformers.get_linear_schedule_with_warmup(
            self.optimizer, int(config.warmup_ratio * self.total_steps), self.total_steps
        )
        self.step_rows: list[dict[str, Any]] = []
        self.eval_rows: list[dict[str, Any]] = []
        self.best: dict[str, float] | None = None

    def _param_groups(self) -> list[dict[str, Any]]:
        # No weight decay on biases and LayerNorm weights (the usual BERT recipe).
        decay, no_decay = [], []
        params = list(self.model.named_parameters())
        for i, module in enumerate(self.objective.modules()):
            params += [(f"objective{i}.{n}", p) for n, p in module.named_parameters()]
        for name, p in params:
            if not p.requires_grad:
                continue
            (no_decay if p.dim() < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(p)
        return [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    # -- checkpoints --------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR / "state.pt"

    def save_checkpoint(self, step: int, epoch: int, batch_in_epoch: int) -> None:
        state = {
            "model": self.model.trainable_state(),
            "objective": [m.state_dict() for m in self.objective.modules()],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "step_rows": self.step_rows, "eval_rows": self.eval_rows, "best": self.best,
            "config": asdict(self.config),
        }
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)  # atomic: a crash mid-write leaves the previous checkpoint

    def load_checkpoint(self) -> tuple[int, int, int]:
        state = torch.load(self.checkpoint_path, map_location=self.config.device, weights_only=False)
        saved = state.get("config", {})
        for key in ("epochs", "groups_per_batch", "seed", "max_length"):
            if key in saved and saved[key] != getattr(self.config, key):
                raise InputError(
                    f"the checkpoint in {self.checkpoint_path.parent} was made with {key}={saved[key]}, this run asks for "
                    f"{getattr(self.config, key)}; resume with the same settings or use a new --out"
                )
        self.model.load_trainable_state(state["model"])
        for module, module_state in zip(self.objective.modules(), state["objective"]):
            module.load_state_dict(module_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step_rows, self.eval_rows, self.best = state["step_rows"], state["eval_rows"], state["best"]
        return int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])

    # -- the loop -----------------------------------------------------------------------------------

    def fit(self, resume: bool = False, progress: bool = True) -> TrainResult:
        """Train for the configured epochs (or until ``stop_after`` steps), resuming if asked and possible."""
        tqdm = require("tqdm").tqdm
        self.out_dir.mkdir(parents=True, exist_ok=True)
        step, start_epoch, start_batch = 0, 0, 0
        if resume and self.checkpoint_path.exists():
            step, start_epoch, start_batch = self.load_checkpoint()
        else:
            seed_everything(self.config.seed)
        cfg = self.config
        bar = tqdm(total=self.total_steps, initial=step, desc="training", unit="step", disable=not progress, dynamic_ncols=True)
        self.model.train()
        for epoch in range(start_epoch, cfg.epochs):
            epoch_batches = batches(self.sampler.epoch(epoch), cfg.groups_per_batch)
            first = start_batch if epoch == start_epoch else 0
            for index in range(first, len(epoch_batches)):
                loss = self._step(epoch_batches[index], step)
                step += 1
                self.step_rows.append({"step": step, "epoch": epoch + (index + 1) / len(epoch_batches),
                                       "loss": loss, "lr": self.scheduler.get_last_lr()[0]})
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
                stopping = cfg.stop_after is not None and step >= cfg.stop_after
                if step % cfg.checkpoint_every == 0 or stopping:
                    self.save_checkpoint(step, epoch, index + 1)
                if stopping and step < self.total_steps:
                    bar.close()
                    self.write_curves()
                    return TrainResult(step, False, self.best, list(self.eval_rows))
            self._end_epoch(epoch, step)
            self.save_checkpoint(step, epoch + 1, 0)
        bar.close()
        if self.evaluator is None:
            self.save_model()
        self.write_curves()
        result = TrainResult(step, True, self.best, list(self.eval_rows))
        if self.on_save:
            self.on_save(self.out_dir, result)
        return result

    def _step(self, groups: Sequence[Group], step: int) -> float:
        progress = step / max(1, self.total_steps - 1)
        with autocast(self.config.device, self.config.bf16):
            loss = self.objective.loss(self.model, self.texts.pairs(groups), groups, progress)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def _end_epoch(self, epoch: int, step: int) -> None:
        if self.evaluator is None:
            return
        metrics = self.evaluator(self.model, self.config.eval_batch_pairs, self.config.bf16)
        self.eval_rows.append({"epoch": epoch + 1, "step": step, **metrics})
        if self.best is None or metrics[PRIMARY_METRIC] > self.best[PRIMARY_METRIC]:
            self.best = {"epoch": epoch + 1, "step": step, **metrics}
            self.save_model()
            if self.on_save:
                self.on_save(self.out_dir, TrainResult(step, False, self.best, list(self.eval_rows)))
        self.write_curves()

    def save_model(self) -> None:
        """The model in the Hugging Face layout (or a LoRA adapter), loadable by rerankd."""
        self.model.save(self.out_dir, self.config.max_length)

    def write_curves(self) -> None:
        write_csv(self.out_dir / "steps.csv", self.step_rows)
        if self.eval_rows:
            write_csv(self.out_dir / "evals.csv", self.eval_rows)
        plot_curves(self.out_dir / "curves.png", self.step_rows, self.eval_rows, title=self.out_dir.name)
        with open(self.out_dir / "training_args.json", "w", encoding="utf-8") as fh:
            json.dump(asdict(self.config), fh, indent=2)


class SupervisedObjective:
    """Labels from qrels: the positive is column 0 of each group (listwise or binary loss)."""

    def __init__(self, loss: Any) -> None:
        self.loss_fn = loss

    def modules(self) -> Sequence[Any]:
        return []

    def loss(self, model: Any, pairs: Any, groups: Sequence[Group], progress: float) -> Any:
        scores = model.forward(model.encode(pairs)).scores.reshape(len(groups), -1)
        return self.loss_fn(scores.float())
