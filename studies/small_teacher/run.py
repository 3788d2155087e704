"""What a small teacher of a user's own gives: train SmallNet on Fashion-MNIST (the user's side), then run
README's commands on it as a user would (synthesis with a teacher mapping, then the distillation check),
and write results.json beside this file. Run from the repository root:

    python studies/small_teacher/run.py

About 15 minutes on 2 cores; intermediate outputs go to runs/small_teacher/ (not committed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from smallnet import SmallNet  # noqa: E402

from dfnas_pl.data.vision import VisionDataModule  # noqa: E402
from dfnas_pl.drivers.commands import versions  # noqa: E402
from dfnas_pl.utils.io import atomic_write_json  # noqa: E402

RUN = Path("runs/small_teacher")
MEAN, STD = [0.286], [0.353]
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def accuracy(net: nn.Module, loader) -> float:
    net.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((net(x).argmax(1) == y).sum())
            total += len(y)
    return right / total


def train_teacher(epochs: int = 2) -> tuple[Path, float]:
    torch.manual_seed(0)
    dm = VisionDataModule("FashionMNIST", root="data", batch_size=128, mean=MEAN, std=STD)
    dm.setup("fit")
    net = SmallNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * len(dm.train_dataloader())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=steps)
    for _ in range(epochs):
        net.train()
        for x, y in dm.train_dataloader():
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            sched.step()
    dm.setup("test")
    top1 = accuracy(net, dm.test_dataloader())
    path = RUN / "smallnet.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path, top1


def cli(*args: str) -> str:
    # the teacher's class is importable as smallnet.SmallNet, as a user's own package would be
    proc = subprocess.run([sys.executable, "-m", "dfnas_pl", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(HERE)})
    if proc.returncode:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-4000:])
    return proc.stdout + proc.stderr


def main() -> None:
    start = time.time()
    weights, teacher_top1 = train_teacher()
    print(f"teacher: real test top-1 {teacher_top1:.4f} ({sum(p.numel() for p in SmallNet().parameters())} params)")
    teacher = json.dumps({"path": str(weights), "arch": "smallnet.SmallNet", "in_channels": 1, "image_size": 28,
                          "mean": MEAN, "std": STD, "class_names": CLASSES})
    synthetic = RUN / "synthetic"
    cli("fit", "--config", "experiments/fmnist/synthesize_pixels.yaml", "--model.init_args.teacher", teacher,  # as run
        "--model.init_args.output_dir", str(synthetic))
    check = RUN / "distill_check"
    common = ["--config", "studies/synthesis_quality/distill_check_40_epochs.yaml",  # as the study ran it
              "--model.init_args.teacher", teacher,
              "--data.init_args.path", str(synthetic), "--trainer.default_root_dir", str(check),
              "--trainer.logger.init_args.save_dir", str(check),
              "--trainer.callbacks.init_args.dirpath", str(check / "checkpoints"),
              "--model.init_args.metrics_path", str(check / "metrics.json")]
    cli("fit", *common)
    out = cli("test", *common, "--ckpt_path", str(check / "checkpoints" / "last.ckpt"))
    student = json.loads((check / "metrics.json").read_text())["test_top1"]
    manifest = json.loads((synthetic / "manifest.json").read_text())
    shutil.copyfile(synthetic / "grids" / "round_00.png", HERE / "grid_round_00.png")
    atomic_write_json(HERE / "results.json", {
        "teacher": {"class": "studies/small_teacher/smallnet.py:SmallNet", "params": sum(
            p.numel() for p in SmallNet().parameters()), "trained": "2 epochs, 55,000 real images, SGD one-cycle 0.2",
            "real_test_top1": round(teacher_top1, 4)},
        "synthetic_set": {"images": manifest["images"], "config": "experiments/fmnist/synthesize_pixels.yaml (the shipped default when measured)"},
        "distillation_check": {"student": "resnet8", "config": "studies/synthesis_quality/distill_check_40_epochs.yaml",
                               "real_test_top1": student},
        "wall_seconds": round(time.time() - start), "versions": versions(),
        "command": "python studies/small_teacher/run.py", "tail": out[-300:]})
    print(f"student (resnet8, data-free KD from 500 synthetic images): real test top-1 {student:.4f}")


if __name__ == "__main__":
    main()
