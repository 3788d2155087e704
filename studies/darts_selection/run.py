"""DARTS selection: the alpha rule, perturbation-based selection and random cells, retrained at one budget.

Reads the DARTS searches of studies/search_health (shipped config, ``selection: perturbation``, so each search
exported both cells from the same supernet) at ``--epochs``; for each search seed writes three architectures:
the alpha rule's cell, the perturbation cell, and a uniformly random cell of the same space within 5 % of the
perturbation cell's FLOPs (seeded by the search seed); retrains each with the shipped recipe
(experiments/fmnist/retrain.yaml, make run's budget) and tests it on the real test set.

    python studies/darts_selection/run.py --epochs 6 --seeds 0 1 2 3

Each retraining is a record (``records/e<epochs>_s<seed>_<kind>.json``); a killed run redoes only what has none.
Writes ``darts_selection.md`` with paired t-intervals over search seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dfnas_pl.drivers.commands import versions
from dfnas_pl.search.darts_space import count_parameter_free
from dfnas_pl.search.export import read_architecture, write_architecture
from dfnas_pl.search.random_arch import random_like
from dfnas_pl.stats import t_interval
from dfnas_pl.utils.io import atomic_write_bytes, atomic_write_json

HERE = Path(__file__).resolve().parent
HEALTH = HERE.parent / "search_health" / "records"
RETRAIN_CONFIG = "experiments/fmnist/retrain.yaml"
KINDS = ("alpha", "perturbation", "random")


def architectures(epochs: int, seed: int, run: Path) -> dict[str, Path]:
    rec = json.loads((HEALTH / f"darts_e{epochs}_s{seed}.json").read_text())
    found = read_architecture(rec["architecture"])
    cfg = {k: v for k, v in found["space_config"].items() if k != "image_size"}
    size = found["space_config"]["image_size"]
    out = {}
    for kind in KINDS:
        path = run / f"e{epochs}_s{seed}" / kind / "architecture.json"
        if not path.exists():
            if kind == "random":
                choices, _ = random_like(found, seed=seed, exclude_reference=True)
            else:
                choices = found["choices"] if kind == "perturbation" else found["alpha_genotype"]
            write_architecture(path, f"darts_{kind}", "darts", cfg, size, choices, search=rec["architecture"])
        out[kind] = path
    return out


def retrain(arch: Path, seed: int, record: Path, fmnist_root: str) -> dict:
    if record.exists():
        return json.loads(record.read_text())
    out = arch.parent / "retrain"
    metrics, ckpt = out / "metrics.json", out / "checkpoints"
    args = ["--config", RETRAIN_CONFIG, "--seed_everything", str(seed), "--model.init_args.architecture", str(arch),
            "--model.init_args.metrics_path", str(metrics), "--data.init_args.root", fmnist_root,
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(out), "--trainer.callbacks.init_args.dirpath", str(ckpt)]
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "retrain.log", "ab") as log:
        for sub in (["fit", *args], ["test", *args, "--ckpt_path", str(ckpt / "last.ckpt")]):
            code = subprocess.run([sys.executable, "-m", "dfnas_pl", *sub], stdout=log, stderr=subprocess.STDOUT).returncode
            if code != 0:
                raise SystemExit(f"Retraining {arch} failed (exit {code}); see {out / 'retrain.log'}.")
    m = json.loads(metrics.read_text())
    a = read_architecture(arch)
    rec = {"architecture": str(arch), "choices": a["choices"], "flops": a["flops"], "params": a["params"],
           "parameter_free_normal": count_parameter_free(a["choices"]["normal"]), "test_top1": m["test_top1"],
           "retrain_seed": seed, "seconds": round(time.time() - start, 1),
           "command": " ".join(["python -m dfnas_pl fit", *args]), "versions": versions()}
    atomic_write_json(record, rec)
    return rec


def interval(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{statistics.mean(xs):+.2f}" if xs else "-"
    lo, hi = t_interval(xs)
    return f"{statistics.mean(xs):+.2f} [{lo:+.2f}, {hi:+.2f}]"


def report(epochs: int, seeds: list[int]) -> str:
    recs = {(s, k): json.loads(p.read_text()) for s in seeds for k in KINDS
            if (p := HERE / "records" / f"e{epochs}_s{s}_{k}.json").exists()}
    done = [s for s in seeds if all((s, k) in recs for k in KINDS)]
    lines = [f"DARTS at {epochs} epochs, retrained with {RETRAIN_CONFIG}, search seeds {done}:", "",
             "| cell | real test top-1 (%), mean | per seed | MFLOPs (mean) | parameter-free ops in the normal cell |",
             "|---|---:|---|---:|---|"]
    for k in KINDS:
        xs = [100 * recs[s, k]["test_top1"] for s in done]
        if xs:
            lines.append(f"| {k} | {statistics.mean(xs):.2f} | {' / '.join(f'{x:.2f}' for x in xs)} | "
                         f"{statistics.mean(recs[s, k]['flops'] for s in done) / 1e6:.2f} | "
                         f"{' / '.join(str(recs[s, k]['parameter_free_normal']) for s in done)} |")
    lines += ["", "| paired difference (points) | mean [95 % t-interval over search seeds] |", "|---|---|"]
    for a, b in (("perturbation", "alpha"), ("perturbation", "random"), ("alpha", "random")):
        lines.append(f"| {a} - {b} | {interval([100 * (recs[s, a]['test_top1'] - recs[s, b]['test_top1']) for s in done])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, required=True, help="the DARTS budget of the search_health records")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3], help="search seeds")
    p.add_argument("--retrain_seed", type=int, default=0)
    p.add_argument("--fmnist_root", default="data")
    p.add_argument("--run_dir", default="runs/darts_selection")
    p.add_argument("--table_only", action="store_true")
    a = p.parse_args(argv)
    if not a.table_only:
        for seed in a.seeds:
            if not (HEALTH / f"darts_e{a.epochs}_s{seed}.json").exists():
                print(f"No search_health record for DARTS at {a.epochs} epochs, seed {seed}: run "
                      f"studies/search_health/run.py --algorithms darts --epochs {a.epochs} --seeds {seed} first.")
                continue
            for kind, arch in architectures(a.epochs, seed, Path(a.run_dir)).items():
                rec = retrain(arch, a.retrain_seed, HERE / "records" / f"e{a.epochs}_s{seed}_{kind}.json",
                              a.fmnist_root)
                print(f"seed {seed} {kind}: {100 * rec['test_top1']:.2f} % ({rec['flops'] / 1e6:.2f} MFLOPs)", flush=True)
    text = report(a.epochs, a.seeds)
    atomic_write_bytes(HERE / f"darts_selection_e{a.epochs}.md", (text + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
