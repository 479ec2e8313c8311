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
    """Hidden-state distillation: each chosen student layer, through a learned linear projection,
    should match the paired teacher layer, token by token (padding masked out).

    The projections are trainable parameters of the loss, so the optimizer must include
    ``loss.parameters()``; they are dropped after training (the student does not need them).

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

    def forward(
        self,
        student_hidden: Sequence["torch.Tensor"],
        teacher_hidden: Sequence["torch.Tensor"],
        attention_mask: "torch.Tensor",
    ) -> "torch.Tensor":
        mask = attention_mask.unsqueeze(-1).float()
        tokens = mask.sum().clamp(min=1.0)
        total = torch.zeros((), device=attention_mask.device)
        for projection, (s, t) in zip(self.projections, self.layer_pairs):
            if s >= len(student_hidden) or t >= len(teacher_hidden):
                raise InputError(
                    f"layer pair ({s}, {t}) is out of range: the student has {len(student_hidden) - 1} layers, "
                    f"the teacher {len(teacher_hidden) - 1}"
                )
            projected = projection(student_hidden[s].float())
            target = teacher_hidden[t].float()
            if self.kind == "mse":
                per_token = (projected - target).pow(2).mean(dim=-1, keepdim=True)
            else:
                per_token = 1.0 - F.cosine_similarity(projected, target, dim=-1).unsqueeze(-1)
            total = total + (per_token * mask).sum() / tokens
        return total / len(self.layer_pairs)


@dataclass(frozen=True)
class LinearSchedule:
    """A weight that moves linearly from ``start`` to ``end`` over training (then stays at ``end``).

    Example:
        >>> LinearSchedule(0.3, 0.7).at(0.5)
        0.5
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            if not 0.0 <= value <= 1.0:
                raise InputError(f"schedule {name} weight must be in [0, 1], got {value}")

    def at(self, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        return self.start + (self.end - self.start) * progress


class HybridLoss(nn.Module):
    """(1 − w) · response + w · feature, with the feature weight w following a schedule over training.

    The default schedule starts response-heavy (0.7 / 0.3) and moves toward features (0.3 / 0.7):
    the scores anchor the ranking early, the hidden states shape the representation later.
    """

    def __init__(self, response: nn.Module, feature: FeatureLoss, schedule: LinearSchedule = LinearSchedule(0.3, 0.7)) -> None:
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
        student_hidden: Sequence["torch.Tensor"],
        teacher_hidden: Sequence["torch.Tensor"],
        attention_mask: "torch.Tensor",
        progress: float,
    ) -> "torch.Tensor":
        w = self.schedule.at(progress)
        return (1.0 - w) * self.response(scores, teacher) + w * self.feature(student_hidden, teacher_hidden, attention_mask)


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
