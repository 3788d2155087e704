"""Batches drawn by index from images held in memory as one uint8 tensor, augmented a whole batch at a time.

Why: a torchvision dataset behind a ``DataLoader`` turns every image into a tensor, crops, flips and normalises
it one at a time in Python, which on this project's small networks costs more than the network's own step
(``bench/results.md``); every epoch over an ImageFolder would decode its files again. Here the images are
decoded once (``decode_split``; an ImageFolder through ``folder_cache``), and each batch is one index gather,
one batched random crop + flip, one normalisation: the work of the old per-image transforms, done the same way
(zero padding before the crop, as ``RandomCrop(padding=p)``; the same ``to_dtype``/``normalize`` functions).

What a training loader owes a resumed or a distributed run, kept here:

* the order of epoch ``e`` and every crop and flip in it are functions of (seed, epoch, rank) alone, so a run
  resumed from an epoch's checkpoint sees the batches an uninterrupted run would (Lightning calls
  ``sampler.set_epoch`` at each epoch start; ``sampler`` is the loader itself);
* under DDP each rank takes every ``world``-th index of the epoch's order, padded like ``DistributedSampler``
  so that every rank has the same number of batches; shards are disjoint and cover the set.

It is not a ``DataLoader``, so Lightning leaves it alone (no sampler is swapped in) and ``num_workers`` has
nothing to do: the batches are ready as fast as the index gather.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.distributed as dist
from torchvision.transforms.v2 import functional as TF


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside a distributed run)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``order``: every ``world``-th index, the order first padded with its own head to
    a multiple of ``world`` (``DistributedSampler``'s rule, so all ranks step the same number of times)."""
    if world == 1:
        return order
    total = math.ceil(len(order) / world) * world
    if total > len(order):
        order = torch.cat([order, order[: total - len(order)]])
    return order[rank::world]


def random_shift_flip(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """``RandomCrop(size, padding)`` (zero fill) and ``RandomHorizontalFlip`` of every image of a batch, each
    image with its own draw, in a few tensor operations."""
    n, c, h, w = x.shape
    if flip:
        flipped = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flipped.view(n, 1, 1, 1), x.flip(3), x)
    if padding == 0:
        return x
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    return window(padded, dy, dx, h, w)


def window(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The ``h`` x ``w`` window at (``top[i]``, ``left[i]``) of each image ``x[i]``."""
    n, c, H, W = x.shape
    rows = (torch.arange(h).view(1, 1, h, 1) + top.view(n, 1, 1, 1)).expand(n, c, h, W)
    cols = (torch.arange(w).view(1, 1, 1, w) + left.view(n, 1, 1, 1)).expand(n, c, h, w)
    return x.gather(2, rows).gather(3, cols)


class TensorLoader:
    """Batches ``(images, *fields)`` of the items ``index`` (default: all) of ``images``.

    Args:
        images: ``(N, C, H, W)`` uint8 (pixel values 0-255; scaled to [0, 1] and normalised with ``mean``/``std``
            per batch) or float (used as they are: already the model's input, e.g. noise images).
        fields: per-item tensors yielded beside the images (labels; a synthetic set's teacher logits and classes).
        batch_size: images per batch (per process).
        shuffle: a new order each epoch, seeded by (``seed``, epoch); otherwise the order of ``index``.
        drop_last: drop the last, smaller batch (of each rank's share).
        padding, flip: random crop with zero ``padding`` and horizontal flip, per image (training only).
        size: cut each image to ``size`` x ``size`` first: a ``random`` window or the ``centre`` one (a synthetic
            set saved on a larger canvas); None: keep the stored size.
        window_mode: ``random`` or ``centre`` (with ``size``).
        mean, std: per-channel normalisation of uint8 images after scaling to [0, 1].
        seed: the run's seed (``torch.initial_seed()``, i.e. ``seed_everything``) unless given.
        shard: under DDP, give each rank its share; False: every rank sees every item (a loader a module
            iterates itself and whose result must be the same on every rank, e.g. candidate scoring).
    """

    batch_sampler = None  # what Lightning's data checks read off a loader (none: it is not a DataLoader)

    def __init__(self, images: torch.Tensor, fields: Sequence[torch.Tensor] = (), batch_size: int = 64,
                 shuffle: bool = False, drop_last: bool = False, index: torch.Tensor | Sequence[int] | None = None,
                 padding: int = 0, flip: bool = False, size: int | None = None,
                 window_mode: Literal["random", "centre"] = "centre", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, seed: int | None = None, shard: bool = True) -> None:
        if images.dim() != 4:
            raise ValueError(f"TensorLoader needs images of shape (N, C, H, W), got {tuple(images.shape)}.")
        for f in fields:
            if len(f) != len(images):
                raise ValueError(f"A field of {len(f)} items beside {len(images)} images.")
        self.images, self.fields = images, tuple(fields)
        self.index = torch.arange(len(images)) if index is None else torch.as_tensor(index, dtype=torch.long)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.padding, self.flip, self.size, self.window_mode = int(padding), flip, size, window_mode
        self.mean = None if mean is None else list(mean)
        self.std = None if std is None else list(std)
        self.seed = torch.initial_seed() if seed is None else int(seed)
        self.epoch, self.shard = 0, shard

    def _rank_world(self) -> tuple[int, int]:
        return rank_and_world() if self.shard else (0, 1)

    @property
    def sampler(self) -> TensorLoader:
        """What Lightning calls ``set_epoch`` on at each epoch start."""
        return self

    @property
    def dataset(self) -> torch.Tensor:
        """The items this loader draws from (their count is ``len(loader.dataset)``, as for a DataLoader)."""
        return self.index

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _share(self) -> tuple[torch.Tensor, int]:
        rank, world = self._rank_world()
        if self.shuffle:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**64)
            order = self.index[torch.randperm(len(self.index), generator=g)]
        else:
            order = self.index
        return shard(order, rank, world), rank

    def __len__(self) -> int:
        n = math.ceil(len(self.index) / self._rank_world()[1])
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        share, rank = self._share()
        gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_009 + rank + 1) % 2**63)
        for b in range(len(self)):
            idx = share[b * self.batch_size:(b + 1) * self.batch_size]
            yield (self.batch(idx, gen), *(f[idx] for f in self.fields))

    def batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The model's input for the items ``idx``: windowed, scaled, augmented, normalised."""
        x = self.images[idx]
        if self.size is not None and x.shape[-1] != self.size:
            n, (H, W), s = len(x), x.shape[-2:], self.size
            if self.window_mode == "random":
                top, left = torch.randint(0, H - s + 1, (n,), generator=gen), torch.randint(0, W - s + 1, (n,), generator=gen)
                x = window(x, top, left, s, s)
            else:
                x = TF.center_crop(x, [s, s])
        pixels = x.dtype == torch.uint8  # float images are already the model's input: no scaling, no normalising
        if pixels:
            x = TF.to_dtype(x, torch.float32, scale=True)
        if self.padding or self.flip:
            x = random_shift_flip(x, self.padding, self.flip, gen)
        if pixels and self.mean is not None:
            x = TF.normalize(x, self.mean, self.std)
        return x
