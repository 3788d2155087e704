"""Teacher loading: the embedded default is a real, accurate classifier; every file kind loads safely."""

import pytest
import torch

from dfnas_pl.data import FashionMNISTDataModule
from dfnas_pl.teachers.loading import build_arch, load_teacher, save_teacher
from dfnas_pl.teachers.module import TeacherClassifier
from tests.conftest import TEACHER


def test_embedded_teacher_is_accurate_on_real_test_images(fmnist_root):
    teacher = load_teacher(TEACHER)
    assert teacher.arch == "resnet8" and teacher.num_classes == 10 and teacher.in_channels == 1
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    dm = FashionMNISTDataModule(root=str(fmnist_root), batch_size=1000)
    dm.setup("test")
    x, y = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        acc = (teacher.model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.9, acc
    shuffled = (teacher.model(x[torch.randperm(len(x))]).argmax(1) == y).float().mean().item()
    assert shuffled < 0.3  # the accuracy comes from the images, not from the label distribution


@pytest.fixture()
def reference():
    return load_teacher(TEACHER)


def same_outputs(a, b):
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(a.model(x), b.model(x))


def test_plain_state_dict_needs_and_takes_the_arch(tmp_path, reference):
    path = tmp_path / "sd.pt"
    torch.save(reference.model.state_dict(), path)
    with pytest.raises(ValueError, match="set the teacher.s arch too"):
        load_teacher(str(path))
    same_outputs(load_teacher(str(path), arch="resnet8", mean=(0.286,), std=(0.353,)), reference)


def test_lightning_checkpoint_loads(tmp_path, reference):
    import lightning as L

    module = TeacherClassifier(arch="resnet8", num_classes=10, in_channels=1)
    module.model.load_state_dict(reference.model.state_dict())
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, max_epochs=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "teacher.ckpt")
    loaded = load_teacher(str(tmp_path / "teacher.ckpt"))
    assert loaded.arch == "resnet8"
    same_outputs(loaded, reference)


def test_teacher_file_round_trip_keeps_metadata(tmp_path, reference):
    path = save_teacher(tmp_path / "t.pt", reference.model, "resnet8", 10, 1, 28, reference.mean, reference.std,
                        class_names=["a"] * 10, metrics={"test/acc": 0.5})
    loaded = load_teacher(str(path))
    assert loaded.class_names == ["a"] * 10 and loaded.metrics == {"test/acc": 0.5}
    same_outputs(loaded, reference)


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_teacher(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_teacher(str(bad))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(load_teacher.__globals__["WEIGHTS_DIR"].joinpath("fmnist_resnet8.pt").read_bytes()[:5000])
    with pytest.raises(ValueError, match="corrupt"):
        load_teacher(str(truncated))


class NotATensor:  # a pickled Python object, which weights_only loading must refuse
    pass


def test_pickled_objects_are_refused_unless_trusted(tmp_path, reference):
    path = tmp_path / "pickled.pt"
    torch.save({"arch": NotATensor(), **reference.model.state_dict()}, path)
    with pytest.raises(ValueError, match="trust_checkpoint: true"):
        load_teacher(str(path), arch="resnet8")
    with pytest.raises(ValueError, match="neither a dfnas_pl teacher file"):  # trusted, but still not a teacher
        load_teacher(str(path), arch="resnet8", trust_checkpoint=True)


def test_class_and_channel_mismatch_name_both_values(tmp_path):
    with pytest.raises(ValueError, match="num_classes=100.*num_classes=10"):
        load_teacher(TEACHER, num_classes=100)
    with pytest.raises(ValueError, match="in_channels=3.*in_channels=1"):
        load_teacher(TEACHER, in_channels=3)
    torch.save(build_arch("resnet8", 1, 10).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="do not fit architecture 'resnet8' with 1 input channels and 7 classes"):
        load_teacher(str(tmp_path / "sd.pt"), arch="resnet8", num_classes=7)


def test_torchvision_model_names(tmp_path):
    model = build_arch("torchvision:resnet18", 3, 10)
    torch.save(model.state_dict(), tmp_path / "r18.pt")
    teacher = load_teacher(str(tmp_path / "r18.pt"), arch="torchvision:resnet18", image_size=32)
    assert teacher.in_channels == 3 and teacher.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        build_arch("torchvision:resnet18", 1, 10)
    with pytest.raises(ValueError, match="Unknown teacher architecture 'resnet9000'"):
        build_arch("resnet9000", 1, 10)
