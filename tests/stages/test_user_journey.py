"""A user who is not us: their own teacher class (not a ResNet), a small grey ImageFolder made on the fly,
and README's own pipeline command run verbatim in their directory; then one test per bad input that used
to crash, print a traceback, write into the current directory or delete a user's file."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import lightning as L
import pytest
import torch
from PIL import Image

from dfnas_pl.data.synthetic import foreign_files
from dfnas_pl.data.vision import VisionDataModule
from tests.conftest import REPO, run_cli, synthesize
from tests.stages.test_own_data import train_teacher
from tests.stages.test_pipeline import toy_overrides

CLASSES = ["bag", "boot", "coat", "shirt"]  # as README's example
TEACHER_MODULE = '''
from torch import nn


class MyNet(nn.Module):
    """The user's own grey 28 px classifier: two conv + BatchNorm layers, a linear head."""

    def __init__(self, width: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.head(self.body(x))
'''


def grey_folders(root, train_per_class=50, test_per_class=12, size=28, mode="L"):
    """Class k: a bright horizontal bar at its own height, on noise (so a small CNN learns it)."""
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = 0.3 * torch.rand(size, size, generator=gen)
                img[3 + 6 * k: 6 + 6 * k] += 0.6
                Image.fromarray((img.clamp(0, 1) * 255).to(torch.uint8).numpy(), mode="L").convert(mode).save(
                    root / split / name / f"{i}.png")
    return root


@pytest.fixture
def user_dir(tmp_path):
    """The user's working directory: mypkg/ with their class, mynet.pt (a state dict of it, trained on
    my_data), my_data/ (an ImageFolder), and a checkout's experiments/ folder."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(TEACHER_MODULE)
    grey_folders(tmp_path / "my_data")
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    namespace: dict = {}
    exec(TEACHER_MODULE, namespace)
    L.seed_everything(0)
    dm = VisionDataModule("ImageFolder", root=str(tmp_path / "my_data"), mean=[0.5], std=[0.25], batch_size=20)
    net = train_teacher(namespace["MyNet"](width=8), dm, epochs=8)
    torch.save(net.state_dict(), tmp_path / "mynet.pt")
    return tmp_path


def readme_pipeline_command() -> list[str]:
    """README's own-teacher pipeline command, as a user would paste it."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(python -m dfnas_pl pipeline --config experiments/fmnist/pipeline\.yaml \\\n"
                      r"  --teacher .*?)```", text, re.S)
    assert block, "README lost its own-teacher pipeline command"
    words = shlex.split(block.group(1).replace("\\\n", " "))
    assert words[:3] == ["python", "-m", "dfnas_pl"]
    return words[3:]


@pytest.mark.slow
def test_readme_pipeline_command_on_a_users_own_teacher_and_grey_image_folder(user_dir):
    toy = toy_overrides()
    toy["synthesis"] += ["--data.init_args.images_per_class", "2", "--data.init_args.batch_size", "8"]
    toy["search"] += ["--data.init_args.batch_size", "4"]
    toy["spos"] = [a for a in toy["spos"] if a not in ("--model.init_args.space.stage_channels", "[16, 24, 32]")]
    args = [*readme_pipeline_command(), "--algorithms", "[spos]", "--overrides", json.dumps(toy)]
    out = run_cli(*args, cwd=user_dir, timeout=900, env={"PYTHONPATH": str(user_dir)})
    run = user_dir / "runs" / "fmnist"  # README's command: the pipeline config's run dir, under the user's directory
    manifest = json.loads((run / "synthetic" / "manifest.json").read_text())
    assert manifest["class_names"] == CLASSES and manifest["teacher"]["in_channels"] == 1
    metrics = json.loads((run / "retrain" / "spos" / "metrics.json").read_text())
    assert metrics["trained_on"] == "real (CE)" and 0.0 <= metrics["test_top1"] <= 1.0
    assert "Traceback" not in out.stderr


def test_a_small_folder_gets_a_validation_split_that_leaves_training_images(tmp_path):
    data = VisionDataModule("ImageFolder", root=str(grey_folders(tmp_path / "d", 10, 2)), mean=[0.5], std=[0.25])
    data.setup("fit")  # the default holds out a tenth (at most 5,000), not 5,000 of 40
    assert (len(data.train_set), len(data.val_set)) == (36, 4)
    too_many = VisionDataModule("ImageFolder", root=str(tmp_path / "d"), mean=[0.5], std=[0.25], val_size=5000)
    with pytest.raises(ValueError, match=r"val_size 5000 leaves no training images: .*holds only 40\. Fix: .*below 40"):
        too_many.validate()


def test_grey_files_read_through_a_colour_mean_are_refused(tmp_path):
    root = grey_folders(tmp_path / "d", 4, 2)
    rgb = VisionDataModule("ImageFolder", root=str(root), mean=[0.5] * 3, std=[0.25] * 3)
    with pytest.raises(ValueError, match=r"are grey \(1 channel\).*give 3 channel\(s\).*Fix: give mean and std with 1"):
        rgb.validate()
    VisionDataModule("ImageFolder", root=str(root), mean=[0.5], std=[0.25]).validate()  # grey for grey: fine
    colour = grey_folders(tmp_path / "c", 4, 2, mode="RGB")
    with pytest.raises(ValueError, match=r"are colour \(3 channels\)"):
        VisionDataModule("ImageFolder", root=str(colour), mean=[0.5], std=[0.25]).validate()


@pytest.mark.slow
def test_a_pipeline_whose_data_cannot_be_split_stops_before_any_stage(user_dir):
    args = readme_pipeline_command()
    i = args.index("--real_data") + 1
    real = json.loads(args[i])
    real["init_args"]["val_size"] = 5000
    args[i] = json.dumps(real)
    out = run_cli(*args, "--run_dir", "run", cwd=user_dir, check=False, env={"PYTHONPATH": str(user_dir)})
    assert out.returncode == 2 and out.stderr.startswith("dfnas_pl: error: data val_size 5000 leaves no training")
    assert not (user_dir / "run" / "synthetic").exists()


@pytest.mark.slow
@pytest.mark.parametrize("setting, value, message", [
    ("--model.init_args.label_temperature", "0", "model.init_args.label_temperature must lie in (0, inf), got 0.0."),
    ("--model.init_args.iterations", "-1", "model.init_args.iterations must lie in [1, inf), got -1."),
    ("--model.init_args.output_dir", "", "model.init_args.output_dir is an empty path"),
])
def test_a_bad_setting_of_a_stage_is_one_line_with_exit_2(tmp_path, setting, value, message):
    out = run_cli("fit", "--config", "experiments/fmnist/synthesize.yaml", setting, value, "--trainer.logger", "false",
                  check=False, cwd=REPO)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("dfnas_pl: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in out.stderr
    assert "Union subtypes" not in out.stderr


def test_an_empty_path_anywhere_in_a_config_is_refused():
    from dfnas_pl.utils.settings import check_paths

    check_paths({"data": {"init_args": {"path": "runs/x"}}})
    with pytest.raises(ValueError, match=r"data\.init_args\.path is an empty path"):
        check_paths({"data": {"init_args": {"path": ""}}})
    with pytest.raises(ValueError, match=r"trainer\.callbacks\[1\]\.init_args\.dirpath is an empty path"):
        check_paths({"trainer": {"callbacks": [{"class_path": "a"}, {"init_args": {"dirpath": " "}}]}})


def test_a_teacher_arch_mapping_given_on_the_command_line_stays_a_mapping(user_dir):
    from jsonargparse import ArgumentParser

    from dfnas_pl.teachers.loading import TeacherSource, load_teacher

    p = ArgumentParser()
    p.add_argument("--teacher", type=TeacherSource)
    source = {"path": str(user_dir / "mynet.pt"), "arch": {"class_path": "mypkg.MyNet", "init_args": {"width": 8}},
              "in_channels": 1, "image_size": 28, "mean": [0.5], "std": [0.25], "class_names": CLASSES}
    parsed = p.instantiate_classes(p.parse_args(["--teacher", json.dumps(source)])).teacher
    assert parsed["arch"] == source["arch"]  # not a module jsonargparse built
    import sys

    sys.path.insert(0, str(user_dir))
    try:
        teacher = load_teacher(parsed)
    finally:
        sys.path.remove(str(user_dir))
        sys.modules.pop("mypkg", None)
    assert teacher.num_classes == 4 and teacher.arch == "mypkg.MyNet"


@pytest.mark.slow
def test_an_architecture_file_that_is_not_complete_is_one_line(tmp_path):
    bad = tmp_path / "architecture.json"
    bad.write_text(json.dumps({"format": "dfnas_pl.architecture/1", "space": "macro", "choices": ["identity"] * 8}))
    out = run_cli("fit", "--config", "experiments/fmnist/retrain.yaml", "--model.init_args.architecture", str(bad),
                  "--trainer.logger", "false", check=False)
    assert out.returncode == 2 and "lacks space_config" in out.stderr and "KeyError" not in out.stderr


def test_a_foreign_file_in_a_set_is_reported_and_never_deleted(tmp_path, synthetic_set):
    from dfnas_pl.data.check_set import main as check_main

    root = tmp_path / "set"
    shutil.copytree(synthetic_set, root)
    manifest = json.loads((root / "manifest.json").read_text())
    foreign = root / "images" / "003" / "holiday.png"
    Image.new("L", (28, 28)).save(foreign)
    assert foreign_files(root) == ["images/003/holiday.png"]
    assert check_main([str(root)]) == 0  # still sound: the set's own files are all as recorded
    from dfnas_pl.data.synthetic import SyntheticSetWriter

    writer = SyntheticSetWriter(root, int(manifest["teacher"]["num_classes"]))
    assert writer.remove_orphan_images() == 0 and foreign.is_file()  # resume removes only our own unfinished images
    writer.clear()  # overwrite: our files go, the user's stays
    assert foreign.is_file() and not list(root.glob("images/*/r*.png")) and not (root / "records").exists()


def test_check_counts_the_sets_images_not_the_files_in_its_folders(tmp_path, synthetic_set, capsys):
    from dfnas_pl.data.check_set import main as check_main

    root = tmp_path / "set"
    shutil.copytree(synthetic_set, root)
    n = json.loads((root / "manifest.json").read_text())["images"]
    Image.new("L", (28, 28)).save(root / "images" / "000" / "extra.png")
    assert check_main([str(root)]) == 0
    out = capsys.readouterr().out
    assert f"sound: {n} images" in out and "1 file(s) in its folders are not part of the set" in out
    assert "images/000/extra.png" in out


@pytest.mark.slow
def test_a_resumed_synthesis_leaves_a_foreign_file_in_place(tmp_path, capsys):
    out = tmp_path / "set"
    synthesize(out, rounds=1, images_per_class=1, iterations=2)
    foreign = next((out / "images").iterdir()) / "mine.png"  # beside the set's own images
    Image.new("L", (28, 28)).save(foreign)
    synthesize(out, rounds=1, images_per_class=1, iterations=2)
    assert foreign.is_file() and "Left in place" in capsys.readouterr().out


@pytest.mark.slow
def test_a_stage_run_on_its_own_logs_to_wandb_beside_its_outputs(tmp_path):
    """Shipped configs name no W&B folder: a stage's offline W&B run lands beside the output directory the
    user gave it, not in ./runs/fmnist/wandb under wherever the command was started."""
    started_in, out = tmp_path / "elsewhere", tmp_path / "my_set"
    started_in.mkdir()
    proc = run_cli("fit", "--config", str(REPO / "experiments/fmnist/synthesize.yaml"), "--model.init_args.output_dir",
                   str(out), "--model.init_args.rounds", "1", "--model.init_args.iterations", "2",
                   "--model.init_args.warmup_iterations", "1", "--model.init_args.quality_gate", "false",
                   "--data.init_args.images_per_class", "1", "--data.init_args.batch_size", "10", cwd=started_in,
                   env={"WANDB_SILENT": "false"})
    assert list((out / "wandb").glob("offline-run-*")), sorted(p.name for p in out.iterdir())
    assert "Tracking run with wandb" in proc.stderr  # W&B speaks here, but not of a setting nobody set
    assert "anonymous setting" not in proc.stderr, proc.stderr[-2000:]
    assert not list(started_in.rglob("wandb")), sorted(str(p) for p in started_in.rglob("*"))
    # a save_dir the user names still wins
    named = tmp_path / "my_logs"
    run_cli("fit", "--config", str(REPO / "experiments/fmnist/synthesize.yaml"), "--model.init_args.output_dir",
            str(tmp_path / "set2"), "--trainer.logger.init_args.save_dir", str(named), "--model.init_args.rounds",
            "1", "--model.init_args.iterations", "2", "--model.init_args.warmup_iterations", "1",
            "--model.init_args.quality_gate", "false", "--data.init_args.images_per_class", "1",
            "--data.init_args.batch_size", "10", cwd=started_in)
    assert list((named / "wandb").glob("offline-run-*")) and not (tmp_path / "set2" / "wandb").exists()
