"""Data for architecture search, selected in YAML: the synthetic set, real data, or Gaussian noise.

Search needs two disjoint splits: *search-train* (supernet weights) and *search-val* (architecture
parameters / candidate scoring). ``train_dataloader`` yields ``{"train": batch, "val": batch}`` so an
algorithm gets one batch of each per step (Lightning's ``CombinedLoader``); ``val_dataloader`` is the
search-val split alone, ``test_dataloader`` the real test set (reporting only).
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2 as T

from dfnas_pl.data.compatibility import check_real_data
from dfnas_pl.data.epoch_shuffle import make_loader
from dfnas_pl.data.synthetic import SyntheticImageDataset
from dfnas_pl.data.tensor_loader import TensorLoader
from dfnas_pl.data.vision import VisionDataModule
from dfnas_pl.utils.settings import check_all


class GaussianNoise(Dataset):
    """The paper's lower baseline: N(0, 1) images in the teacher's normalised space (label 0 unused:
    the teacher labels them)."""

    def __init__(self, n: int, shape: tuple[int, int, int], seed: int = 0) -> None:
        self.n, self.shape, self.seed = n, shape, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.randn(self.shape, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + i)), 0


class SearchDataModule(L.LightningDataModule):
    """Search-train / search-val splits of synthetic, real or noise data for a supernet search.

    Args:
        source: ``synthetic`` (the set at ``path``; KD from the teacher), ``real`` (``real_data``'s
            training split; cross-entropy) or ``noise`` (Gaussian noise; KD from the teacher).
        path: the synthetic set (for ``synthetic``). A set saved on a larger canvas (``regional_update:
            window``) gives random input-sized windows to search-train and the centre window to search-val.
        real_data: a real-data module: the training source for ``real`` and the test set for all.
        val_fraction: share of the search images held out as search-val.
        max_images: use at most this many search images (same budget for every source); None: all.
        noise_images: number of noise images (for ``noise``).
        image_shape: (channels, height, width) of noise images.
        batch_size: per-process batch size of each split.
        augment: random crop + flip on the synthetic search-train split.
        num_workers: DataLoader worker processes (0: load in the main process).
        split_seed: seed of the subsample and the train/val split.
        loader: ``tensor`` (images decoded once, batches cropped and flipped whole: dfnas_pl/data/tensor_loader.py)
            or ``transforms`` (per-image transforms behind a DataLoader).
    """

    def __init__(self, source: Literal["synthetic", "real", "noise"] = "synthetic",
                 path: str = "runs/fmnist/synthetic", real_data: VisionDataModule | None = None,
                 val_fraction: float = 0.5, max_images: int | None = None, noise_images: int = 500,
                 image_shape: tuple[int, int, int] = (1, 28, 28), batch_size: int = 64, augment: bool = True,
                 num_workers: int = 0, split_seed: int = 0, loader: Literal["tensor", "transforms"] = "tensor") -> None:
        super().__init__()
        check_all([("val_fraction", val_fraction, 0, 1, True, True), ("max_images", max_images, 2, None),
                   ("noise_images", noise_images, 2, None), ("batch_size", batch_size, 1, None),
                   ("num_workers", num_workers, 0, None)], prefix="data.init_args.")
        if source == "real" and real_data is None:
            raise ValueError("source: real needs data.init_args.real_data (e.g. FashionMNISTDataModule).")
        self.source, self.path, self.real_data = source, path, real_data
        self.val_fraction, self.max_images, self.noise_images = val_fraction, max_images, noise_images
        self.image_shape, self.batch_size, self.augment = tuple(image_shape), batch_size, augment
        self.num_workers, self.split_seed, self.loader = num_workers, split_seed, loader
        self._tensors: tuple[torch.Tensor, tuple[torch.Tensor, ...], dict] | None = None
        self.search_train: Dataset | None = None
        self.search_val: Dataset | None = None
        self.search_train_plain: Dataset | None = None

    @property
    def uses_teacher(self) -> bool:
        """Synthetic and noise images are labelled by the teacher (KD); real images by their labels."""
        return self.source != "real"

    def prepare_data(self) -> None:
        if self.real_data is not None:
            self.real_data.prepare_data()

    def _datasets(self) -> tuple[Dataset, Dataset]:
        if self.source == "synthetic":
            plain = SyntheticImageDataset(self.path)
            teacher = plain.manifest["teacher"]
            check_real_data(self.real_data, teacher, f"the synthetic set '{self.path}'",
                            plain.manifest.get("class_names") or ())
            size = int(teacher["image_size"])  # the set's own size (image_shape is for noise)
            tf = T.Compose([T.RandomCrop(size, padding=2), T.RandomHorizontalFlip()]) if self.augment else None
            return SyntheticImageDataset(self.path, transform=tf, window="random"), plain
        if self.source == "noise":
            noise = GaussianNoise(self.noise_images, self.image_shape, self.split_seed)
            return noise, noise
        self.real_data.setup("fit")
        return self.real_data.train_set, self.real_data.val_set.dataset  # val_set shares the plain transform

    def setup(self, stage: str | None = None) -> None:
        if self.search_train is None:
            train_ds, plain_ds = self._datasets()
            if self.source == "real":  # indices of the real training split, eval transform for search-val
                base = list(train_ds.indices)
                train_ds, plain_ds = train_ds.dataset, plain_ds
            else:
                base = list(range(len(train_ds)))
            gen = torch.Generator().manual_seed(self.split_seed)
            order = [base[i] for i in torch.randperm(len(base), generator=gen).tolist()]
            if self.max_images is not None:
                order = order[: self.max_images]
            n_val = max(1, int(round(len(order) * self.val_fraction)))
            self.search_train, self.search_val = Subset(train_ds, order[n_val:]), Subset(plain_ds, order[:n_val])
            self.search_train_plain = Subset(plain_ds, order[n_val:])  # the same images, never augmented
        if stage in (None, "test") and self.real_data is not None:
            self.real_data.setup("test")

    def _loader(self, ds: Subset, shuffle: bool, shard: bool = True) -> DataLoader | TensorLoader:
        drop_last = shuffle and len(ds) > self.batch_size
        if self.loader == "transforms":
            return make_loader(ds, self.batch_size, shuffle, self.num_workers, drop_last=drop_last, persistent=False)
        images, fields, how = self._decoded()
        augment = ds is self.search_train  # the only augmented split
        return TensorLoader(images, fields, self.batch_size, shuffle=shuffle, drop_last=drop_last, index=ds.indices,
                            shard=shard, **(how["train"] if augment else how["eval"]))

    def _decoded(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], dict]:
        """The source's images in one tensor, the fields beside them, and how each split's batches are made
        (the per-image path's transforms: a synthetic set's random window, crop and flip for search-train)."""
        if self._tensors is None:
            if self.source == "synthetic":
                full = self.search_val.dataset
                norm = full.input_settings()
                how = {"train": {**norm, "window_mode": "random", "padding": 2 if self.augment else 0,
                                 "flip": self.augment},
                       "eval": {**norm, "window_mode": "centre"}}
                self._tensors = (full.decoded(), (full.logits, full.classes), how)
            elif self.source == "noise":
                noise = self.search_val.dataset
                images = torch.stack([noise[i][0] for i in range(len(noise))])
                self._tensors = (images, (torch.zeros(len(noise), dtype=torch.long),), {"train": {}, "eval": {}})
            else:
                real = self.real_data
                images, labels = real.decoded(True)
                norm = {"mean": real.mean, "std": real.std}
                aug = bool(real.hparams.augment)
                how = {"train": {**norm, "padding": real.hparams.crop_padding if aug else 0, "flip": aug}, "eval": norm}
                self._tensors = (images, (labels,), how)
        return self._tensors

    def scoring_loaders(self) -> tuple[DataLoader, DataLoader]:
        """What a one-shot search scores candidates with: search-train in a fixed order and without
        augmentation (BN recalibration: a random crop here would make every score, and so the search's choice,
        depend on the random state, and differ between DDP ranks) and search-val (the score)."""
        return self._loader(self.search_train_plain, False, shard=False), self._loader(self.search_val, False, shard=False)

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader({"train": self._loader(self.search_train, True),
                               "val": self._loader(self.search_val, True)}, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.search_val, False)

    def test_dataloader(self) -> DataLoader:
        if self.real_data is None:
            raise ValueError("Testing needs real data: set data.init_args.real_data.")
        return self.real_data.test_dataloader()
