"""Search data: synthetic / real / noise sources, disjoint search-train and search-val splits."""

import pytest
import torch

from dfnas_pl.data import FashionMNISTDataModule, SearchDataModule


def test_synthetic_source_splits_the_set_and_pairs_batches(synthetic_set):
    dm = SearchDataModule(source="synthetic", path=str(synthetic_set), val_fraction=0.25, batch_size=4)
    dm.setup("fit")
    assert (len(dm.search_train), len(dm.search_val)) == (30, 10)
    assert not set(dm.search_train.indices) & set(dm.search_val.indices)
    batch, *_ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"train", "val"} and batch["train"][0].shape == (4, 1, 28, 28)
    assert dm.uses_teacher


def test_real_source_uses_labels_and_respects_the_budget(fmnist_root):
    real = FashionMNISTDataModule(root=str(fmnist_root), batch_size=64)
    dm = SearchDataModule(source="real", real_data=real, max_images=500, val_fraction=0.5, batch_size=16)
    dm.setup("fit")
    assert (len(dm.search_train), len(dm.search_val)) == (250, 250) and not dm.uses_teacher
    assert not set(dm.search_train.indices) & set(dm.search_val.indices)
    assert set(dm.search_train.indices) <= set(real.train_set.indices)  # never the real val or test images
    x, y = dm.search_val[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10
    with pytest.raises(ValueError, match="real_data"):
        SearchDataModule(source="real")


def test_noise_source_is_reproducible_gaussian_noise():
    dm = SearchDataModule(source="noise", noise_images=100, image_shape=(1, 28, 28), batch_size=10)
    dm.setup("fit")
    assert len(dm.search_train) + len(dm.search_val) == 100
    a, b = dm.search_train[0][0], dm.search_train[0][0]
    assert torch.equal(a, b) and abs(float(a.mean())) < 0.3 and abs(float(a.std()) - 1) < 0.2
    with pytest.raises(ValueError, match="val_fraction"):
        SearchDataModule(source="noise", val_fraction=1.0)


def test_scoring_batches_do_not_depend_on_the_random_state(synthetic_set):
    """BN recalibration reads search-train without augmentation: the same images whatever the random state, so a
    search's scores (and its choice) repeat, and agree across DDP ranks; training still augments them."""
    dm = SearchDataModule(source="synthetic", path=str(synthetic_set), val_fraction=0.25, batch_size=8)
    dm.setup("fit")
    torch.manual_seed(0)
    a = next(iter(dm.scoring_loaders()[0]))[0]
    torch.manual_seed(1)
    b = next(iter(dm.scoring_loaders()[0]))[0]
    assert torch.equal(a, b)
    torch.manual_seed(0)
    t0 = torch.stack([dm.search_train[i][0] for i in range(4)])
    torch.manual_seed(1)
    t1 = torch.stack([dm.search_train[i][0] for i in range(4)])
    assert not torch.equal(t0, t1)  # the training view is augmented
