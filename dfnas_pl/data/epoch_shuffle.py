"""A training shuffle that is a function of (seed, epoch) alone.

``DataLoader(shuffle=True)`` draws each epoch's order from the global generator, so the order after a
resume depends on everything that drew random numbers before it. Here the order of epoch ``e`` is a
permutation seeded by (seed, e): a run killed and resumed from ``last.ckpt`` sees the same images in the
same order as an uninterrupted one, whatever ``num_workers`` is. Lightning calls ``set_epoch`` at each
epoch start. It is a ``RandomSampler``, so under DDP Lightning swaps it for its ``DistributedSampler``
(also seeded by epoch) as it does for ``shuffle=True``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


class EpochShuffle(RandomSampler):
    """Seed: the run's seed (``torch.initial_seed()``, i.e. ``seed_everything``) unless given."""

    def __init__(self, data_source: Sized, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = torch.initial_seed() if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**64)
        yield from torch.randperm(len(self.data_source), generator=g).tolist()


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0,
                drop_last: bool = False, persistent: bool = True) -> DataLoader:
    """The loader every data module builds: shuffled by (seed, epoch) for training, in order otherwise.
    ``persistent``: keep the workers between epochs (off for one-pass loaders made again and again).

    The loader gets a generator of its own: each new epoch's iterator draws a seed for its workers, and
    drawn from the global generator that would shift every random augmentation after a resume (Lightning
    makes the first resumed epoch's iterator at a different moment than an uninterrupted run does)."""
    generator = torch.Generator().manual_seed(torch.initial_seed() % 2**64)
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochShuffle(dataset) if shuffle else None,
                      num_workers=num_workers, persistent_workers=persistent and num_workers > 0,
                      drop_last=drop_last, generator=generator)
