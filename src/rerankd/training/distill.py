"""``rerankd distill``: teacher scores on first-stage candidates, then a student trained to match them.

Losses (``--loss``):

* ``margin-mse``: the student's score margins (positive − each negative) regress onto the teacher's;
* ``kl``: listwise KL between teacher and student softmaxes at a temperature;
* ``feature``: the student's hidden states of chosen layers (one vector per pair, at the scoring position
  or mean-pooled), through learned projections, match the teacher's — any families, tokenizers, widths;
* ``hybrid``: a response loss and the feature loss, the feature weight moving along a linear or cosine
  schedule (``feature_weight="0.3→0.7"``).

Teachers of every family score through the rerankd engine (resumable, keyed by the fingerprint);
students are layers kept from the teacher, a smaller model of the same family, or another family
(:mod:`rerankd.training.students`).

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
    #: Where a layer's hidden states become one vector per pair: the scoring position or a masked mean.
    feature_pooling: str = "position"
    #: The feature weight of the hybrid loss: ``START→END`` (or ``START:END``, or one constant).
    feature_weight: str = "0.3→0.7"
    feature_schedule: str = "linear"
    #: The family the student trains as (see :func:`rerankd.training.models.load_trainable`).
    student_family: str = "auto"
    #: LoRA adapters on the student instead of training all of it (:mod:`rerankd.training.lora`).
    lora: Any = None
    negatives: int = 7
    teacher_run: TeacherSettings = field(default_factory=TeacherSettings)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        from rerankd.training.losses import parse_weight_schedule
        from rerankd.training.models import FEATURE_POOLINGS

        if self.loss not in DISTILL_LOSSES:
            raise InputError(f"unknown distillation loss {self.loss!r}; use one of {DISTILL_LOSSES}")
        if self.feature_pooling not in FEATURE_POOLINGS:
            raise InputError(f"unknown feature pooling {self.feature_pooling!r}; use one of {FEATURE_POOLINGS}")
        parse_weight_schedule(self.feature_weight, self.feature_schedule)  # fail before any scoring


class DistillObjective:
    """Student loss against teacher scores (looked up by id) and, for feature losses, the teacher's
    hidden states computed on the fly (the teacher reads each pair with its own tokenizer and prompt)."""

    def __init__(
        self, kind: str, teacher_scores: Mapping[str, Mapping[str, float]], response: Any = None,
        feature: Any = None, hybrid: Any = None, teacher_model: Any = None, pooling: str = "position",
    ) -> None:
        self.kind = kind
        self.teacher_scores = teacher_scores
        self.response = response
        self.feature = feature
        self.hybrid = hybrid
        self.teacher_model = teacher_model
        self.pooling = pooling

    def modules(self) -> Sequence[Any]:
        return [self.feature] if self.feature is not None else []

    def targets(self, groups: Sequence[Group]) -> Any:
        torch = require("torch")
        try:
            rows = [[self.teacher_scores[g.qid][d] for d in g.doc_ids] for g in groups]
        except KeyError as exc:
            raise InputError(f"no teacher score for {exc}; the teacher-score file does not cover the training candidates") from exc
        return torch.tensor(rows, dtype=torch.float32)

    def loss(self, model: Any, pairs: Any, groups: Sequence[Group], progress: float) -> Any:
        torch = require("torch")
        features = self.kind in ("feature", "hybrid")
        out = model.forward(model.encode(pairs), layers=self.feature.student_layers if features else (), pooling=self.pooling)
        scores = out.scores.reshape(len(groups), -1).float()
        teacher = self.targets(groups).to(scores.device)
        if not features:
            return self.response(scores, teacher)
        with torch.no_grad():
            teacher_features = self.teacher_model.forward(self.teacher_model.encode(pairs), layers=self.feature.teacher_layers,
                                                          pooling=self.pooling).features
        if self.kind == "feature":
            return self.feature(out.features, teacher_features)
        return self.hybrid(scores, teacher, out.features, teacher_features, progress)


def teacher_candidates(sampler: Any) -> dict[str, list[str]]:
    """Every document a training group can contain: the positives and the hard-negative pool."""
    return {q.qid: list(dict.fromkeys([*q.positives, *q.pool])) for q in sampler.queries}


def distill(settings: DistillSettings, *, resume: bool = False, progress: bool = True) -> Any:
    """Score candidates with the teacher (resumable), then train the student; returns a TrainResult."""
    from rerankd.engine import Reranker
    from rerankd.training.card import ModelCard
    from rerankd.training.losses import FeatureLoss, HybridLoss, parse_weight_schedule, response_loss
    from rerankd.training.lora import apply_lora
    from rerankd.training.models import load_trainable
    from rerankd.training.students import build_student, feature_layer_pairs
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
    teacher_family = teacher.family.kind
    scores = score_with_teacher(teacher, prepared.texts, teacher_candidates(sampler), out / TEACHER_SCORES,
                                instruction=prepared.instructions, progress=progress)
    del teacher

    # Seeded before the model is built: a new classification head (or projection) is drawn from the RNG.
    seed_everything(settings.train.seed)
    student = build_student(settings.student, teacher=settings.teacher, family=settings.student_family,
                            max_length=settings.train.max_length)
    if settings.lora is not None:
        apply_lora(student, settings.lora)
    response = response_loss(settings.response if settings.loss in ("feature", "hybrid") else settings.loss, settings.temperature)
    feature = hybrid = teacher_model = None
    if settings.loss in ("feature", "hybrid"):
        # Both in torch: the teacher's hidden states are computed on the fly, only its scores are cached.
        teacher_model = load_trainable(settings.teacher, teacher=True, max_length=t.max_length)  # as it scored
        teacher_model.freeze().to(settings.train.device)
        pairs = feature_layer_pairs(student.num_layers, student.kept_layers, teacher_model.num_layers, settings.feature_layers)
        feature = FeatureLoss(student.width, teacher_model.width, pairs, settings.feature_kind)
        if settings.loss == "hybrid":
            hybrid = HybridLoss(response, feature, parse_weight_schedule(settings.feature_weight, settings.feature_schedule))
    objective = DistillObjective(settings.loss, scores, response=response, feature=feature, hybrid=hybrid,
                                 teacher_model=teacher_model, pooling=settings.feature_pooling)
    kept = (f"kept teacher layers {student.kept_layers} of {settings.teacher}" if student.kept_layers is not None
            else f"started from `{settings.student}`")
    strategy = {"margin-mse": "response (MarginMSE)", "kl": f"response (listwise KL, T={settings.temperature})",
                "feature": f"feature ({settings.feature_kind} on layer pairs {feature.layer_pairs if feature else ''}, "
                           f"{settings.feature_pooling} vectors)",
                "hybrid": f"hybrid: response `{settings.response}` + feature ({settings.feature_kind} on layer pairs "
                          f"{feature.layer_pairs if feature else ''}, {settings.feature_pooling} vectors), feature weight "
                          f"{settings.feature_weight} ({settings.feature_schedule} over steps)"}[settings.loss]

    def write_card(out_dir: Path, result: Any) -> None:
        ModelCard(
            title=f"Student of {settings.teacher}",
            base_model=settings.teacher if student.kept_layers is not None else settings.student,
            how=(f"Distilled with `rerankd distill` from the {teacher_family} teacher `{settings.teacher}` into a "
                 f"{student.family.kind} student ({student.parameter_count():,} parameters; {kept}). Strategy: {strategy}; "
                 f"{settings.negatives} negatives per positive"
                 + (f"; LoRA r={settings.lora.r}, alpha={settings.lora.alpha} on {settings.lora.targets}" if settings.lora else "")
                 + "."),
            data={**prepared.describe(settings.data), "teacher scores": f"{TEACHER_SCORES} ({len(scores)} queries)"},
            settings={k: v for k, v in asdict(settings).items() if k not in ("data", "train")} | asdict(settings.train),
            best=result.best, evals=result.evals, family=student.family.kind,
            adapter_base=str(student.source) if settings.lora is not None and not settings.lora.merge else None,
        ).write(out_dir)

    trainer = Trainer(student, objective, sampler, prepared.texts, settings.train, out,
                      dev_evaluator(prepared, settings.data), on_save=write_card)
    return trainer.fit(resume=resume, progress=progress)
