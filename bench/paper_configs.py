"""What the paper's settings (experiments/cifar10, cifar100, imagenet) cost at full scale, extrapolated
from measured times on this machine.

Each stage is timed at the config's image size and architecture with a randomly initialised teacher of
the paper's architecture (the cost does not depend on the weights):

* synthesis: seconds per inversion iteration of one batch of 50 (in-process, ``ModelInversion.synthesize``;
  the half-resolution warm-up timed apart), times the iterations of the whole config;
* searches and retraining: steady-state seconds per training step through the real CLI and the paper
  config (``bench.timing.TrainLoopTimer``, first step left out; search data: Gaussian noise labelled by
  the teacher, the same compute as a synthetic set), times the steps of the whole config. Batches larger
  than ``--max_batch`` are timed at ``--max_batch`` and scaled linearly (stated in the table);
* SPOS's evolution: forward seconds per image of a sampled path, times the images its candidates see.

    python -m bench.paper_configs --out bench/results.md     (part of make bench)

These are CPU figures: a GPU is tens to hundreds of times faster; no GPU was lent to measure one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from bench.report import machine, write_section
from dfnas_pl.utils.io import atomic_write_json

CIFAR_STATS = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
IMAGENET_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def teacher(dataset: str) -> dict:
    if dataset == "imagenet":
        return {"arch": "torchvision:resnet50", "num_classes": 1000, "in_channels": 3, "image_size": 224,
                **IMAGENET_STATS}
    return {"arch": "resnet34_cifar", "num_classes": 100 if dataset == "cifar100" else 10, "in_channels": 3,
            "image_size": 32, **CIFAR_STATS}


def synthesis_seconds(dataset: str, iterations: int) -> dict[str, float]:
    """Seconds per iteration (full resolution and, for ImageNet, the half-resolution warm-up) of a batch of 50."""
    from dfnas_pl.inversion.module import ModelInversion

    out = {}
    cfg = yaml.safe_load(Path(f"experiments/{dataset}/synthesize.yaml").read_text())
    args = {k: v for k, v in cfg["model"]["init_args"].items() if k not in ("teacher", "output_dir")}
    spec = teacher(dataset)
    targets = torch.nn.functional.one_hot(torch.arange(50) % spec["num_classes"], spec["num_classes"]).float()
    for phase, lowres, full in (("full", 0, iterations), ("lowres", iterations, 1)):
        if phase == "lowres" and not args.get("lowres_iterations"):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            model = ModelInversion(**{**args, "teacher": spec, "output_dir": tmp, "lowres_iterations": lowres,
                                      "iterations": full, "warmup_iterations": 1, "quality_gate": False})
        model.synthesize(targets[:4], torch.Generator().manual_seed(1))  # warm-up
        start = time.perf_counter()
        model.synthesize(targets, torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
        out[phase] = seconds / iterations if phase == "full" else (seconds - out["full"]) / iterations
    return out


def image_folder(root: Path, classes: int, size: int) -> Path:
    from PIL import Image

    for split in ("train", "test", "val"):
        for k in range(classes):
            (root / split / f"c{k:04d}").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (size, size), (k % 256, 0, 0)).save(root / split / f"c{k:04d}" / "0.png")
    return root


def cli_step_seconds(args: list[str], tmp: Path, name: str, steps: int) -> float:
    """Steady-state seconds per training step of ``python -m dfnas_pl fit <args>`` (steps 2..steps)."""
    timer = tmp / f"timer_{name}"
    cmd = [sys.executable, "-m", "dfnas_pl", "fit", *args, "--trainer.logger", "false", "--trainer.accelerator", "cpu",
           "--trainer.enable_progress_bar", "false", "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
           "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
           "--trainer.callbacks+=bench.timing.TrainLoopTimer", "--trainer.callbacks.out", str(timer),
           "--trainer.callbacks.mode", "steps"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    record = json.loads((timer / "rank0.json").read_text())
    return record["seconds"] / record["steps"]


def noise_search(dataset: str, config: str, batch: int) -> list[str]:
    spec = teacher(dataset)
    size = spec["image_size"]
    return ["--config", config, "--data.init_args.source", "noise", "--data.init_args.noise_images", str(4 * batch),
            "--data.init_args.image_shape", json.dumps([3, size, size]), "--data.init_args.batch_size", str(batch),
            "--data.init_args.num_workers", "0", "--data.init_args.val_fraction", "0.5",
            "--data.init_args.real_data", "null", "--model.init_args.teacher", json.dumps(spec)]


def architecture_file(config: str, out: Path) -> Path:
    """A sampled architecture of the config's search space, written as a search would."""
    from dfnas_pl.search.darts_space import DartsSpaceConfig
    from dfnas_pl.search.export import write_architecture
    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig
    from dfnas_pl.search.space_registry import space_sampler

    init = yaml.safe_load(Path(config).read_text())["model"]["init_args"]
    space = dict(init["space"])
    if "family" in space:
        cfg, name, size = LayerwiseSpaceConfig.from_dict(space), space["family"], space["image_size"]
    else:
        cfg, name, size = DartsSpaceConfig(**space), "darts", init["image_size"]
    sampler = space_sampler(name, {**dataclasses.asdict(cfg), "image_size": size})
    choices = sampler.draw(random.Random(0))
    write_architecture(out, "sampled", name, cfg, size, choices)
    return out


def forward_seconds_per_image(architecture: Path, size: int, batch: int = 32) -> float:
    from dfnas_pl.search.export import build_from_architecture

    model = build_from_architecture(architecture).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        model(x[:2])
        start = time.perf_counter()
        model(x)
    return (time.perf_counter() - start) / batch


def measure(max_batch: int, iterations: int, steps: int, records: Path) -> list[dict]:
    """Every row, each saved to ``records`` as soon as it is measured; a rerun with the same settings keeps
    the rows there and measures only the missing ones (a killed benchmark resumes)."""
    settings = {"max_batch": max_batch, "iterations": iterations, "steps": steps}
    saved = json.loads(records.read_text()) if records.exists() else {}
    done = {(r["setting"], r["stage"]): r for r in saved.get("rows", [])} if saved.get("settings") == settings else {}
    rows: list[dict] = []

    def keep(row: dict) -> None:  # a new measurement, saved at once with every other one
        rows.append(row)
        print(row, flush=True)
        done[(row["setting"], row["stage"])] = row
        atomic_write_json(records, {"settings": settings, "rows": list(done.values())})

    def reuse(setting: str, stage: str) -> bool:  # measured by an earlier invocation: keep it
        if (setting, stage) in done:
            rows.append(done[(setting, stage)])
        return (setting, stage) in done

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for dataset, batches_per_round, its, lowres in (("cifar10", 10, 2000, 0), ("cifar100", 10, 2000, 0),
                                                        ("imagenet", 20, 3000, 2000)):
            if reuse(dataset, "synthesis"):
                continue
            sec = synthesis_seconds(dataset, iterations)
            total = 10 * batches_per_round * (its * sec["full"] + lowres * sec.get("lowres", 0.0))
            keep({"setting": dataset, "stage": "synthesis", "unit": "iteration (batch 50)",
                         "measured_s": sec["full"], "lowres_s": sec.get("lowres"),
                         "count": 10 * batches_per_round * (its + lowres), "hours": total / 3600,
                         "note": f"10 rounds x {batches_per_round} batches x {its} it"
                                 + (f" + {lowres} half-res it (timed apart: {sec['lowres']:.2f} s)" if lowres else "")})
        # searches: (setting, config, batch of the config, steps at full scale, note)
        searches = [("cifar10", "experiments/cifar10/search_darts.yaml", 64, 50 * (2500 // 64),
                     "50 epochs x 39 steps (2,500 search-train images)"),
                    ("imagenet", "experiments/imagenet/search_spos.yaml", 1024, 150_000, "150,000 steps"),
                    ("imagenet", "experiments/imagenet/search_proxylessnas.yaml", 256, 150 * (5000 // 256),
                     "150 epochs x 19 steps (5,000 search-train images)")]
        for dataset, config, batch, count, note in searches:
            stage = Path(config).stem.replace("search_", "search ")
            if reuse(dataset, stage):
                continue
            timed = min(batch, max_batch)
            sec = cli_step_seconds(noise_search(dataset, config, timed) + [
                "--model.init_args.output_dir", str(tmp / Path(config).stem),
                "--trainer.default_root_dir", str(tmp / Path(config).stem),
                "--trainer.callbacks.init_args.dirpath", str(tmp / Path(config).stem / "ckpt")]
                + (["--model.init_args.evolution", "false"] if "spos" in config else [])
                + (["--model.init_args.warmup_epochs", "0"] if "proxyless" in config else []),
                tmp, Path(config).stem, steps) * batch / timed
            keep({"setting": dataset, "stage": stage,
                  "unit": f"step (batch {batch}" + (f", timed at {timed} and scaled)" if timed < batch else ")"),
                  "measured_s": sec, "count": count, "hours": sec * count / 3600, "note": note})
        if not reuse("imagenet", "spos evolution"):
            arch = architecture_file("experiments/imagenet/search_spos.yaml", tmp / "spos_arch.json")
            per_image = forward_seconds_per_image(arch, 224)
            images = 50 * 20 * (25 * 1024 + 8000)
            keep({"setting": "imagenet", "stage": "spos evolution", "unit": "forward per image",
                  "measured_s": per_image, "count": images, "hours": per_image * images / 3600,
                  "note": "1,000 candidates x (25 BN batches of 1,024 + 8,000 val images)"})
        # retraining on real data of the right size (a generated ImageFolder)
        cifar = image_folder(tmp / "cifar", 10, 32)
        imagenet = image_folder(tmp / "imagenet", 4, 64)
        retrains = [("cifar10", "experiments/cifar10/search_darts.yaml", "experiments/cifar10/retrain.yaml", 96,
                     600 * (45_000 // 96), "600 epochs x 468 steps (45,000 images)", cifar, {"crop_padding": 4}),
                    ("imagenet", "experiments/imagenet/search_spos.yaml", "experiments/imagenet/retrain.yaml", 1024,
                     300_000, "300,000 steps", imagenet, {"test_split": "val", "image_size": 224, "crop": "imagenet"})]
        for dataset, search_config, config, batch, count, note, root, extra in retrains:
            if reuse(dataset, "retrain"):
                continue
            timed = min(batch, max_batch)
            arch = architecture_file(search_config, tmp / f"{dataset}_arch.json")
            stats = IMAGENET_STATS if dataset == "imagenet" else CIFAR_STATS
            data = {"class_path": "dfnas_pl.data.VisionDataModule",
                    "init_args": {"dataset": "ImageFolder", "root": str(root), "val_size": 1, "batch_size": timed,
                                  "num_workers": 0, **stats, **extra}}
            reps = math.ceil(timed * (steps + 1) / len(list((root / "train").glob("*/*.png"))))
            for png in list((root / "train").glob("*/0.png")):  # enough images for the timed steps
                for r in range(1, reps + 1):
                    (png.parent / f"{r}.png").write_bytes(png.read_bytes())
            classes = len(list((root / "train").iterdir()))  # a 4-class head for the 4 generated ImageNet classes
            sec = cli_step_seconds(["--config", config, "--model.init_args.architecture", str(arch),
                                    "--model.init_args.space_overrides", json.dumps({"num_classes": classes}),
                                    "--data", json.dumps(data), "--trainer.default_root_dir", str(tmp / f"rt_{dataset}"),
                                    "--trainer.callbacks.init_args.dirpath", str(tmp / f"rt_{dataset}" / "ckpt")],
                                   tmp, f"retrain_{dataset}", steps) * batch / timed
            keep({"setting": dataset, "stage": "retrain", "unit": f"step (batch {batch}" + (
                f", timed at {timed} and scaled)" if timed < batch else ")"), "measured_s": sec, "count": count,
                  "hours": sec * count / 3600, "note": note})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results.md"))
    p.add_argument("--max_batch", type=int, default=64, help="time larger batches at this size, scaled linearly")
    p.add_argument("--iterations", type=int, default=3, help="synthesis iterations timed per phase")
    p.add_argument("--steps", type=int, default=4, help="training steps run per CLI case (the first is left out)")
    a = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.time()
    json_path = a.out.with_name("paper_configs.json")
    rows = measure(a.max_batch, a.iterations, a.steps, json_path)
    load = os.getloadavg()[0]
    lines = ["## The paper's settings: cost at full scale (extrapolated, CPU)", "",
             f"Machine: {machine()}; load average {load:.1f} at the end (other jobs running inflate the times).",
             f"Command: `python -m bench.paper_configs --max_batch {a.max_batch} --iterations {a.iterations} "
             f"--steps {a.steps}` ({time.strftime('%Y-%m-%d')}; resumable: rows already in {json_path.name} are "
             f"kept, this invocation took {time.time() - start:.0f} s). Random-init teachers "
             f"of the paper's architectures; times x the config's full count. No GPU figure: none was lent.", "",
             "| setting | stage | unit | measured s/unit | units at full scale | CPU hours | what the count is |",
             "|---|---|---|---:|---:|---:|---|"]
    lines += [f"| {r['setting']} | {r['stage']} | {r['unit']} | {r['measured_s']:.3g} | {r['count']:,} | "
              f"{r['hours']:,.0f} | {r['note']} |" for r in rows]
    write_section(a.out, lines)
    atomic_write_json(json_path, {"settings": {"max_batch": a.max_batch, "iterations": a.iterations, "steps": a.steps},
                                  "rows": rows, "machine": machine(), "load_average": load,
                                  "command": " ".join(sys.argv), "seconds": round(time.time() - start)})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
