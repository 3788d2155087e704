"""Real image datasets through torchvision, as LightningDataModules.

``VisionDataModule`` takes any torchvision classification dataset by name (``FashionMNIST``,
``MNIST``, ``CIFAR10``, ``CIFAR100``, ...) or an ``ImageFolder`` tree, so a user with CIFAR-10 on
disk points a config at it. Train/val are a seeded split of the official training set; test is
the official test set, which no stage ever uses for selection.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from dfnas_pl.data import fashion_mnist
from dfnas_pl.data.epoch_shuffle import make_loader
from dfnas_pl.data.tensor_loader import TensorLoader
from dfnas_pl.utils.settings import check_all

# Per-channel statistics of the training sets (pixel values in [0, 1]).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "FashionMNIST": ((0.2860,), (0.3530,)),
    "MNIST": ((0.1307,), (0.3081,)),
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
DATASET_SIZES = {"FashionMNIST": 28, "MNIST": 28, "CIFAR10": 32, "CIFAR100": 32}
TRAIN_SPLIT_IMAGES = {"FashionMNIST": 60000, "MNIST": 60000, "CIFAR10": 50000, "CIFAR100": 50000}


class VisionDataModule(L.LightningDataModule):
    """A torchvision dataset (or an ImageFolder root) with a seeded train/val split.

    Args:
        dataset: torchvision dataset class name, or ``"ImageFolder"`` (then ``root`` holds
            ``train/`` and ``<test_split>/`` class folders).
        root: where the files are (nothing is downloaded unless ``download`` is true).
        batch_size: per-process batch size.
        val_size: images of the training set held out for validation; null: 5,000 or a tenth of the
            training split, whichever is smaller (Fashion-MNIST: 5,000; a folder of 400 images: 40).
        mean: per-channel normalisation mean; defaults to the dataset's known statistics.
        std: per-channel normalisation std; defaults to the dataset's known statistics.
        image_size: resize to this size (ImageFolder sets of other sizes); ``None`` keeps it.
        augment: random crop with ``crop_padding`` and horizontal flip on the training split.
        crop_padding: zero padding (pixels) of the random crop (CIFAR: 4).
        num_workers: data loader worker processes.
        split_seed: seed of the train/val split (fixed, so every stage sees the same split).
        download: let torchvision download the dataset if it is not on disk.
        test_split: ImageFolder only: the folder of the test set next to ``train/`` (ImageNet: ``val``).
        crop: ``resize`` (resize to ``image_size``; random crop with padding + flip when augmenting) or
            ``imagenet`` (RandomResizedCrop + flip for training, resize to 256/224 of the size + centre
            crop for evaluation: photos of any size and aspect).
        train_images: train on only this many images of the training split, the same number per class
            (seeded by ``split_seed``); null: all. The distillation check's real-data reference: a student
            taught on as many real images as a synthetic set holds.
        loader: ``tensor`` (every split decoded once into memory, batches cropped, flipped and normalised a
            whole batch at a time: dfnas_pl/data/tensor_loader.py) or ``transforms`` (torchvision transforms
            per image behind a DataLoader; what ``crop: imagenet`` always uses, photos differing in size).
        cache_dir: where an ImageFolder's decoded images are kept between runs (a file per folder, rebuilt when
            its files change; never inside the data folder); null: ``~/.cache/dfnas_pl``.
    """

    def __init__(
        self,
        dataset: str = "FashionMNIST",
        root: str = "data",
        batch_size: int = 128,
        val_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        image_size: int | None = None,
        augment: bool = True,
        crop_padding: int = 2,
        num_workers: int = 0,
        split_seed: int = 0,
        download: bool = False,
        test_split: str = "test",
        crop: Literal["resize", "imagenet"] = "resize",
        train_images: int | None = None,
        loader: Literal["tensor", "transforms"] = "tensor",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_all([("batch_size", batch_size, 1, None), ("val_size", val_size, 0, None),
                   ("train_images", train_images, 1, None),
                   ("image_size", image_size, 1, None), ("crop_padding", crop_padding, 0, None),
                   ("num_workers", num_workers, 0, None)], prefix="data.init_args.")
        # Explicit dict: subclasses call this __init__, and save_hyperparameters() would read their frame.
        self.save_hyperparameters({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        if mean is None or std is None:
            if dataset not in DATASET_STATS:
                raise ValueError(
                    f"No known normalisation statistics for dataset '{dataset}'. "
                    f"Set data.mean and data.std in the config (known: {sorted(DATASET_STATS)})."
                )
            mean, std = DATASET_STATS[dataset]
        self.mean, self.std = tuple(mean), tuple(std)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._decoded: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def in_channels(self) -> int:
        return len(self.mean)

    @property
    def image_size(self) -> int | None:
        return self.hparams.image_size or DATASET_SIZES.get(self.hparams.dataset)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order, known before ``setup`` (stages check them against the teacher's)."""
        name = self.hparams.dataset
        if name == "FashionMNIST":
            return list(fashion_mnist.CLASSES)
        if name == "ImageFolder":
            return self._folder_classes("train")
        known = getattr(getattr(datasets, name, None), "classes", None)  # MNIST & co: a class attribute
        if isinstance(known, (list, tuple)):
            return list(known)
        if self.test_set is None:  # CIFAR & co read their names from the files
            self.test_set = self._make(False, self._transforms(train=False))
        return list(getattr(self.test_set, "classes", []))

    def _folder_classes(self, split: str) -> list[str]:
        folder = Path(self.hparams.root) / split
        if not folder.is_dir():
            raise FileNotFoundError(f"ImageFolder data needs '{folder}' with one sub-folder per class "
                                    f"(data.init_args.root: the folder that holds train/ and test/).")
        return datasets.folder.find_classes(str(folder))[0]

    def _check_folder_splits(self) -> None:
        """ImageFolder numbers classes per folder: a class missing from test/ would shift every label."""
        split = self.hparams.test_split
        train, test = self._folder_classes("train"), self._folder_classes(split)
        if train != test:
            root = Path(self.hparams.root)
            raise ValueError(f"The class folders of '{root / 'train'}' and '{root / split}' differ, so their "
                             f"labels would not mean the same classes.\n  train: {train}\n  test:  {test}\n"
                             f"Fix: give both the same class folders (an empty folder is not enough: ImageFolder "
                             f"needs at least one image per class folder).")

    def validate(self) -> None:
        """What can be known before any stage runs: an ImageFolder's class folders agree, its training split
        is larger than ``val_size``, and its image files have the channel count that ``mean``/``std`` give
        (grey files read through a 3-value mean would be copied into 3 identical channels, silently)."""
        if self.hparams.dataset != "ImageFolder":
            known = TRAIN_SPLIT_IMAGES.get(self.hparams.dataset)
            if known is not None:
                self._check_val_size(known, f"{self.hparams.dataset} at '{self.hparams.root}'")
            return
        self._check_folder_splits()
        root = Path(self.hparams.root)
        for split in ("train", self.hparams.test_split):
            samples = datasets.ImageFolder(root / split).samples  # lists the files, reads none
            if split == "train":
                self._check_val_size(len(samples), f"'{root / 'train'}'")
            picked = [samples[i][0] for i in sorted({round(j * (len(samples) - 1) / 7) for j in range(8)})]
            channels = {path: _file_channels(path) for path in picked}
            if channels and all(c != self.in_channels for c in channels.values()):
                example, c = next(iter(channels.items()))
                kind = {1: "grey (1 channel)", 3: "colour (3 channels)"}.get(c, f"{c}-channel")
                raise ValueError(f"The images of '{root / split}' are {kind}, e.g. '{example}', but the data module's "
                                 f"mean/std give {self.in_channels} channel(s), so they would be read as "
                                 f"{self.in_channels}-channel images. Fix: give mean and std with {c} value(s) and a "
                                 f"teacher for {c} channel(s), or convert the files.")

    def val_count(self, n: int) -> int:
        """Images held out for validation from a training split of ``n``."""
        return min(5000, n // 10) if self.hparams.val_size is None else int(self.hparams.val_size)

    def _check_val_size(self, n: int, where: str) -> None:
        if self.val_count(n) >= n:
            raise ValueError(f"data val_size {self.hparams.val_size} leaves no training images: {where} holds only {n}. "
                             f"Fix: set the data module's val_size below {n} (e.g. {max(1, n // 10)}, a tenth), or "
                             f"leave it out (a tenth, at most 5,000).")

    def _transforms(self, train: bool) -> T.Compose:
        ops: list = [T.ToImage()]
        size = self.hparams.image_size
        if self.hparams.crop == "imagenet":
            if size is None:
                raise ValueError("data crop: imagenet needs data.image_size (e.g. 224).")
            ops += ([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()] if train and self.hparams.augment
                    else [T.Resize(round(size * 256 / 224), antialias=True), T.CenterCrop(size)])
            if self.in_channels == 1:
                ops.append(T.Grayscale(1))
            return T.Compose([*ops, T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)])
        ops = list(self._decode_transform().transforms)  # the pixels the tensor path decodes, then per-image work
        if train and self.hparams.augment:
            ops += [T.RandomCrop(size, padding=self.hparams.crop_padding) if size else _PadCrop(self.hparams.crop_padding),
                    T.RandomHorizontalFlip()]
        ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)]
        return T.Compose(ops)

    def _make(self, train: bool, transform) -> Dataset:
        name, root = self.hparams.dataset, self.hparams.root
        if name == "ImageFolder":
            self._check_folder_splits()
            folder = Path(root) / ("train" if train else self.hparams.test_split)
            return datasets.ImageFolder(folder, transform=transform)
        if name == "FashionMNIST":
            fashion_mnist.prepare_fashion_mnist(root)
        if not hasattr(datasets, name):
            raise ValueError(f"torchvision.datasets has no dataset '{name}'. Use a class name such as "
                             f"FashionMNIST or CIFAR10, or ImageFolder.")
        try:
            return getattr(datasets, name)(root, train=train, transform=transform, download=self.hparams.download)
        except RuntimeError as err:
            hint = fashion_mnist.missing_data_message(root) if name == "FashionMNIST" else (
                f"put the files under '{root}' or set data.download: true on a machine with internet")
            raise FileNotFoundError(f"Dataset {name} is not available: {err}. Fix: {hint}") from err

    def prepare_data(self) -> None:
        if self.hparams.dataset == "FashionMNIST" and not fashion_mnist.prepare_fashion_mnist(self.hparams.root):
            if not self.hparams.download:
                raise FileNotFoundError(fashion_mnist.missing_data_message(self.hparams.root))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            full_train = self._make(True, self._transforms(train=True))
            full_eval = self._make(True, self._transforms(train=False))
            n = len(full_train)
            self._check_val_size(n, f"{self.hparams.dataset} at '{self.hparams.root}'")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.split_seed)).tolist()
            k = self.val_count(n)
            val_idx, train_idx = perm[:k], perm[k:]
            if self.hparams.train_images is not None:
                train_idx = self._balanced(full_train, train_idx, self.hparams.train_images)
            self.train_set = Subset(full_train, train_idx)
            self.val_set = Subset(full_eval, val_idx)
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self._make(False, self._transforms(train=False))

    def _balanced(self, dataset: Dataset, order: list[int], count: int) -> list[int]:
        """``count`` indices of ``order`` (already seeded), as equal per class as the classes allow."""
        if count > len(order):
            raise ValueError(f"data train_images {count} is more than the {len(order)} training images of "
                             f"{self.hparams.dataset} at '{self.hparams.root}' (after val_size). Fix: lower it, or "
                             f"leave it out (all).")
        targets = getattr(dataset, "targets", None)
        if targets is None:
            return order[:count]
        per_class: dict[int, list[int]] = {}
        for i in order:  # one pass; each class keeps the seeded order
            per_class.setdefault(int(targets[i]), []).append(i)
        # round-robin over the classes in label order: the counts differ by at most one per class
        rounds = itertools.zip_longest(*(per_class[c] for c in sorted(per_class)))
        return [i for r in rounds for i in r if i is not None][:count]

    @property
    def tensor_path(self) -> bool:
        """Batches from decoded tensors (``loader: tensor``; not for ``crop: imagenet``'s photos of any size)."""
        return self.hparams.loader == "tensor" and self.hparams.crop != "imagenet"

    def _decode_transform(self) -> T.Compose:
        """The per-image path up to its random crop: the uint8 pixels both paths start from."""
        ops: list = [T.ToImage()]
        if self.hparams.image_size is not None:
            ops.append(T.Resize((self.hparams.image_size, self.hparams.image_size), antialias=True))
        if self.in_channels == 1:
            ops.append(T.Grayscale(1))
        return T.Compose(ops)

    def decoded(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The official training (``train``) or test split as ``(uint8 images, labels)``, decoded once; checked
        against the per-image path's evaluation input on a few images (after ``setup`` of that split)."""
        if train not in self._decoded:
            from dfnas_pl.data.decoded import decode, default_cache_dir

            tf = self._decode_transform()
            cache = self.hparams.cache_dir
            images, labels = decode(self._make(train, tf), tf, Path(cache) if cache else default_cache_dir(),
                                    {"image_size": self.hparams.image_size, "channels": self.in_channels})
            reference = self.val_set.dataset if train else self.test_set  # the evaluation transform, set up
            for i in torch.linspace(0, len(images) - 1, 8).long().unique().tolist():
                x, y = reference[i]
                mine = TF.normalize(TF.to_dtype(images[i], torch.float32, scale=True), list(self.mean), list(self.std))
                if mine.shape != x.shape or not torch.allclose(mine, x, atol=1e-5) or int(labels[i]) != int(y):
                    raise ValueError(f"The tensor data path reads item {i} of {self.hparams.dataset} at "
                                     f"'{self.hparams.root}' differently from torchvision's per-image path. Fix: set "
                                     f"data.init_args.loader: transforms (and please report it).")
            self._decoded[train] = (images, labels)
        return self._decoded[train]

    def tensor_loader(self, split: Literal["train", "val", "test"], augment: bool | None = None,
                      shuffle: bool | None = None, index: Sequence[int] | None = None, **kw) -> TensorLoader:
        """A ``TensorLoader`` of ``split`` (``index``: these items of the official training split instead),
        augmented as the data module's settings say for ``train`` unless ``augment`` is given."""
        images, labels = self.decoded(split != "test")
        if index is None:
            index = {"train": self.train_set, "val": self.val_set}[split].indices if split != "test" else None
        augment = (split == "train" and self.hparams.augment) if augment is None else augment
        return TensorLoader(images, (labels,), self.hparams.batch_size,
                            shuffle=split == "train" if shuffle is None else shuffle, index=index,
                            padding=self.hparams.crop_padding if augment else 0, flip=augment,
                            mean=self.mean, std=self.std, **kw)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return make_loader(dataset, self.hparams.batch_size, shuffle, self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader | TensorLoader:
        return self.tensor_loader("train") if self.tensor_path else self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | TensorLoader:
        return self.tensor_loader("val") if self.tensor_path else self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader | TensorLoader:
        return self.tensor_loader("test") if self.tensor_path else self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def _file_channels(path: str) -> int:
    """Channels of an image file as stored (PIL bands; palette and CMYK files are read as colour)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
            return 1
        return 3


class _PadCrop(torch.nn.Module):
    """RandomCrop back to the input's own size after padding (size known only per sample)."""

    def __init__(self, padding: int) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, img):
        size = img.shape[-2:]
        return T.RandomCrop(tuple(size), padding=self.padding)(img)


class FashionMNISTDataModule(VisionDataModule):
    """Fashion-MNIST (60k train / 10k test, 28x28 grey, 10 classes) from Debian's package."""

    def __init__(self, root: str = "data", batch_size: int = 128, val_size: int = 5000, augment: bool = True,
                 num_workers: int = 0, split_seed: int = 0, download: bool = False,
                 train_images: int | None = None, loader: Literal["tensor", "transforms"] = "tensor") -> None:
        super().__init__("FashionMNIST", root=root, batch_size=batch_size, val_size=val_size, augment=augment,
                         num_workers=num_workers, split_seed=split_seed, download=download,
                         train_images=train_images, loader=loader)
