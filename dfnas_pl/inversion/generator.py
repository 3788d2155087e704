"""Amortised synthesis: a small conditional generator, trained against the inversion losses, whose
initialisation is meta-learned across batches (as Fast-Datafree does), so each new batch needs a few
generator steps instead of hundreds of per-pixel steps.

Per batch: copy the meta generator, optimise the copy and the batch's latent codes for ``iterations`` Adam
steps on the same losses as per-image inversion, keep the copy's images, then move the meta generator toward
the copy (a Reptile step). The meta generator is the only state carried from batch to batch; each process
keeps its own and saves it after every batch (``generator/rank_RR.pt`` in the set's folder), so a killed run
resumes from where its meta-learning stood.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dfnas_pl.utils.io import atomic_torch_save


class ConditionalGenerator(nn.Module):
    """(z, class distribution) -> image in [0, 1]. The condition is a class *distribution*, embedded
    linearly and added to z, so soft targets of calibrated rounds condition it as well as one-hot ones.
    Two nearest-neighbour upsamplings from a quarter-size map, then an exact resize for sizes that 4 does
    not divide (28 -> 7 -> 28; 30 -> 7 -> 28 -> 30)."""

    def __init__(self, num_classes: int, channels: int, image_size: int, z_dim: int = 64, width: int = 64) -> None:
        super().__init__()
        self.image_size, self.z_dim, self.width = image_size, z_dim, width
        self.base = max(1, image_size // 4)
        self.embed = nn.Linear(num_classes, z_dim, bias=False)
        self.fc = nn.Linear(z_dim, 2 * width * self.base * self.base)
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.fc(z + self.embed(targets)).view(len(z), 2 * self.width, self.base, self.base)
        x = self.body(h)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


class MetaGenerator:
    """The meta generator of one process, its Reptile step and its file."""

    def __init__(self, generator: ConditionalGenerator, meta_lr: float, path: Path) -> None:
        self.generator, self.meta_lr, self.path = generator, meta_lr, path
        if path.exists():  # a resumed run continues the meta-learning where it stood
            self.generator.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def fast_copy(self) -> ConditionalGenerator:
        fast = copy.deepcopy(self.generator)
        fast.train()
        return fast

    @torch.no_grad()
    def reptile_step(self, fast: ConditionalGenerator) -> None:
        """meta <- meta + meta_lr * (fast - meta), buffers (BN running statistics) taken from the copy."""
        for meta_p, fast_p in zip(self.generator.parameters(), fast.parameters()):
            meta_p.add_(fast_p.detach() - meta_p, alpha=self.meta_lr)
        for meta_b, fast_b in zip(self.generator.buffers(), fast.buffers()):
            meta_b.copy_(fast_b)

    def save(self) -> None:
        atomic_torch_save(self.path, {k: v.cpu() for k, v in self.generator.state_dict().items()})
