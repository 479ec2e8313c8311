"""Loss modules for cross-encoder training and distillation.

Each loss is a small ``torch.nn.Module`` whose ``forward`` takes the student's scores of a batch of
*groups* laid out as a ``(groups, docs_per_group)`` tensor, and whatever targets that loss needs.
Preconditions (temperature > 0, known kinds, weights in range) are checked in ``__init__`` so a bad
setting fails before the first step, not after an hour of training.

Layout convention: in supervised training column 0 of every group is the positive, the other
columns are negatives; in distillation column 0 is the anchor (the labelled positive) and the
teacher's scores give the targets for every column.

Example:
    >>> import torch
    >>> loss = ListwiseSoftmaxLoss()
    >>> float(loss(torch.tensor([[5.0, 0.0, 0.0]]))) < 0.02
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from rerankd._optional import require
from rerankd.errors import InputError

torch = require("torch")
nn = torch.nn
F = torch.nn.functional


def _check_scores(scores: "torch.Tensor", min_docs: int = 2) -> None:
    if scores.dim() != 2 or scores.shape[1] < min_docs:
        raise InputError(
            f"scores must be (groups, docs_per_group) with at least {min_docs} docs per group, got {tuple(scores.shape)}"
        )


class BinaryCrossEntropyLoss(nn.Module):
    """Pointwise BCE on logits: column 0 is relevant (label 1), the rest are not (label 0).

    ``pos_weight`` rebalances the 1 : n ratio of a group (default: n, so both classes weigh the same).
    """

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        if pos_weight is not None and pos_weight <= 0:
            raise InputError(f"pos_weight must be positive, got {pos_weight}")
        self.pos_weight = pos_weight

    def forward(self, scores: "torch.Tensor") -> "torch.Tensor":
        _check_scores(scores)
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        weight = torch.tensor(self.pos_weight or (scores.shape[1] - 1), dtype=scores.dtype, device=scores.device)
        return F.binary_cross_entropy_with_logits(scores, labels, pos_weight=weight)


class ListwiseSoftmaxLoss(nn.Module):
    """Softmax cross-entropy over each group: the positive (column 0) should win the list."""

    def forward(self, scores: "torch.Tensor") -> "torch.Tensor":
        _check_scores(scores)
        target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        return F.cross_entropy(scores.float(), target)


class MarginMSELoss(nn.Module):
    """MarginMSE (Hofstätter et al., 2020): match the teacher's score *margins*, not its scale.

    For each group, the margins between the anchor (column 0) and every other column of the student
    are regressed onto the same margins of the teacher, so a student free to use any score offset
    still has to order and space the documents like the teacher.
    """

    def forward(self, scores: "torch.Tensor", teacher: "torch.Tensor") -> "torch.Tensor":
        _check_scores(scores)
        if teacher.shape != scores.shape:
            raise InputError(f"teacher scores {tuple(teacher.shape)} do not match student scores {tuple(scores.shape)}")
        student_margin = scores[:, :1] - scores[:, 1:]
        teacher_margin = teacher[:, :1] - teacher[:, 1:]
        return F.mse_loss(student_margin.float(), teacher_margin.float())


class ListwiseKLLoss(nn.Module):
    """KL(teacher ‖ student) between the softmax of each group's scores at a temperature.

    Multiplied by T² so that the gradient scale does not shrink as T grows (Hinton et al., 2015).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise InputError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, scores: "torch.Tensor", teacher: "torch.Tensor") -> "torch.Tensor":
        _check_scores(scores)
        if teacher.shape != scores.shape:
            raise InputError(f"teacher scores {tuple(teacher.shape)} do not match student scores {tuple(scores.shape)}")
        t = self.temperature
        log_p_student = F.log_softmax(scores.float() / t, dim=-1)
        log_p_teacher = F.log_softmax(teacher.float() / t, dim=-1)
        return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * t * t


FEATURE_KINDS = ("mse", "cosine")


class FeatureLoss(nn.Module):
    """Feature distillation: each chosen student layer's vector per pair (at the scoring position or
    mean-pooled), through a learned linear projection, should match the paired teacher layer's.

    Vectors per pair, not per token, so teacher and student may have other tokenizers, prompts,
    families and widths. A projection whose widths agree starts as the identity. The projections
    are trainable parameters of the loss (the optimizer includes them); the student does not keep them.

    Args:
        student_dim: hidden size of the student.
        teacher_dim: hidden size of the teacher.
        layer_pairs: (student hidden-state index, teacher hidden-state index) pairs, in the
            ``output_hidden_states`` numbering (0 = embeddings, i = output of layer i).
        kind: ``mse`` or ``cosine`` (1 − cosine similarity, scale-free).
    """

    def __init__(self, student_dim: int, teacher_dim: int, layer_pairs: Sequence[tuple[int, int]], kind: str = "mse") -> None:
        super().__init__()
        if kind not in FEATURE_KINDS:
            raise InputError(f"feature loss kind must be one of {FEATURE_KINDS}, got {kind!r}")
        if not layer_pairs:
            raise InputError("feature distillation needs at least one (student layer, teacher layer) pair")
        if student_dim < 1 or teacher_dim < 1:
            raise InputError(f"hidden sizes must be positive, got student {student_dim}, teacher {teacher_dim}")
        self.kind = kind
        self.layer_pairs = [(int(s), int(t)) for s, t in layer_pairs]
        self.projections = nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in self.layer_pairs)
        if student_dim == teacher_dim:
            with torch.no_grad():
                for projection in self.projections:
                    projection.weight.copy_(torch.eye(student_dim))
                    projection.bias.zero_()

    @property
    def student_layers(self) -> list[int]:
        return [s for s, _ in self.layer_pairs]

    @property
    def teacher_layers(self) -> list[int]:
        return [t for _, t in self.layer_pairs]

    def forward(self, student: Sequence["torch.Tensor"], teacher: Sequence["torch.Tensor"]) -> "torch.Tensor":
        """``student[i]``, ``teacher[i]``: (pairs, width) vectors of the i-th layer pair."""
        if len(student) != len(self.layer_pairs) or len(teacher) != len(self.layer_pairs):
            raise InputError(f"expected {len(self.layer_pairs)} feature tensors per side, got {len(student)} and {len(teacher)}")
        total = torch.zeros((), device=student[0].device)
        for projection, s, t in zip(self.projections, student, teacher):
            projected, target = projection(s.float()), t.float()
            if self.kind == "mse":
                total = total + (projected - target).pow(2).mean()
            else:
                total = total + (1.0 - F.cosine_similarity(projected, target, dim=-1)).mean()
        return total / len(self.layer_pairs)


SCHEDULE_SHAPES = ("linear", "cosine")


@dataclass(frozen=True)
class WeightSchedule:
    """A weight that moves from ``start`` to ``end`` over training, linearly or along a half cosine.

    Example:
        >>> WeightSchedule(0.3, 0.7).at(0.5)
        0.5
        >>> round(WeightSchedule(0.3, 0.7, "cosine").at(0.25), 4)
        0.3586
    """

    start: float
    end: float
    shape: str = "linear"

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            if not 0.0 <= value <= 1.0:
                raise InputError(f"schedule {name} weight must be in [0, 1], got {value}")
        if self.shape not in SCHEDULE_SHAPES:
            raise InputError(f"schedule shape must be one of {SCHEDULE_SHAPES}, got {self.shape!r}")

    def at(self, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        if self.shape == "cosine":
            progress = (1.0 - math.cos(math.pi * progress)) / 2.0
        return self.start + (self.end - self.start) * progress


def parse_weight_schedule(text: str, shape: str = "linear") -> WeightSchedule:
    """``0.3→0.7``, ``0.3:0.7``, ``0.3->0.7`` or one constant ``0.5``.

    Example:
        >>> parse_weight_schedule("0.3:0.7", "cosine")
        WeightSchedule(start=0.3, end=0.7, shape='cosine')
    """
    parts = [p.strip() for p in text.replace("->", "→").replace(":", "→").split("→")]
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise InputError(f"feature weight {text!r} is not START→END (or START:END) with numbers in [0, 1]") from exc
    if len(values) not in (1, 2):
        raise InputError(f"feature weight {text!r} is not START→END (or START:END)")
    return WeightSchedule(values[0], values[-1], shape)


class HybridLoss(nn.Module):
    """(1 − w) · response + w · feature, with the feature weight w following a schedule over training.

    The default schedule starts response-heavy (0.7 / 0.3) and moves toward features (0.3 / 0.7):
    the scores anchor the ranking early, the hidden states shape the representation later.
    """

    def __init__(self, response: nn.Module, feature: FeatureLoss, schedule: WeightSchedule = WeightSchedule(0.3, 0.7)) -> None:
        super().__init__()
        if not isinstance(feature, FeatureLoss):
            raise InputError("the hybrid loss needs a FeatureLoss as its feature part")
        self.response = response
        self.feature = feature
        self.schedule = schedule

    def forward(
        self,
        scores: "torch.Tensor",
        teacher: "torch.Tensor",
        student_features: Sequence["torch.Tensor"],
        teacher_features: Sequence["torch.Tensor"],
        progress: float,
    ) -> "torch.Tensor":
        w = self.schedule.at(progress)
        return (1.0 - w) * self.response(scores, teacher) + w * self.feature(student_features, teacher_features)


SUPERVISED_LOSSES = ("listwise", "binary")
RESPONSE_LOSSES = ("margin-mse", "kl")


def supervised_loss(name: str) -> nn.Module:
    """The loss for ``rerankd train --loss NAME``."""
    if name == "listwise":
        return ListwiseSoftmaxLoss()
    if name == "binary":
        return BinaryCrossEntropyLoss()
    raise InputError(f"unknown training loss {name!r}; use one of {SUPERVISED_LOSSES}")


def response_loss(name: str, temperature: float = 1.0) -> nn.Module:
    """The response (score) part of ``rerankd distill --loss``."""
    if name == "margin-mse":
        return MarginMSELoss()
    if name == "kl":
        return ListwiseKLLoss(temperature)
    raise InputError(f"unknown response loss {name!r}; use one of {RESPONSE_LOSSES}")
