"""Losses shared by several stages (supernet search, retraining, the distillation check).

The synthesis losses (BN statistics, priors) live with the synthesis module in
:mod:`dfnas_pl.inversion.losses`: nothing else uses them.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 3.0,
            t_squared: bool = False) -> torch.Tensor:
    """-sum_k softmax(t/T)_k log softmax(s/T)_k, batch mean (the official ``DistributionLoss``).

    ``t_squared`` multiplies it by T^2 (Hinton et al.): the gradient w.r.t. the logits shrinks as 1/T^2,
    and the official code omits the factor, which weakens KD against any other
    term it is summed with (ProxylessNAS's FLOPs cost)."""
    p = F.softmax(teacher_logits / temperature, dim=1)
    loss = -(p * F.log_softmax(student_logits / temperature, dim=1)).sum(1).mean()
    return loss * temperature**2 if t_squared else loss


TeacherTargets = Literal["soft", "hard"]


def check_targets(targets: str, name: str = "model.init_args.kd_targets") -> None:
    """A bad choice fails when the module is built, not at its first training step."""
    if targets not in get_args(TeacherTargets):
        raise ValueError(f"{name} must be 'soft' or 'hard', got {targets!r}.")


def teacher_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 3.0,
                 t_squared: bool = False, targets: TeacherTargets = "soft") -> torch.Tensor:
    """The loss of a network taught by the teacher: ``soft``, :func:`kd_loss` (the teacher's whole
    distribution at temperature T); ``hard``, cross-entropy to the teacher's top-1 class, as if the
    teacher had labelled the images and nothing else were kept (T and ``t_squared`` unused). Hard targets
    are the ablation of the soft ones: they drop what the teacher says about the other classes."""
    if targets == "hard":
        return F.cross_entropy(student_logits, teacher_logits.argmax(1))
    check_targets(targets, "targets")
    return kd_loss(student_logits, teacher_logits, temperature, t_squared)
