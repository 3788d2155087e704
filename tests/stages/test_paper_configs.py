"""The paper's settings (experiments/cifar10, cifar100, imagenet) run end to end at toy scale, so that
the configs cannot rot: each pipeline config with its own stage configs, a randomly initialised teacher
of the paper's architecture, images of the paper's size in a generated ImageFolder, and a handful of
iterations and steps. Nothing else of the configs is changed."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import run_cli

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
# limit_*_batches: 2, not 1 - the CLI reads "1" as the float 1.0, which Lightning takes as 100 %
CIFAR_STATS = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
IMAGENET_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def image_folder(root, classes: int, size: int, per_class: int = 2):
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val", "test"):
        for k in range(classes):
            folder = root / split / f"c{k:03d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = (torch.rand(size, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def toy_pipeline(tmp_path, dataset: str, teacher: dict, real: dict, overrides: dict, **settings) -> dict:
    """Run experiments/<dataset>/pipeline.yaml with the toy teacher, data and overrides; return the run dir's results."""
    run = tmp_path / "run"
    config = tmp_path / "toy.yaml"
    config.write_text(json.dumps({"run_dir": str(run), "teacher": teacher, "real_data": real, "overrides": overrides,
                                  "export_unhealthy": True, **settings}))  # toy searches cannot pass the check
    run_cli("pipeline", "--config", f"experiments/{dataset}/pipeline.yaml", "--config", str(config), timeout=1200)
    return json.loads((run / "pipeline_results.json").read_text()) | {"run": run}


def _flat(node, path=""):
    """Every leaf of a parsed YAML file as (dotted path, value), with CIFAR-100's names read as CIFAR-10's."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _flat(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _flat(v, f"{path}[{i}]")
    else:
        yield path, (node.replace("cifar100", "cifar10").replace("CIFAR100", "CIFAR10")
                     .replace("cifar-100-python", "cifar-10-batches-py") if isinstance(node, str) else node)


# What CIFAR-100's configs may change: the class count, and images per class for the same 5,000 per round set.
CIFAR100_CHANGES = {"search_darts.yaml": {"model.init_args.space.num_classes": (10, 100)},
                    "synthesize.yaml": {"data.init_args.num_classes": (10, 100),
                                        "data.init_args.images_per_class": (50, 5)},
                    "teacher.yaml": {"model.init_args.num_classes": (10, 100)}}


def test_cifar100_configs_are_cifar10s_but_for_the_class_count():
    """So CIFAR-10's toy run below covers CIFAR-100's configs too (and CI runs one CIFAR pipeline, not two)."""
    names = sorted(p.name for p in Path("experiments/cifar10").glob("*.yaml"))
    assert names == sorted(p.name for p in Path("experiments/cifar100").glob("*.yaml"))
    for name in names:
        ten = dict(_flat(yaml.safe_load(Path("experiments/cifar10", name).read_text())))
        hundred = dict(_flat(yaml.safe_load(Path("experiments/cifar100", name).read_text())))
        changed = {k: (ten.get(k), hundred.get(k)) for k in ten.keys() | hundred.keys() if ten.get(k) != hundred.get(k)}
        assert changed == CIFAR100_CHANGES.get(name, {}), name


@pytest.mark.slow
def test_cifar10_paper_configs_at_toy_scale(tmp_path):
    classes, rounds = 10, 2
    root = image_folder(tmp_path / "data", classes, 32)
    teacher = {"arch": "resnet34_cifar", "num_classes": classes, "in_channels": 3, "image_size": 32, **CIFAR_STATS}
    real = {"class_path": "dfnas_pl.data.VisionDataModule",
            "init_args": {"dataset": "ImageFolder", "root": str(root), "val_size": classes, "crop_padding": 4,
                          **CIFAR_STATS}}
    steps = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
    result = toy_pipeline(tmp_path, "cifar10", teacher, real, {
        "synthesis": ["--model.init_args.rounds", str(rounds), "--model.init_args.iterations", "2",
                      "--model.init_args.warmup_iterations", "1", "--model.init_args.quality_gate", "false",
                      "--data.init_args.images_per_class", "1", *QUIET],
        "search": [*steps, "--data.init_args.batch_size", "2", *QUIET],
        "retrain": [*steps, "--trainer.limit_test_batches", "2", "--data.init_args.batch_size", "2", *QUIET],
    })
    manifest = json.loads((result["run"] / "synthetic" / "manifest.json").read_text())
    assert manifest["images"] == rounds * classes and manifest["canvas_size"] == 37  # 256/224 of 32 px, rounded
    assert manifest["config"]["regional_update"] == "window"
    arch = json.loads((result["run"] / "search" / "darts" / "architecture.json").read_text())
    metrics = json.loads((result["run"] / "retrain" / "darts" / "metrics.json").read_text())
    assert (arch["space_config"]["layers"], arch["space_config"]["channels"]) == (8, 16)  # DARTS CIFAR search
    assert metrics["space_overrides"] == {"layers": 20, "channels": 36}  # DARTS evaluation network
    assert arch["space_config"]["num_classes"] == classes and arch["space_config"]["in_channels"] == 3
    assert metrics["params"] > arch["params"] and [r["algorithm"] for r in result["rows"]] == ["darts"]


@pytest.mark.slow
def test_imagenet_paper_configs_at_toy_scale(tmp_path):
    classes = 4  # a ResNet-50 with a 4-way head: the paper's architecture, a toy label set
    root = image_folder(tmp_path / "data", classes, 64)  # photos of another size: crop imagenet brings them to 224
    teacher = {"arch": "torchvision:resnet50", "num_classes": classes, "in_channels": 3, "image_size": 224,
               **IMAGENET_STATS}
    real = {"class_path": "dfnas_pl.data.VisionDataModule",
            "init_args": {"dataset": "ImageFolder", "root": str(root), "test_split": "val", "image_size": 224,
                          "crop": "imagenet", "val_size": classes, **IMAGENET_STATS}}
    one_step = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
    result = toy_pipeline(tmp_path, "imagenet", teacher, real, {
        "synthesis": ["--model.init_args.rounds", "2", "--model.init_args.iterations", "1",
                      "--model.init_args.lowres_iterations", "1", "--model.init_args.warmup_iterations", "1",
                      "--model.init_args.quality_gate", "false", "--data.init_args.batch_size", "4", *QUIET],
        "search": [*one_step, "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0", *QUIET],
        "spos": ["--trainer.max_steps", "2", "--model.init_args.population", "2", "--model.init_args.generations",
                 "1", "--model.init_args.top_k", "1", "--model.init_args.bn_recalibration_batches", "1",
                 "--model.init_args.score_batches", "1"],
        "retrain": ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_test_batches",
                    "2", "--trainer.callbacks.init_args.every_n_train_steps", "2", "--data.init_args.batch_size", "2",
                    "--data.init_args.num_workers", "0", *QUIET],
    }, algorithms=["spos"])  # ProxylessNAS below, on the same set (its retraining would repeat SPOS's config)
    run = result["run"]
    manifest = json.loads((run / "synthetic" / "manifest.json").read_text())
    assert manifest["images"] == 2 * classes and manifest["canvas_size"] == 256  # the official canvas
    assert (run / "synthetic" / "grids" / "round_01.png").is_file()
    spos = json.loads((run / "search" / "spos" / "architecture.json").read_text())
    assert len(spos["choices"]) == 20 and spos["space_config"]["image_size"] == 224
    assert spos["flops"] <= 660e6  # the official 330 M multiply-adds limit
    assert [r["algorithm"] for r in result["rows"]] == ["spos"]

    out = tmp_path / "proxylessnas"
    run_cli("fit", "--config", "experiments/imagenet/search_proxylessnas.yaml", "--data.init_args.path",
            str(run / "synthetic"), "--data.init_args.real_data", json.dumps(real), "--model.init_args.teacher",
            json.dumps(teacher), "--model.init_args.space.num_classes", str(classes), "--model.init_args.output_dir",
            str(out), "--trainer.default_root_dir", str(out), "--trainer.callbacks.init_args.dirpath", str(out / "ckpt"),
            "--trainer.max_epochs", "1", "--model.init_args.warmup_epochs", "0", *one_step,
            "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
            "--model.init_args.export_unhealthy", "true", *QUIET, timeout=900)
    proxyless = json.loads((out / "architecture.json").read_text())
    assert len(proxyless["choices"]) == 22 and proxyless["space_config"]["image_size"] == 224  # 1 + 4 x 5 + 1 layers

