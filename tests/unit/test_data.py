"""Real data through torchvision: Fashion-MNIST from Debian's package, ImageFolder sets."""

import pytest
import torch
from torchvision.utils import save_image

from dfnas_pl.data import FashionMNISTDataModule, VisionDataModule
from dfnas_pl.data.fashion_mnist import CLASSES, missing_data_message, prepare_fashion_mnist


def test_fashion_mnist_splits_and_normalisation(fmnist_root):
    dm = FashionMNISTDataModule(root=str(fmnist_root), batch_size=1000, augment=False)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55000, 5000, 10000)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1  # normalised with the set's statistics
    assert set(y.tolist()) == set(range(10))
    assert dm.class_names == list(CLASSES) and dm.in_channels == 1 and dm.image_size == 28


def test_split_is_fixed_by_split_seed(fmnist_root):
    a, b, c = (FashionMNISTDataModule(root=str(fmnist_root), split_seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup("fit")
    assert a.val_set.indices == b.val_set.indices != c.val_set.indices


def test_missing_data_names_the_fix(tmp_path):
    assert not prepare_fashion_mnist(tmp_path / "root", source=tmp_path / "nothing-here")
    message = missing_data_message(tmp_path / "root")
    assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path / "root") in message


def test_imagefolder_dataset_with_resize_and_colour(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for k in ("cat", "dog"):
            (tmp_path / split / k).mkdir(parents=True)
            for i in range(n):
                save_image(torch.rand(3, 40, 40), tmp_path / split / k / f"{i}.png")
    dm = VisionDataModule("ImageFolder", root=str(tmp_path), batch_size=4, val_size=2, image_size=32,
                          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 2, 4)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and dm.in_channels == 3
    assert dm.class_names == ["cat", "dog"]


def test_unknown_dataset_and_statistics_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="data.mean and data.std"):
        VisionDataModule("MyData", root=str(tmp_path))
    dm = VisionDataModule("NoSuchDataset", root=str(tmp_path), mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="torchvision.datasets has no dataset 'NoSuchDataset'"):
        dm.setup("fit")
    dm = VisionDataModule("ImageFolder", root=str(tmp_path), mean=(0.5,), std=(0.5,))
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        dm.setup("fit")


def test_the_training_shuffle_depends_on_seed_and_epoch_only():
    """What makes a resumed run see the images an uninterrupted one would: the order of epoch e is a
    permutation seeded by (seed, e), whatever else drew from the global generator before."""
    import torch

    from dfnas_pl.data.epoch_shuffle import EpochShuffle, make_loader

    data = list(range(100))
    a, b = EpochShuffle(data, seed=3), EpochShuffle(data, seed=3)
    torch.rand(1000)  # unrelated draws from the global generator change nothing
    assert list(a) == list(b) and sorted(a) == data and list(a) != data
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(EpochShuffle(data, seed=4)) != list(EpochShuffle(data, seed=3))

    torch.manual_seed(7)
    loader = make_loader(torch.arange(100), batch_size=10, shuffle=True)
    first = next(iter(loader))
    torch.rand(1000)
    assert torch.equal(next(iter(loader)), first)
    state = torch.get_rng_state()
    iter(make_loader(torch.arange(100), batch_size=10, shuffle=True))  # making an iterator draws nothing
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(next(iter(make_loader(torch.arange(100), batch_size=10, shuffle=False))), torch.arange(10))


def test_train_images_takes_a_seeded_class_balanced_subset(fmnist_root):
    """The distillation check's real-data reference: as many real images as a synthetic set, per class alike."""
    def subset(n, seed=0):
        dm = FashionMNISTDataModule(root=str(fmnist_root), train_images=n, split_seed=seed)
        dm.setup("fit")
        return dm.train_set.indices, [int(dm.train_set.dataset.targets[i]) for i in dm.train_set.indices]

    idx, labels = subset(53)
    assert len(idx) == 53 and sorted({labels.count(c) for c in range(10)}) == [5, 6]  # 3 classes get a sixth
    assert subset(53)[0] == idx and subset(53, seed=1)[0] != idx
    full = FashionMNISTDataModule(root=str(fmnist_root))
    full.setup("fit")
    assert set(idx) <= set(full.train_set.indices)  # never a validation image
    with pytest.raises(ValueError, match="train_images 60000 is more than the 55000 training images"):
        subset(60000)
