"""What a supernet is trained toward: the teacher (KD at temperature T, teacher run online on the
same augmented batch, as the paper's code) or the labels (cross-entropy, the real-data baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfnas_pl.losses import TeacherTargets, check_targets, teacher_loss


class SearchObjective(nn.Module):
    def __init__(self, teacher: nn.Module | None, temperature: float = 3.0, t_squared: bool = False,
                 kd_targets: TeacherTargets = "soft") -> None:
        super().__init__()
        check_targets(kd_targets)
        self.teacher, self.temperature, self.t_squared, self.kd_targets = teacher, temperature, t_squared, kd_targets

    def train(self, mode: bool = True) -> SearchObjective:
        """The teacher stays in eval mode whatever mode the search module is put in."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def check_data(self, datamodule) -> None:
        """Synthetic and noise data need the teacher (KD); real data needs labels (no teacher)."""
        uses_teacher = getattr(datamodule, "uses_teacher", None)
        if uses_teacher is not None and uses_teacher != (self.teacher is not None):
            need = "a teacher (model.init_args.teacher)" if uses_teacher else "teacher: null (labels, CE)"
            raise ValueError(f"data source '{datamodule.source}' needs {need}.")

    def targets(self, batch) -> torch.Tensor:
        """Teacher logits (KD) or class indices (CE) for a batch ``(x, ..., y)``."""
        if self.teacher is None:
            return batch[-1]
        with torch.no_grad():
            return self.teacher(batch[0])

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            return F.cross_entropy(logits, targets)
        return teacher_loss(logits, targets, self.temperature, self.t_squared, self.kd_targets)

    def agreement(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Top-1 against the labels, or against the teacher's argmax."""
        ref = targets if self.teacher is None else targets.argmax(1)
        return (logits.argmax(1) == ref).float().mean()
