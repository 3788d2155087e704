"""A user's own teacher in every form the loader takes (issue: "your teacher, your data"): a state dict
of a custom nn.Module class (import path or class_path + init_args), TorchScript, torch.export, a whole
pickled module (trusted only) - with clear errors for what cannot be guessed - and through the CLI."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from dfnas_pl.teachers.loading import load_teacher
from tests.conftest import run_cli, synthesize

FACTS = {"in_channels": 1, "image_size": 28, "mean": [0.3], "std": [0.35]}


class TinyNet(nn.Module):
    """A user's network: not in any registry, with BatchNorm, 7 classes."""

    def __init__(self, width: int = 6, classes: int = 7) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture()
def net():
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():  # non-trivial running statistics, so a wrong load shows
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


def same(teacher, model):
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(teacher.model(x), model(x))


def test_state_dict_of_a_custom_class_by_import_path_or_class_path(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    t = load_teacher({"path": str(tmp_path / "sd.pt"), "arch": "tests.stages.test_teacher_sources.TinyNet", **FACTS})
    same(t, net)
    assert t.num_classes == 7 and t.kind == "module" and t.mean == (0.3,)  # classes read off the output
    wide = TinyNet(width=8)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    t = load_teacher({"path": str(tmp_path / "wide.pt"), "arch": {"class_path": "tests.stages.test_teacher_sources.TinyNet",
                                                                  "init_args": {"width": 8}}, **FACTS})
    same(t, wide.eval())
    with pytest.raises(ValueError, match="does not say its image_size, mean, std"):
        load_teacher({"path": str(tmp_path / "sd.pt"), "arch": "tests.stages.test_teacher_sources.TinyNet", "in_channels": 1})
    with pytest.raises(ValueError, match="cannot be imported"):
        load_teacher({"path": str(tmp_path / "sd.pt"), "arch": "tests.nowhere.TinyNet", **FACTS})
    with pytest.raises(ValueError, match="do not fit architecture"):
        load_teacher({"path": str(tmp_path / "wide.pt"), "arch": "tests.stages.test_teacher_sources.TinyNet", **FACTS})
    with pytest.raises(ValueError, match="Unknown teacher setting"):
        load_teacher({"path": str(tmp_path / "sd.pt"), "arch": "x.Y", "colour": "red"})


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_torchscript_and_export_archives_load_and_give_input_gradients(tmp_path, net, kind):
    path = tmp_path / f"{kind}.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "torchscript":
            torch.jit.save(torch.jit.script(net), str(path))
        else:
            batch = {"x": {0: torch.export.Dim("batch")}}  # stages feed any batch size
            torch.export.save(torch.export.export(net, (torch.randn(2, 1, 28, 28),), dynamic_shapes=batch), str(path))
    t = load_teacher({"path": str(path), **FACTS})
    assert t.kind == kind and t.num_classes == 7
    same(t, net)
    x = torch.randn(2, 1, 28, 28, requires_grad=True)
    t.model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # what inversion needs
    hooked = load_teacher({"path": str(path), "arch": "tests.stages.test_teacher_sources.TinyNet", **FACTS})
    t.model.train()
    assert not t.model.training  # an archived teacher never switches to batch statistics
    assert hooked.kind == "module" and sum(isinstance(m, nn.BatchNorm2d) for m in hooked.model.modules()) == 2
    same(hooked, net)


def test_a_whole_pickled_module_needs_trust(tmp_path, net):
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="trust_checkpoint: true"):
        load_teacher({"path": str(tmp_path / "whole.pt"), **FACTS})
    same(load_teacher({"path": str(tmp_path / "whole.pt"), "trust_checkpoint": True, **FACTS}), net)


def test_synthesis_with_an_archive_teacher_says_how_to_get_the_bn_loss(tmp_path, net):
    path = tmp_path / "ts.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(net), str(path))
    teacher = {"path": str(path), **FACTS}
    with pytest.raises(ValueError, match="cannot be hooked.*arch.*r_feature: 0"):
        synthesize(tmp_path / "a", rounds=1, images_per_class=1, batch_size=7, iterations=2, teacher=teacher,
                   num_classes=7)
    m = synthesize(tmp_path / "b", rounds=1, images_per_class=1, batch_size=7, iterations=3, teacher=teacher,
                   r_feature=0.0, num_classes=7)
    assert len(list(m.output_dir.glob("images/*/*.png"))) == 7


@pytest.mark.slow
def test_the_cli_takes_a_teacher_mapping_with_a_custom_class(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    teacher = {"path": str(tmp_path / "sd.pt"), "arch": "tests.stages.test_teacher_sources.TinyNet", **FACTS,
               "class_names": [f"c{i}" for i in range(7)]}
    out = tmp_path / "syn"
    proc = run_cli("fit", "--config", "experiments/fmnist/synthesize.yaml", "--model.init_args.teacher", json.dumps(teacher),
            "--model.init_args.output_dir", str(out), "--model.init_args.iterations", "3",
            "--model.init_args.warmup_iterations", "1", "--model.init_args.rounds", "1",
            "--data.init_args.num_classes", "7", "--data.init_args.images_per_class", "1",
            "--data.init_args.batch_size", "7", "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
            "--model.init_args.quality_gate", "false",
            "--trainer.callbacks", "[]")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["arch"] == "tests.stages.test_teacher_sources.TinyNet" and manifest["teacher"]["num_classes"] == 7
    assert manifest["images"] == 7 and manifest["class_names"] == [f"c{i}" for i in range(7)]
    assert "deprecated" not in proc.stderr.lower()  # a normal run prints no deprecation warning (e.g. LeafSpec)
