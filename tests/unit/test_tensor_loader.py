"""The tensor data path: the same model inputs as the per-image torchvision path, batches a function of
(seed, epoch, rank), DDP shards that cover the set once, and an ImageFolder cache that follows its folder."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from torchvision.utils import save_image

from dfnas_pl.data import FashionMNISTDataModule, VisionDataModule
from dfnas_pl.data.search_data import SearchDataModule
from dfnas_pl.data.synthetic_datamodule import SyntheticDataModule
from dfnas_pl.data.tensor_loader import TensorLoader, random_shift_flip


def batches_equal(a, b) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) > 0 and all(
        len(p) == len(q) and all(torch.equal(torch.as_tensor(u), torch.as_tensor(v)) for u, v in zip(p, q))
        for p, q in zip(a, b))


def folder(root, n=4, size=(30, 26), fmt="jpg"):
    """A two-class ImageFolder of colour photos of an odd size (JPEG: decoded by PIL, as the old path does)."""
    for split, count in (("train", n), ("test", 2)):
        for k in ("ant", "bee"):
            (root / split / k).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                save_image(torch.rand(3, *size), root / split / k / f"{i}.{fmt}")
    return root


@pytest.mark.parametrize("grey", [False, True])
def test_imagefolder_tensor_path_gives_the_per_image_paths_inputs(tmp_path, grey):
    """Resized, grey-converted JPEGs: bit for bit the torchvision path's evaluation input, labels alike."""
    root = folder(tmp_path / "photos")
    stats = dict(mean=(0.5,), std=(0.25,)) if grey else dict(mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
    kw = dict(dataset="ImageFolder", root=str(root), batch_size=3, val_size=2, image_size=16, augment=False,
              cache_dir=str(tmp_path / "cache"), **stats)
    old, new = VisionDataModule(loader="transforms", **kw), VisionDataModule(**kw)
    for dm in (old, new):
        dm.setup("fit")
        dm.setup("test")
    assert isinstance(new.val_dataloader(), TensorLoader)
    assert batches_equal(old.val_dataloader(), new.val_dataloader())
    assert batches_equal(old.test_dataloader(), new.test_dataloader())
    torch.manual_seed(0)  # both shuffles are seeded by (seed, epoch): the same order, unaugmented the same images
    a = list(old.train_dataloader())
    torch.manual_seed(0)
    assert batches_equal(a, new.train_dataloader())
    assert next(iter(new.val_dataloader()))[0].shape == (2, 1 if grey else 3, 16, 16)
    assert not any(p.suffix == ".pt" for p in root.rglob("*"))  # nothing written into the data folder


def test_fashion_mnist_and_synthetic_sets_read_the_same_both_ways(fmnist_root, synthetic_set):
    kw = dict(root=str(fmnist_root), batch_size=500, augment=False)
    old, new = FashionMNISTDataModule(loader="transforms", **kw), FashionMNISTDataModule(**kw)
    for dm in (old, new):
        dm.setup("fit")
        dm.setup("test")
    assert batches_equal(old.val_dataloader(), new.val_dataloader())
    assert batches_equal(old.test_dataloader(), new.test_dataloader())

    old = SyntheticDataModule(path=str(synthetic_set), val_fraction=0.25, loader="transforms")
    new = SyntheticDataModule(path=str(synthetic_set), val_fraction=0.25)
    for dm in (old, new):
        dm.setup("fit")
    assert batches_equal(old.val_dataloader(), new.val_dataloader())  # (image, teacher logits, class)

    old = SearchDataModule(path=str(synthetic_set), batch_size=8, loader="transforms")
    new = SearchDataModule(path=str(synthetic_set), batch_size=8)
    for dm in (old, new):
        dm.setup("fit")
    for a, b in zip(old.scoring_loaders(), new.scoring_loaders()):
        assert batches_equal(a, b)


def test_batch_augmentation_is_a_crop_and_flip_of_each_image_and_a_function_of_seed_and_epoch():
    x = torch.rand(6, 2, 9, 7)
    out = random_shift_flip(x, 2, True, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for i in range(len(x)):  # each output is one of the 5 x 5 shifted windows of the image or of its mirror
        windows = [src[:, dy:dy + 9, dx:dx + 7] for src in (padded[i], padded[i].flip(2))
                   for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)

    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)

    def epoch(e, seed=5):
        loader = TensorLoader(images, (torch.arange(40),), batch_size=16, shuffle=True, padding=2, flip=True,
                              mean=(0.5,), std=(0.5,), seed=seed)
        loader.set_epoch(e)
        return list(loader)

    torch.rand(100)  # the global generator plays no part
    assert batches_equal(epoch(3), epoch(3))  # a resumed run's epoch 3 is the uninterrupted run's
    assert not batches_equal(epoch(3), epoch(4)) and not batches_equal(epoch(3), epoch(3, seed=6))
    assert sorted(torch.cat([b[1] for b in epoch(3)]).tolist()) == list(range(40))


def _shard_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        loader = TensorLoader(torch.zeros(11, 1, 2, 2, dtype=torch.uint8), (torch.arange(11),), batch_size=2,
                              shuffle=True, seed=3)
        loader.set_epoch(1)
        seen = [int(i) for _, idx in loader for i in idx]
        unsharded = TensorLoader(torch.zeros(11, 1, 2, 2, dtype=torch.uint8), (torch.arange(11),), batch_size=4,
                                 shard=False)
        torch.save({"seen": seen, "batches": len(loader), "unsharded": [int(i) for _, idx in unsharded for i in idx]},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_get_disjoint_shares_that_cover_the_set(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_shard_worker, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["batches"] == r1["batches"] == 3  # 11 items: 6 per rank (one repeated), same step count
    assert len(r0["seen"]) == len(r1["seen"]) == 6
    assert set(r0["seen"]) | set(r1["seen"]) == set(range(11))
    assert len(set(r0["seen"]) & set(r1["seen"])) == 1  # only the padding repeats an item
    assert r0["unsharded"] == r1["unsharded"] == list(range(11))  # scoring: every rank scores every image


def test_the_folder_cache_follows_its_folder(tmp_path, capsys):
    root = folder(tmp_path / "photos", fmt="png")
    cache = tmp_path / "cache"
    kw = dict(dataset="ImageFolder", root=str(root), val_size=2, mean=(0.5,) * 3, std=(0.5,) * 3,
              cache_dir=str(cache))

    def decoded():
        dm = VisionDataModule(**kw)
        dm.setup("fit")
        return dm.decoded(True)

    first = decoded()
    files = list(cache.iterdir())
    assert len(files) == 1 and capsys.readouterr().out == ""
    mtime = files[0].stat().st_mtime_ns
    assert torch.equal(decoded()[0], first[0]) and files[0].stat().st_mtime_ns == mtime  # read, not rebuilt

    save_image(torch.rand(3, 30, 26), root / "train" / "ant" / "0.png")  # a file changed
    save_image(torch.rand(3, 30, 26), root / "train" / "bee" / "9.png")  # one added
    again = decoded()
    assert "no longer matches" in capsys.readouterr().out and not torch.equal(again[0], first[0])
    assert len(again[0]) == len(first[0]) + 1

    (root / "train" / "ant" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"ant/1\.png' cannot be read"):
        decoded()

    (root / "train" / "ant" / "1.png").unlink()
    blocked = tmp_path / "a-file"  # a cache folder that cannot be made (as a read-only one; root writes anywhere)
    blocked.write_text("")
    kw["cache_dir"] = str(blocked / "cache")
    assert len(decoded()[0]) == len(first[0])
    assert "kept in memory for this run only" in capsys.readouterr().out
