"""What the synthesis stage iterates over: slot ids, not images.

Slot s (0 <= s < images_per_class * num_classes) has class s % num_classes in round 0, so every
batch of consecutive slots is class-balanced, as BatchNorm-statistics matching wants. Batches -
not single ids - are dealt round-robin to the DDP ranks of all nodes: each id is synthesised by
exactly one process, with no padding duplicates (``DistributedSampler`` would repeat ids to even
out the shards; we pad with -1, "nothing to do", so every rank runs the same number of steps).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

PAD = -1


class SlotIds(Dataset):
    """Item i is the id i itself (PAD passes through as "nothing to do")."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class BatchShardSampler(DistributedSampler):
    """Deals whole batches of consecutive ids to ranks; pads with -1 to equal length, never repeats.

    It subclasses ``DistributedSampler`` so that Lightning keeps it instead of injecting its own.
    """

    def __init__(self, n: int, batch_size: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.n, self.batch_size = n, batch_size
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.shuffle, self.drop_last = 0, False, False
        self.num_batches = math.ceil(math.ceil(n / batch_size) / num_replicas)

    def shard(self) -> list[int]:
        batches = [list(range(b, min(b + self.batch_size, self.n))) for b in range(0, self.n, self.batch_size)]
        mine = batches[self.rank :: self.num_replicas]
        mine += [[] for _ in range(self.num_batches - len(mine))]
        return [i for batch in mine for i in batch + [PAD] * (self.batch_size - len(batch))]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard())

    def __len__(self) -> int:
        return self.num_batches * self.batch_size


class SynthesisSlots(L.LightningDataModule):
    """Slot ids for synthesis.

    Args:
        num_classes: classes of the teacher (checked against it).
        images_per_class: images per class *per round*; a run writes rounds x this x num_classes images.
        batch_size: images optimised together (one Adam, one BN-statistics estimate).
    """

    def __init__(self, num_classes: int = 10, images_per_class: int = 25, batch_size: int = 100) -> None:
        super().__init__()
        if images_per_class < 1 or batch_size < 1:
            raise ValueError("images_per_class and batch_size must be positive.")
        self.num_classes, self.images_per_class, self.batch_size = num_classes, images_per_class, batch_size

    @property
    def num_slots(self) -> int:
        return self.num_classes * self.images_per_class

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        sampler = BatchShardSampler(self.num_slots, self.batch_size, num_replicas=world, rank=rank)
        return DataLoader(SlotIds(self.num_slots), batch_size=self.batch_size, sampler=sampler,
                          collate_fn=torch.tensor)
