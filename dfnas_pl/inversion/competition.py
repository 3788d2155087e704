"""The student of Adaptive DeepInversion's competition term, made once per calibration round.

Adaptive DeepInversion trains a student by distillation on the images made so far and adds a term that
draws new images toward where that student still disagrees with the teacher (more diverse, harder images).
Here the student of round r is trained at the round's start on the saved images of rounds < r, with a seed of
its own: every process of a DDP run and every restart trains the same student from the same files, so a set
stays the same whether it was made in one go, resumed, or sharded. Round 0 has no student (no term).
"""

from __future__ import annotations

import torch
from torch import nn

from dfnas_pl.inversion.views import jitter_flip
from dfnas_pl.losses import kd_loss
from dfnas_pl.teachers.loading import build_arch


def train_competition_student(teacher: nn.Module, images: torch.Tensor, arch: str, in_channels: int,
                              num_classes: int, steps: int, seed: int, batch_size: int = 64,
                              lr: float = 0.05) -> nn.Module:
    """A student (``arch`` of the teachers' registry) taught by ``teacher`` on ``images`` (normalised) for
    ``steps`` SGD steps of KD at T = 3 with jitter and flips, returned frozen in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_arch(arch, in_channels, num_classes).to(images.device)
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    student.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=gen)
        view = jitter_flip(images[idx], 2, 0.5, gen)
        with torch.no_grad():
            target = teacher(view)
        loss = kd_loss(student(view), target, 3.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return student
