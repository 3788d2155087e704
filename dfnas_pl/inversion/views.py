"""What the teacher sees of the images at each inversion step.

* ``jitter_flip`` - DeepInversion's augmentation: a random circular shift of the whole batch by up
  to ``jitter`` pixels and a random horizontal flip. Every pixel gets gradient at every step.
* ``random_regions`` - the **regional update**: each image gets its own random box (area fraction
  in ``scale``, aspect ratio in ``ratio``), which is resampled to the full input resolution and
  optionally flipped. Only pixels inside the box (plus the bilinear border) get gradient, so each
  step refines one region of each image, a different one every step; images become collages of
  separately optimised regions, which is what makes them more diverse than whole-image updates.
  (The official code's only comparable mechanism is a random 224 crop of a 256 canvas;
  ``zoom`` makes the region's size random too, like a random-resized crop.)
* ``random_windows`` - the official code's mechanism (``regional_update: window``): the optimised
  canvas is larger than the teacher's input, and each step forwards one input-sized window at a
  random offset, cut out without interpolation (optionally flipped). Only the window's pixels get
  gradient, every pixel is seen at its native scale, and the saved image is the whole canvas.
* ``warmup_cosine`` - the learning-rate policy of the official code: linear warm-up, then cosine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import center_crop


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


def window_offsets(n: int, canvas: int, size: int, per_image: bool, generator: torch.Generator) -> torch.Tensor:
    """Top-left corners (row, column) of ``size`` windows in a ``canvas`` square, shape [n, 2]; one
    offset for the whole batch unless ``per_image``."""
    if size > canvas:
        raise ValueError(f"A window of {size} px does not fit a canvas of {canvas} px.")
    off = torch.randint(0, canvas - size + 1, (n if per_image else 1, 2), generator=generator)
    return off if per_image else off.expand(n, 2)


def crop_windows(canvas: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's own ``size`` x ``size`` window (pure indexing: gradient reaches only its pixels)."""
    n, c = canvas.shape[:2]
    ar = torch.arange(size, device=canvas.device)
    offsets = offsets.to(canvas.device)
    rows, cols = offsets[:, :1] + ar, offsets[:, 1:] + ar  # [n, size] each
    return canvas[torch.arange(n, device=canvas.device)[:, None, None, None],
                  torch.arange(c, device=canvas.device)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def random_windows(canvas: torch.Tensor, size: int, flip_prob: float, per_image: bool,
                   generator: torch.Generator) -> torch.Tensor:
    """One random input-sized window of each canvas, flipped horizontally with ``flip_prob`` (per image
    when ``per_image``, else one draw for the batch)."""
    n = canvas.shape[0]
    view = crop_windows(canvas, window_offsets(n, canvas.shape[-1], size, per_image, generator), size)
    if flip_prob > 0:
        draw = torch.rand(n if per_image else 1, generator=generator).expand(n) < flip_prob
        view = torch.where(draw.to(view.device)[:, None, None, None], view.flip(3), view)
    return view


def all_windows(canvas: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Every input-sized window of the canvas (no flip), for labels averaged over windows."""
    span = canvas.shape[-1] - size + 1
    return [canvas[..., i:i + size, j:j + size] for i in range(span) for j in range(span)]


def centre_window(canvas: torch.Tensor, size: int) -> torch.Tensor:
    """The centre window - torchvision's centre crop, the same one the data modules evaluate on."""
    return center_crop(canvas, [size, size])


def warmup_cosine(step: int, total: int, base_lr: float, warmup: int) -> float:
    """lr at ``step`` (0-based) of ``total``: linear warm-up over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))
