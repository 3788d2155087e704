"""What the teacher sees of the images at each inversion step.

* ``jitter_flip`` - DeepInversion's augmentation: a random circular shift of the whole batch by up
  to ``jitter`` pixels and a random horizontal flip. Every pixel gets gradient at every step.
* ``random_regions`` - the **regional update**: each image gets its own random box (area fraction
  in ``scale``, aspect ratio in ``ratio``), which is resampled to the full input resolution and
  optionally flipped. Only pixels inside the box (plus the bilinear border) get gradient, so each
  step refines one region of each image, a different one every step; images become collages of
  separately optimised regions, which is what makes them more diverse than whole-image updates.
  (The official code's only comparable mechanism is a random 224 crop of a 256 canvas, PAPER.md §3.9;
  we make the region's size random too, like a random-resized crop.)
* ``warmup_cosine`` - the learning-rate policy of the official code: linear warm-up, then cosine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jitter_flip(x: torch.Tensor, jitter: int, flip_prob: float, generator: torch.Generator) -> torch.Tensor:
    if jitter > 0:
        dx, dy = (torch.randint(-jitter, jitter + 1, (2,), generator=generator)).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flip_prob > 0 and torch.rand((), generator=generator).item() < flip_prob:
        x = torch.flip(x, dims=(3,))
    return x


def random_region_boxes(n: int, scale: tuple[float, float], ratio: tuple[float, float],
                        generator: torch.Generator) -> torch.Tensor:
    """Boxes as (width, height, centre_x, centre_y) in normalised [-1, 1] coordinates, shape [n, 4]."""
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    return torch.stack([w, h, cx, cy], dim=1)


def random_regions(x: torch.Tensor, out_size: tuple[int, int], scale: tuple[float, float],
                   ratio: tuple[float, float], flip_prob: float, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    w, h, cx, cy = random_region_boxes(n, scale, ratio, generator).to(x).unbind(1)
    flip = torch.where(torch.rand(n, generator=generator).to(x.device) < flip_prob, -1.0, 1.0).to(x)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [n, x.shape[1], *out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def warmup_cosine(step: int, total: int, base_lr: float, warmup: int) -> float:
    """lr at ``step`` (0-based) of ``total``: linear warm-up over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))
