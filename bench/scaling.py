"""DDP scaling on this machine: 1 process vs 2 processes (one thread each), through the real CLI.

* Synthesis: images synthesised per second (``ddp_nosync``: every process inverts its own image ids),
  the same set of images either way (strong scaling).
* Supernet training, per algorithm: training steps per second and samples per second (each process
  keeps its batch size: weak scaling, as DDP is used), gradients all-reduced over gloo.
* Peak RSS per process.

Times come from ``bench.timing.TrainLoopTimer``: synthesis, the whole training loop; supernets, the
steady-state steps (first step and end-of-epoch exports left out). Process start, imports and the
DDP rendezvous are left out: they do not grow with a run's length.

    python -m bench.scaling --out bench/results.md     (part of make bench)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import machine, write_section

SEARCH_STRATEGY = {"darts": "ddp", "proxylessnas": "ddp_find_unused_parameters_true",
                   "spos": "ddp_find_unused_parameters_true"}


def run(args: list[str], devices: int, strategy: str, timer_dir: Path, mode: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DFNAS_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "dfnas_pl", *args, "--trainer.logger", "false", "--trainer.enable_progress_bar",
           "false", "--trainer.devices", str(devices), "--trainer.strategy", strategy if devices > 1 else "auto",
           "--trainer.callbacks+=bench.timing.TrainLoopTimer", "--trainer.callbacks.out", str(timer_dir),
           "--trainer.callbacks.mode", mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return [json.loads(p.read_text()) for p in sorted(timer_dir.glob("rank*.json"))]


def synthesis_case(tmp: Path, devices: int, images_per_class: int, iterations: int) -> dict:
    out = tmp / f"synthetic_{devices}"
    ranks = run(["fit", "--config", "experiments/fmnist/synthesize.yaml", "--model.init_args.output_dir", str(out),
                 "--model.init_args.quality_gate", "false",  # a speed benchmark, not a set to keep
                 "--model.init_args.rounds", "1", "--model.init_args.iterations", str(iterations),
                 "--data.init_args.images_per_class", str(images_per_class), "--data.init_args.batch_size", "50",
                 "--trainer.default_root_dir", str(tmp)], devices, "ddp_nosync", tmp / f"timer_synthesis_{devices}", "loop")
    images = json.loads((out / "manifest.json").read_text())["images"]
    seconds = max(r["seconds"] for r in ranks)
    return {"stage": "synthesis", "processes": devices, "seconds": seconds, "images": images,
            "throughput": images / seconds, "unit": "images/s", "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks),
            "data": out}


def search_case(tmp: Path, algorithm: str, devices: int, batches: int) -> dict:
    """Noise images with the teacher's soft labels: the same compute per step as a synthetic set, and as
    many images as the step count needs without a long synthesis first."""
    out = tmp / f"{algorithm}_{devices}"
    images = 2 * 2 * 32 * (batches + 2)  # search-train half, split over up to 2 processes
    ranks = run(["fit", "--config", f"experiments/fmnist/search_{algorithm}.yaml", "--data.init_args.source", "noise",
                 "--data.init_args.noise_images", str(images),
                 "--model.init_args.output_dir", str(out), "--trainer.default_root_dir", str(out),
                 "--trainer.callbacks.init_args.dirpath", str(out / "checkpoints"), "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", str(batches), "--trainer.limit_val_batches", "0",
                 # a speed benchmark on noise: its one-epoch supernet cannot choose, which is not what is timed
                 "--model.init_args.export_unhealthy", "true",
                 "--model.init_args.warmup_epochs" if algorithm == "proxylessnas" else "--trainer.log_every_n_steps",
                 "0" if algorithm == "proxylessnas" else "5"], devices, SEARCH_STRATEGY[algorithm],
                tmp / f"timer_{algorithm}_{devices}", "steps")
    seconds = max(r["seconds"] for r in ranks)
    steps = ranks[0]["steps"]
    return {"stage": f"{algorithm} supernet", "processes": devices, "seconds": seconds, "steps": steps,
            "steps_per_s": steps / seconds, "throughput": steps * 32 * devices / seconds, "unit": "samples/s",
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images_per_class", type=int, default=20, help="synthesis: images per class (1 round)")
    parser.add_argument("--iterations", type=int, default=100, help="synthesis: iterations per batch of 50")
    parser.add_argument("--batches", type=int, default=20, help="supernet steps per process (batch 32)")
    parser.add_argument("--algorithms", nargs="*", default=["darts", "proxylessnas", "spos"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for devices in (1, 2):
            rows.append(synthesis_case(tmp, devices, args.images_per_class, args.iterations))
            print(rows[-1], flush=True)
        for algorithm in args.algorithms:
            for devices in (1, 2):
                rows.append(search_case(tmp, algorithm, devices, args.batches))
                print(rows[-1], flush=True)
    lines = ["## DDP scaling: 1 vs 2 processes (one thread each)", "",
             f"Machine: {machine()}.",
             f"Command: `python -m bench.scaling --images_per_class {args.images_per_class} --iterations "
             f"{args.iterations} --batches {args.batches}` ({time.strftime('%Y-%m-%d')}); CPU, gloo, "
             "OMP_NUM_THREADS=1 per process. Seconds: synthesis, the training loop; supernets, the steps after the "
             "first (bench/timing.py).", "",
             "| stage | processes | seconds | throughput | steps/s per process | scaling | peak RSS MiB per process |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(rows):
        base = rows[i - 1] if r["processes"] == 2 else r
        steps = f"{r['steps_per_s']:.2f}" if "steps_per_s" in r else "-"
        lines.append(f"| {r['stage']} | {r['processes']} | {r['seconds']:.1f} | {r['throughput']:.1f} {r['unit']} | "
                     f"{steps} | {r['throughput'] / base['throughput']:.2f}x | {r['peak_rss_mib']:.0f} |")
    lines += ["", "scaling = throughput / the 1-process throughput of the same stage. Synthesis: the same 200 "
              "images either way; supernets: batch 32 per process, so 2 processes see twice the samples per step."]
    print("\n".join(lines))
    if args.out:
        write_section(args.out, lines)
        print(f"Results written to {args.out}")


if __name__ == "__main__":
    main()
