"""Losses shared by several stages (supernet search, retraining, the distillation check).

The synthesis losses (BN statistics, priors) live with the synthesis module in
:mod:`dfnas_pl.inversion.losses`: nothing else uses them.
"""

from __future__ import annotations

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
