"""The distillation check's student budget: at how many student steps does real data of a set's size stop
improving, and how far is the shipped synthetic set from it there? (Synthetic data that teaches like real
data, item 1.) Run from the repository root:

    python studies/distillation_budget/run.py            # resumable: one record per (source, images, steps, seed)

Each unit trains the check's student (``experiments/fmnist/distill_check.yaml``: ResNet-8, KD from the
embedded teacher on the augmented batch, T = 3) for a fixed number of steps at batch 64 on one source, then
tests it on the 10,000 real test images:

* ``real``: N images of the real training split, class-balanced and seeded (``data.train_images``), the
  teacher's soft labels (the student never sees a real label), for N = 500, 2,000, 10,000;
* ``pixels``: a set of 500 images by per-image optimisation (``experiments/fmnist/synthesize_pixels.yaml``, the
  shipped default until 2026-12-03; its records were named ``default`` then), one set per seed (synthesis seed =
  the student's seed), as the sweeps make them;
* ``generator``: the same from the meta-learned generator at 20 steps per batch
  (``experiments/fmnist/synthesize.yaml``, the shipped default since 2026-12-03).

``--targets hard`` trains the same students on the teacher's top-1 class instead of its softened distribution
(``model.kd_targets``): the soft-vs-hard ablation of the teacher's labels.

Records: ``records/<source>_<images>_s<steps>[_hard]_seed<seed>.json``; ``results.json`` and ``results.png`` are
rewritten from the records after each unit (``--table_only`` rewrites them without running anything).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dfnas_pl.drivers.commands import versions
from dfnas_pl.drivers.synthetic_sets import PIXELS_CONFIG
from dfnas_pl.stats import t_interval
from dfnas_pl.utils.io import atomic_write_json

HERE = Path(__file__).resolve().parent
RUN = Path("runs/distillation_budget")
CONFIG = "experiments/fmnist/distill_check.yaml"
# Synthetic sources and the synthesis config that makes each one's sets (one file each, so that a source's
# meaning does not move when the shipped default does).
SYNTHESIS = {"pixels": PIXELS_CONFIG, "generator": "experiments/fmnist/synthesize.yaml"}


Unit = tuple[str, int, int, int, str]  # source, images, steps, seed, teacher targets


def units(images: list[int], steps: list[int], seeds: list[int], synthetic: list[str], targets: list[str]) -> list[Unit]:
    out = [("real", n, s, seed, t) for n in images for s in steps for seed in seeds for t in targets]
    out += [(src, 500, s, seed, t) for src in synthetic for s in steps for seed in seeds for t in targets]
    return sorted(out, key=lambda u: u[2])  # cheapest budgets first: a cut-off run still holds whole curves' starts


def record_path(source: str, n: int, steps: int, seed: int, targets: str = "soft") -> Path:
    """Soft-target records keep the names they had before ``--targets`` existed."""
    return HERE / "records" / f"{source}_{n}_s{steps}{'' if targets == 'soft' else '_' + targets}_seed{seed}.json"


def cli(args: list[str], log: Path) -> None:
    env = {**os.environ, "DFNAS_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    with open(log, "ab") as f:
        code = subprocess.run([sys.executable, "-m", "dfnas_pl", *args], env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"exit {code}: python -m dfnas_pl {' '.join(args)}; see {log}")


def synthetic_set(source: str, seed: int) -> Path:
    """One source's set for one seed (made once; the seeds' sets are made one after the other)."""
    out = RUN / f"synthetic_{source}_seed{seed}"
    if not (out / "manifest.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        cli(["fit", "--config", SYNTHESIS[source], "--model.init_args.output_dir", str(out), "--model.init_args.seed", str(seed),
             "--seed_everything", str(seed), "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir",
             str(out), "--trainer.enable_progress_bar", "false"], out / "synthesis.log")
    return out


def run_unit(unit: Unit) -> dict:
    source, n, steps, seed, targets = unit
    out = RUN / f"{source}_{n}" / f"s{steps}{'' if targets == 'soft' else '_' + targets}_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    if source == "real":
        data = ["--data", json.dumps({"class_path": "dfnas_pl.data.FashionMNISTDataModule",
                                      "init_args": {"root": "data", "batch_size": 64, "train_images": n,
                                                    "split_seed": seed}})]
    else:
        data = ["--data.init_args.path", str(synthetic_set(source, seed))]
    ckpt, metrics = out / "checkpoints", out / "metrics.json"
    args = ["--config", CONFIG, *data, "--seed_everything", str(seed), "--trainer.max_steps", str(steps),
            "--trainer.max_epochs", "-1", "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir",
            str(out), "--trainer.callbacks.init_args.dirpath", str(ckpt), "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0", "--model.init_args.metrics_path", str(metrics), "--model.init_args.kd_targets", targets]
    start = time.time()
    resume = ["--ckpt_path", str(ckpt / "last.ckpt")] if (ckpt / "last.ckpt").exists() else []
    cli(["fit", *args, *resume], out / "distill.log")
    cli(["test", *args, "--ckpt_path", str(ckpt / "last.ckpt")], out / "distill.log")
    rec = {"source": source, "images": n, "steps": steps, "seed": seed, "targets": targets, "batch_size": 64,
           "test_top1": json.loads(metrics.read_text())["test_top1"], "seconds": round(time.time() - start, 1)}
    atomic_write_json(record_path(*unit), rec)
    return rec


def summarise(command: str, wall: float) -> dict:
    recs = [json.loads(p.read_text()) for p in sorted((HERE / "records").glob("*.json"))]
    groups: dict[tuple, list[float]] = {}
    for r in recs:
        groups.setdefault((r["source"], r["images"], r["steps"], r.get("targets", "soft")), []).append(100 * r["test_top1"])
    rows = []
    for (source, n, steps, targets), accs in sorted(groups.items()):
        lo, hi = t_interval(accs) if len(accs) > 1 else (float("nan"), float("nan"))
        rows.append({"source": source, "images": n, "steps": steps, "targets": targets, "seeds": len(accs), "per_seed": accs,
                     "mean": statistics.mean(accs), "ci_low": lo, "ci_high": hi})
    old = json.loads((HERE / "results.json").read_text()) if (HERE / "results.json").exists() else {}
    if command.endswith("--table_only") and "command" in old:
        command = old["command"]  # the table is rewritten; the records were made by the run before
    result = {"rows": rows, "student_seconds": round(sum(r["seconds"] for r in recs), 1),
              "wall_seconds": round(old.get("wall_seconds", 0) + wall, 1), "command": command, "versions": versions()}
    atomic_write_json(HERE / "results.json", result)
    plot(rows)
    return result


def plot(rows: list[dict]) -> None:
    from dfnas_pl.search.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (source, n, targets) in sorted({(r["source"], r["images"], r["targets"]) for r in rows}):
        line = sorted((r for r in rows if (r["source"], r["images"], r["targets"]) == (source, n, targets)),
                      key=lambda r: r["steps"])
        ax.errorbar([r["steps"] for r in line], [r["mean"] for r in line],
                    yerr=[[r["mean"] - r["ci_low"] if r["seeds"] > 1 else 0 for r in line],
                          [r["ci_high"] - r["mean"] if r["seeds"] > 1 else 0 for r in line]],
                    marker="o" if source == "real" else "s", capsize=3,
                    linestyle="-" if targets == "soft" else ":",
                    label=f"{'real' if source == 'real' else f'synthetic ({source})'}, {n} images"
                          f"{'' if targets == 'soft' else ', hard targets'}")
    ax.set_xscale("log")
    steps = sorted({r["steps"] for r in rows})
    ax.set_xticks(steps, [f"{s:,}" for s in steps])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("student steps (batch 64)")
    ax.set_ylabel("student real test top-1 (%)")
    ax.set_title("Distillation check: student budget vs source (mean, 95 % t-interval)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, HERE / "results.png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, nargs="+", default=[500, 2000, 10000])
    p.add_argument("--steps", type=int, nargs="+", default=[320, 1280, 5120])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--synthetic", nargs="*", choices=sorted(SYNTHESIS), default=["pixels"],
                   help="synthetic sources of 500 images beside the real ones (none: only the real-data curve)")
    p.add_argument("--targets", nargs="+", choices=["soft", "hard"], default=["soft"],
                   help="the teacher's softened distribution (KD) or its top-1 class")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--table_only", action="store_true")
    a = p.parse_args(argv)
    command = "python studies/distillation_budget/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.time()
    if not a.table_only:
        todo = [u for u in units(a.images, a.steps, a.seeds, a.synthetic, a.targets)
                if not record_path(*u).exists()]
        print(f"{len(todo)} units to run", flush=True)
        for source in sorted({u[0] for u in todo} - {"real"}):
            for seed in a.seeds:
                synthetic_set(source, seed)
        with ThreadPoolExecutor(a.workers) as pool:
            for rec in pool.map(run_unit, todo):
                print(f"{rec['source']} {rec['images']} images, {rec['steps']} steps, {rec['targets']} targets, seed {rec['seed']}: "
                      f"{100 * rec['test_top1']:.2f} % ({rec['seconds']:.0f} s)", flush=True)
                summarise(command, time.time() - start)  # wall time so far: a killed run keeps what it spent
                start = time.time()
    summarise(command, time.time() - start)


if __name__ == "__main__":
    main()
