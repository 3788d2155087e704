"""A finished synthetic set as a LightningDataModule: train on the synthetic images (optionally a
seeded train/val split of them, for search), evaluate on real data (``eval_data``), which is only
ever used to *report* accuracy, never to train or select."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2 as T

from dfnas_pl.data.compatibility import check_real_data
from dfnas_pl.data.epoch_shuffle import make_loader
from dfnas_pl.data.synthetic import SyntheticImageDataset
from dfnas_pl.data.tensor_loader import TensorLoader
from dfnas_pl.data.vision import VisionDataModule
from dfnas_pl.utils.settings import check_all


class SyntheticDataModule(L.LightningDataModule):
    """A synthesised set as training data (KD from the teacher), real data for evaluation.

    Args:
        path: the synthetic set (``<run>/synthetic``, with manifest.json). A set saved on a larger canvas
            (``regional_update: window``) trains on random input-sized windows, validates on the centre one.
        batch_size: per-process batch size.
        val_fraction: fraction of synthetic images held out as ``val`` (0: validate on ``eval_data``).
        augment: random crop (``crop_padding``) + horizontal flip on synthetic training images.
        crop_padding: zero padding (pixels) of the random crop.
        rounds: use only these calibration rounds (default: all).
        eval_data: real data for test (and val when ``val_fraction`` is 0).
        num_workers: DataLoader worker processes (0: load in the main process).
        split_seed: seed of the synthetic train/val split.
        loader: ``tensor`` (the set decoded once, batches cropped and flipped whole: dfnas_pl/data/tensor_loader.py)
            or ``transforms`` (per-image transforms behind a DataLoader).
    """

    def __init__(self, path: str = "runs/fmnist/synthetic", batch_size: int = 64, val_fraction: float = 0.0,
                 augment: bool = True, crop_padding: int = 2, rounds: list[int] | None = None,
                 eval_data: VisionDataModule | None = None, num_workers: int = 0, split_seed: int = 0,
                 loader: Literal["tensor", "transforms"] = "tensor") -> None:
        super().__init__()
        check_all([("batch_size", batch_size, 1, None), ("val_fraction", val_fraction, 0, 1, False, True),
                   ("crop_padding", crop_padding, 0, None), ("num_workers", num_workers, 0, None)],
                  prefix="data.init_args.")
        self.path, self.batch_size, self.val_fraction = Path(path), batch_size, val_fraction
        self.augment, self.crop_padding, self.rounds = augment, crop_padding, rounds
        self.eval_data, self.num_workers, self.split_seed = eval_data, num_workers, split_seed
        self.loader = loader
        self.train_set = self.val_set = None
        self._images: torch.Tensor | None = None

    def prepare_data(self) -> None:
        if self.eval_data is not None:
            self.eval_data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            tf = T.Compose([T.RandomCrop(self._size(), padding=self.crop_padding), T.RandomHorizontalFlip()]) \
                if self.augment else None
            full = SyntheticImageDataset(self.path, transform=tf, rounds=self.rounds, window="random")
            plain = SyntheticImageDataset(self.path, transform=None, rounds=self.rounds)
            self.manifest = full.manifest
            n_val = int(round(len(full) * self.val_fraction))
            perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
            self.train_set = Subset(full, perm[n_val:])
            self.val_set = Subset(plain, perm[:n_val]) if n_val else None
            check_real_data(self.eval_data, self.manifest["teacher"], f"the synthetic set '{self.path}'",
                            self.manifest.get("class_names") or ())
        if self.eval_data is not None:
            self.eval_data.setup(stage)

    def _size(self) -> int:
        return int(SyntheticImageDataset(self.path).manifest["teacher"]["image_size"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["teacher"]["num_classes"])

    def _loader(self, ds: Subset, shuffle: bool) -> DataLoader | TensorLoader:
        if self.loader == "transforms":
            return make_loader(ds, self.batch_size, shuffle, self.num_workers)
        full = ds.dataset
        if self._images is None:
            self._images = full.decoded()
        augment = shuffle and self.augment
        return TensorLoader(self._images, (full.logits, full.classes), self.batch_size, shuffle=shuffle,
                            index=ds.indices, padding=self.crop_padding if augment else 0, flip=augment,
                            window_mode="random" if shuffle else "centre", **full.input_settings())

    def train_dataloader(self) -> DataLoader | TensorLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | TensorLoader | list:
        if self.val_set is not None:
            return self._loader(self.val_set, shuffle=False)
        return self.eval_data.val_dataloader() if self.eval_data is not None else []

    def test_dataloader(self) -> DataLoader:
        if self.eval_data is None:
            raise ValueError("Testing needs real data: set data.init_args.eval_data (e.g. FashionMNISTDataModule).")
        return self.eval_data.test_dataloader()
