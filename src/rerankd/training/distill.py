"""``rerankd distill``: teacher scores on first-stage candidates, then a student trained to match them.

Losses (``--loss``):

* ``margin-mse``: the student's score margins (positive − each negative) regress onto the teacher's;
* ``kl``: listwise KL between teacher and student softmaxes at a temperature;
* ``feature``: student hidden states, through learned projections, match the teacher's (same tokenizer);
* ``hybrid``: a response loss and the feature loss, the feature weight moving along a schedule.

Example:
    >>> distill(DistillSettings(teacher="runs/ce", student="layers:0,5", out="runs/s2",
    ...                         data=DataSettings("data/scifact")))                   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from rerankd._optional import require
from rerankd.errors import InputError
from rerankd.training.data import Group
from rerankd.training.finetune import DataSettings, dev_evaluator, prepare_data, sampler_for
from rerankd.training.trainer import TrainConfig, seed_everything

DISTILL_LOSSES = ("margin-mse", "kl", "feature", "hybrid")
TEACHER_SCORES = "teacher_scores.jsonl"


@dataclass
class TeacherSettings:
    """How the teacher runs (it is loaded through rerankd, so any family and backend works)."""

    backend: str = "torch"
    device: str | None = None
    dtype: str | None = None
    max_length: int | None = None
    batch_tokens: int | None = None


@dataclass
class DistillSettings:
    teacher: str
    student: str
    out: str
    data: DataSettings
    loss: str = "hybrid"
    response: str = "margin-mse"
    temperature: float = 1.0
    feature_kind: str = "mse"
    feature_layers: list[int] | None = None
    hybrid_start: float = 0.3
    hybrid_end: float = 0.7
    negatives: int = 7
    teacher_run: TeacherSettings = field(default_factory=TeacherSettings)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.loss not in DISTILL_LOSSES:
            raise InputError(f"unknown distillation loss {self.loss!r}; use one of {DISTILL_LOSSES}")


class DistillObjective:
    """Student loss against teacher scores (looked up by id) and, for feature losses, teacher hidden states."""

    def __init__(
        self, kind: str, teacher_scores: Mapping[str, Mapping[str, float]], response: Any = None,
        feature: Any = None, hybrid: Any = None, teacher_model: Any = None,
    ) -> None:
        self.kind = kind
        self.teacher_scores = teacher_scores
        self.response = response
        self.feature = feature
        self.hybrid = hybrid
        self.teacher_model = teacher_model

    def modules(self) -> Sequence[Any]:
        return [self.feature] if self.feature is not None else []

    def targets(self, groups: Sequence[Group]) -> Any:
        torch = require("torch")
        try:
            rows = [[self.teacher_scores[g.qid][d] for d in g.doc_ids] for g in groups]
        except KeyError as exc:
            raise InputError(f"no teacher score for {exc}; the teacher-score file does not cover the training candidates") from exc
        return torch.tensor(rows, dtype=torch.float32)

    def loss(self, model: Any, inputs: dict[str, Any], groups: Sequence[Group], progress: float) -> Any:
        torch = require("torch")
        needs_features = self.kind in ("feature", "hybrid")
        out = model(**inputs, output_hidden_states=needs_features)
        scores = out.logits.reshape(len(groups), -1).float()
        teacher = self.targets(groups).to(scores.device)
        if self.kind in ("margin-mse", "kl"):
            return self.response(scores, teacher)
        with torch.no_grad():
            teacher_hidden = self.teacher_model(**inputs, output_hidden_states=True).hidden_states
        mask = inputs["attention_mask"]
        if self.kind == "feature":
            return self.feature(out.hidden_states, teacher_hidden, mask)
        return self.hybrid(scores, teacher, out.hidden_states, teacher_hidden, mask, progress)


def teacher_candidates(sampler: Any) -> dict[str, list[str]]:
    """Every document a training group can contain: the positives and the hard-negative pool."""
    return {q.qid: list(dict.fromkeys([*q.positives, *q.pool])) for q in sampler.queries}


def distill(settings: DistillSettings, *, resume: bool = False, progress: bool = True) -> Any:
    """Score candidates with the teacher (resumable), then train the student; returns a TrainResult."""
    from rerankd.engine import Reranker
    from rerankd.training.card import ModelCard
    from rerankd.training.losses import FeatureLoss, HybridLoss, LinearSchedule, response_loss
    from rerankd.training.students import build_student, count_parameters, feature_layer_pairs, load_cross_encoder, same_tokenizer
    from rerankd.training.teacher import score_with_teacher
    from rerankd.training.trainer import Trainer

    out = Path(settings.out)
    prepared = prepare_data(settings.data, settings.train.seed)
    sampler = sampler_for(prepared, settings.data, settings.negatives, settings.train.seed)
    short = [q.qid for q in sampler.queries if len(q.pool) < settings.negatives]
    if short:
        # Every document of a group needs a teacher score, so a group cannot be topped up at random.
        sampler.queries = [q for q in sampler.queries if len(q.pool) >= settings.negatives]
        if not sampler.queries:
            raise InputError(f"no training query has {settings.negatives} candidates; lower --negatives or raise --pool-depth")

    t = settings.teacher_run
    teacher = Reranker.from_pretrained(settings.teacher, backend=t.backend, device=t.device, dtype=t.dtype,
                                       max_length=t.max_length, batch_tokens=t.batch_tokens)
    scores = score_with_teacher(teacher, prepared.texts, teacher_candidates(sampler), out / TEACHER_SCORES, progress=progress)
    del teacher

    # Seeded before the model is built: a new classification head (or projection) is drawn from the RNG.
    seed_everything(settings.train.seed)
    student = build_student(settings.student, teacher_dir=settings.teacher)
    response = response_loss(settings.response if settings.loss in ("feature", "hybrid") else settings.loss, settings.temperature)
    feature = hybrid = teacher_model = None
    if settings.loss in ("feature", "hybrid"):
        teacher_model, teacher_tok = load_cross_encoder(settings.teacher)
        if not same_tokenizer(student.tokenizer, teacher_tok):
            raise InputError("feature distillation compares token positions: the student must use the teacher's tokenizer; "
                             "use --loss margin-mse or kl for a student with another tokenizer")
        teacher_model.eval().requires_grad_(False).to(settings.train.device)
        pairs = feature_layer_pairs(student, int(teacher_model.config.num_hidden_layers), settings.feature_layers)
        feature = FeatureLoss(int(student.model.config.hidden_size), int(teacher_model.config.hidden_size), pairs, settings.feature_kind)
        if settings.loss == "hybrid":
            hybrid = HybridLoss(response, feature, LinearSchedule(settings.hybrid_start, settings.hybrid_end))
    objective = DistillObjective(settings.loss, scores, response=response, feature=feature, hybrid=hybrid, teacher_model=teacher_model)

    def write_card(out_dir: Path, result: Any) -> None:
        ModelCard(
            title=f"Student of {settings.teacher}",
            base_model=settings.teacher if settings.student.startswith("layers:") else settings.student,
            how=(f"Distilled with `rerankd distill` from teacher `{settings.teacher}`: student `{settings.student}` "
                 f"({count_parameters(student.model):,} parameters), loss `{settings.loss}`"
                 + (f" (response `{settings.response}`, feature weight {settings.hybrid_start} → {settings.hybrid_end})"
                    if settings.loss == "hybrid" else "") + f", {settings.negatives} negatives per positive."),
            data={**prepared.describe(settings.data), "teacher scores": f"{TEACHER_SCORES} ({len(scores)} queries)"},
            settings={k: v for k, v in asdict(settings).items() if k not in ("data", "train")} | asdict(settings.train),
            best=result.best, evals=result.evals,
        ).write(out_dir)

    trainer = Trainer(student.model, student.tokenizer, objective, sampler, prepared.texts, settings.train, out,
                      dev_evaluator(prepared, settings.data), on_save=write_card)
    return trainer.fit(resume=resume, progress=progress)
