"""A user's own teacher (an nn.Module class of theirs, a plain state dict) and own real data (an
ImageFolder of class folders) through every stage: the pipeline sizes each stage from the teacher,
evaluates on the folders, and refuses folders whose classes are not the teacher's."""

import json

import lightning as L
import pytest
import torch
from PIL import Image
from torch import nn

from dfnas_pl.data.compatibility import check_real_data
from dfnas_pl.data.vision import VisionDataModule
from tests.conftest import run_cli
from tests.stages.test_pipeline import toy_overrides

CLASSES = ["cat", "dog", "fish"]
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


class ColourNet(nn.Module):
    """The user's own teacher class (3-channel 16 px images, 3 classes), with BatchNorm to invert."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.features(x))


def make_folders(root, classes=CLASSES, test_classes=None, per_class=6, size=16):
    """Class k's images are mostly colour channel k, so the classes can be told apart."""
    gen = torch.Generator().manual_seed(0)
    for split, names, n in (("train", classes, per_class), ("test", test_classes or classes, per_class // 2)):
        for k, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = 0.2 * torch.rand(size, size, 3, generator=gen)
                img[..., k % 3] += 0.7
                Image.fromarray((img.clamp(0, 1) * 255).to(torch.uint8).numpy()).save(folder / f"{i}.png")
    return root


def folder_data(root, batch_size=4):
    return VisionDataModule("ImageFolder", root=str(root), mean=MEAN, std=STD, val_size=3, batch_size=batch_size)


def train_teacher(net: nn.Module, dm: VisionDataModule, epochs: int) -> nn.Module:
    """A few epochs of SGD on the data module's training split: enough to make ``net`` a teacher."""
    dm.setup("fit")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        for x, y in dm.train_dataloader():
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    return net


@pytest.fixture
def teacher_file(tmp_path):
    """A plain state dict of ColourNet, trained a few steps on the folders (so it is a teacher)."""
    root = make_folders(tmp_path / "folders")
    L.seed_everything(0)
    net = train_teacher(ColourNet(), folder_data(root, batch_size=6), epochs=5)
    torch.save(net.state_dict(), tmp_path / "colournet.pt")
    return tmp_path / "colournet.pt", root


def teacher_source(path, class_names=CLASSES):
    return {"path": str(path), "arch": "tests.stages.test_own_data.ColourNet", "in_channels": 3, "image_size": 16,
            "mean": MEAN, "std": STD, "class_names": list(class_names)}


def test_class_names_that_differ_from_the_teacher_name_both_lists(tmp_path):
    data = folder_data(make_folders(tmp_path / "f"))
    facts = {"num_classes": 3, "in_channels": 3, "image_size": 16, "mean": MEAN, "std": STD}
    check_real_data(data, facts, "the teacher 't.pt'", CLASSES)  # same names, same order: fine
    with pytest.raises(ValueError, match=r"(?s)differ \(first at position 1\).*'cat', 'dog', 'fish'.*"
                                         r"'cat', 'fish', 'dog'.*class_names"):
        check_real_data(data, facts, "the teacher 't.pt'", ["cat", "fish", "dog"])  # same set, other order
    with pytest.raises(ValueError, match=r"has 3 classes .* 5 outputs"):
        check_real_data(data, {**facts, "num_classes": 5}, "the teacher 't.pt'")
    with pytest.raises(ValueError, match=r"mean \[0.5, 0.5, 0.5\].*expects mean \[0.4"):
        check_real_data(data, {**facts, "mean": [0.4] * 3}, "the teacher 't.pt'", CLASSES)
    with pytest.raises(ValueError, match="has 3 channel.*expects 1"):
        check_real_data(data, {**facts, "in_channels": 1}, "the teacher 't.pt'")


def test_image_folder_whose_test_split_lacks_a_class_is_refused(tmp_path):
    data = folder_data(make_folders(tmp_path / "f", test_classes=["cat", "fish"]))
    with pytest.raises(ValueError, match=r"(?s)differ.*train: \['cat', 'dog', 'fish'\].*test:  \['cat', 'fish'\]"):
        data.setup("fit")


@pytest.mark.slow
def test_pipeline_on_your_own_teacher_class_and_image_folder(tmp_path, teacher_file):
    path, root = teacher_file
    real = {"class_path": "dfnas_pl.data.VisionDataModule",
            "init_args": {"dataset": "ImageFolder", "root": str(root), "mean": MEAN, "std": STD, "val_size": 3,
                          "batch_size": 4}}
    overrides = toy_overrides()  # the pipeline test's, with 2 images per class of the 3 and smaller batches
    overrides["synthesis"] += ["--data.init_args.images_per_class", "2", "--data.init_args.batch_size", "6"]
    overrides["search"] += ["--data.init_args.batch_size", "3"]
    run = tmp_path / "run"
    config = tmp_path / "pipeline.yaml"
    config.write_text(json.dumps({"run_dir": str(run), "algorithms": ["darts", "spos"], "overrides": overrides,
                                  "teacher": teacher_source(path), "real_data": real}))
    run_cli("pipeline", "--config", str(config), timeout=900)

    manifest = json.loads((run / "synthetic" / "manifest.json").read_text())
    assert manifest["class_names"] == CLASSES and manifest["images"] == 2 * 2 * 3
    assert manifest["teacher"]["arch"] == "tests.stages.test_own_data.ColourNet"
    for algorithm in ("darts", "spos"):  # each space sized from the teacher, retrained and tested on the folders
        space = json.loads((run / "search" / algorithm / "architecture.json").read_text())["space_config"]
        assert (space["in_channels"], space["num_classes"]) == (3, 3)
        metrics = json.loads((run / "retrain" / algorithm / "metrics.json").read_text())
        assert metrics["trained_on"] == "real (CE)" and 0.0 <= metrics["test_top1"] <= 1.0

    # the distillation check on the same set, evaluated on the folders
    check = ["--config", "experiments/fmnist/distill_check.yaml", "--data.init_args.path", str(run / "synthetic"),
             "--data.init_args.eval_data", json.dumps(real), "--trainer.max_epochs", "1",
             "--trainer.default_root_dir", str(tmp_path / "dc"), "--trainer.logger", "false",
             "--trainer.callbacks.init_args.dirpath", str(tmp_path / "dc"), "--trainer.enable_progress_bar", "false",
             "--model.init_args.metrics_path", str(tmp_path / "dc.json")]
    run_cli("fit", *check, "--model.init_args.teacher", json.dumps(teacher_source(path)))
    run_cli("test", *check, "--model.init_args.teacher", json.dumps(teacher_source(path)),
            "--ckpt_path", str(tmp_path / "dc" / "last.ckpt"))
    assert 0.0 <= json.loads((tmp_path / "dc.json").read_text())["test_top1"] <= 1.0

    # a teacher whose classes are not the folders' is refused before any stage runs, naming both lists
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(json.dumps({"run_dir": str(tmp_path / "run2"), "algorithms": ["spos"], "overrides": overrides,
                                 "teacher": teacher_source(path, ["cat", "dog", "bird"]), "real_data": real}))
    out = run_cli("pipeline", "--config", str(wrong), check=False)
    assert out.returncode != 0 and "['cat', 'dog', 'fish']" in out.stderr and "['cat', 'dog', 'bird']" in out.stderr
    assert not (tmp_path / "run2" / "synthetic").exists()
