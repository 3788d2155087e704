"""The DARTS collapse and the P-DARTS guard, measured (issue 14, item 3).

For each data source (real Fashion-MNIST training images with their labels, a synthetic set by KD) and search seed, one DARTS
search with the shipped config (``experiments/fmnist/search_darts.yaml``) records per epoch the
parameter-free ops of the normal cell the plain DARTS rule would export and the alpha entropy. The
guard (``max_parameter_free_normal``) only changes the *export* - the search itself is the same - so
both exports come from the same final alphas: the plain rule, and at most ``--guard`` parameter-free
ops. Each export is then retrained with the shipped recipe (``experiments/fmnist/retrain.yaml``) for
each retraining seed and tested on the real test set. Every (source, seed) search and every retraining
writes its own record under ``studies/darts_collapse/records/``; a killed run redoes only what has
none.

    python studies/darts_collapse/run.py --synthetic runs/fmnist/synthetic     (make darts-collapse; make synthesize first)

Writes studies/darts_collapse/darts_collapse.{md,json} (with the command, wall time and versions).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dfnas_pl.drivers.commands import versions
from dfnas_pl.search.darts_space import DartsSpaceConfig, count_parameter_free, derive_genotype
from dfnas_pl.search.export import write_architecture
from dfnas_pl.stats import t_interval
from dfnas_pl.utils.io import atomic_write_bytes, atomic_write_json

SEARCH_CONFIG = "experiments/fmnist/search_darts.yaml"
RETRAIN_CONFIG = "experiments/fmnist/retrain.yaml"


def tagged(stem: str, tag: str) -> str:
    """A record's, run folder's or summary's name under a search setting (the shipped config's has no suffix)."""
    return f"{stem}_{tag}" if tag else stem


def cli(args: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        code = subprocess.run([sys.executable, "-m", "dfnas_pl", *args], stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"dfnas_pl {' '.join(args[:3])} ... failed (exit {code}); see {log}.")


def search(run: Path, source: str, synthetic: str, seed: int, images: int, name: str,
           overrides: list[str]) -> Path:
    out = run / "search" / name
    if not (out / "architecture.json").exists():
        ckpt = out / "checkpoints"
        resume = ["--ckpt_path", str(ckpt / "last.ckpt")] if (ckpt / "last.ckpt").exists() else []
        cli(["fit", "--config", SEARCH_CONFIG, "--seed_everything", str(seed), "--data.init_args.source", source,
             "--data.init_args.path", synthetic, "--model.init_args.output_dir", str(out),
             "--model.init_args.max_parameter_free_normal", "null", "--trainer.logger", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(out),
             "--trainer.callbacks.init_args.dirpath", str(ckpt),
             # real: labels (cross-entropy), as many images as the synthetic set has (the same budget)
             *(["--model.init_args.teacher", "null", "--data.init_args.max_images", str(images)] if source == "real"
               else []),
             *overrides, *resume], out / "search.log")
    return out / "architecture.json"


def guarded_export(plain: Path, guard: int) -> Path:
    """The same search's alphas exported with at most ``guard`` parameter-free ops in the normal cell."""
    record = json.loads(plain.read_text())
    cfg = {k: v for k, v in record["space_config"].items() if k != "image_size"}
    space = DartsSpaceConfig(**{**cfg, "primitives": tuple(cfg["primitives"])})
    normal = derive_genotype(torch.tensor(record["alphas"]["normal"]), space, guard)
    path = plain.with_name(f"architecture_guard{guard}.json")
    if not path.exists():
        write_architecture(path, "darts", "darts", space, record["space_config"]["image_size"],
                           {"normal": normal, "reduce": record["choices"]["reduce"]}, alphas=record["alphas"],
                           max_parameter_free_normal=guard)
    return path


def set_settings(path: str) -> dict[str, Any]:
    """The synthesis settings of a set that decide what it is, from its manifest."""
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    return {"images": manifest["images"], **{k: manifest["config"].get(k) for k in (
        "label_calibration", "regional_update", "r_feature", "first_bn_multiplier", "rounds", "iterations", "seed")}}


def retrain(arch: Path, seed: int, fmnist_root: str) -> float:
    out = arch.parent / f"retrain_{arch.stem}_seed{seed}"
    metrics = out / "metrics.json"
    if not metrics.exists():
        ckpt = out / "checkpoints"
        args = ["--config", RETRAIN_CONFIG, "--seed_everything", str(seed), "--model.init_args.architecture", str(arch),
                "--model.init_args.metrics_path", str(metrics), "--data.init_args.root", fmnist_root,
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", str(out), "--trainer.callbacks.init_args.dirpath", str(ckpt)]
        resume = ["--ckpt_path", str(ckpt / "last.ckpt")] if (ckpt / "last.ckpt").exists() else []
        cli(["fit", *args, *resume], out / "retrain.log")
        cli(["test", *args, "--ckpt_path", str(ckpt / "last.ckpt")], out / "retrain.log")
    return json.loads(metrics.read_text())["test_top1"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", required=True, help="the synthetic set DARTS searches on (source 'synthetic')")
    p.add_argument("--sources", nargs="+", default=["real", "synthetic"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="search seeds")
    p.add_argument("--retrain_seeds", nargs="+", type=int, default=[0], help="retraining seeds per export")
    p.add_argument("--guard", type=int, default=2, help="P-DARTS cap on parameter-free normal-cell ops")
    p.add_argument("--fmnist_root", default="data")
    p.add_argument("--search_overrides", type=shlex.split, default=[],
                   help="extra search CLI arguments of every search, one quoted string, e.g. "
                        "--search_overrides='--model.init_args.alpha_lr 0.03' (give them a --tag: records are kept "
                        "apart per tag)")
    p.add_argument("--tag", default="", help="suffix of this setting's records and run folders, e.g. alpha_lr0.03")
    p.add_argument("--compare_with", default=None, metavar="TAG",
                   help="also report this setting minus another one's records ('' = the shipped config), paired by "
                        "source, search seed and retraining seed")
    p.add_argument("--run_dir", default="runs/darts_collapse")
    p.add_argument("--out", default="studies/darts_collapse")
    a = p.parse_args(argv)
    if a.search_overrides and not a.tag:
        raise SystemExit("--search_overrides change the search: give them a --tag, so that their records do not mix "
                         "with the shipped config's.")
    run, out, started = Path(a.run_dir), Path(a.out), time.time()
    rows = []
    for source in a.sources:
        for seed in a.seeds:
            name = tagged(f"{source}_seed{seed}", a.tag)
            record_path = out / "records" / f"{name}.json"
            old = json.loads(record_path.read_text()) if record_path.exists() else None
            if old and old.get("search_overrides", []) != a.search_overrides:
                raise SystemExit(f"{record_path} was made with search overrides {old.get('search_overrides', [])}, not "
                                 f"{a.search_overrides}: use another --tag, or delete the record to remake it.")
            if old and all(str(s) in e["top1"] for e in old["exports"].values() for s in a.retrain_seeds):
                rows.append(old)
                continue
            # no record, or one without some of the retraining seeds asked for: the search and the finished
            # retrainings are reused from their run folders, only the missing retrainings run
            t0 = time.time() - (old["seconds"] if old else 0.0)
            images = json.loads((Path(a.synthetic) / "manifest.json").read_text())["images"]
            plain = search(run, source, a.synthetic, seed, images, name, a.search_overrides)
            guarded = guarded_export(plain, a.guard)
            history = json.loads((plain.parent / "genotype_history.json").read_text())
            exports = {}
            for name, arch in (("plain", plain), (f"guard{a.guard}", guarded)):
                rec = json.loads(arch.read_text())
                known = old["exports"][name]["top1"] if old else {}  # retrainings a record already holds
                exports[name] = {"parameter_free_normal": count_parameter_free(rec["choices"]["normal"]),
                                 "flops": rec["flops"], "params": rec["params"], "normal": rec["choices"]["normal"],
                                 "top1": {**known, **{str(s): retrain(arch, s, a.fmnist_root) for s in a.retrain_seeds
                                                      if str(s) not in known}}}
            row = {"source": source, "seed": seed, "tag": a.tag, "search_overrides": a.search_overrides,
                   "synthetic_set": a.synthetic if source == "synthetic" else None,
                   # what the set was made with (its path alone says nothing once the default moves)
                   "synthetic_settings": set_settings(a.synthetic) if source == "synthetic" else None,
                   "per_epoch": [{k: h[k] for k in ("epoch", "parameter_free_normal_unguarded", "alpha_entropy_normal",
                                                    "alpha_entropy_reduce") if k in h} for h in history],
                   "exports": exports, "seconds": round(time.time() - t0, 1)}
            atomic_write_json(record_path, row)
            rows.append(row)
            print(f"{source} seed {seed}: plain {exports['plain']['parameter_free_normal']} parameter-free, top-1 "
                  f"{exports['plain']['top1']}; guard {exports[f'guard{a.guard}']['top1']}", flush=True)
    write_summary(out, rows, a, time.time() - started, argv)


def top1_by_pair(rows: list[dict[str, Any]], source: str, export: str) -> dict[tuple[int, str], float]:
    """Test top-1 (%) of one export per (search seed, retraining seed) of one source."""
    return {(r["seed"], s): 100 * v for r in rows if r["source"] == source
            for s, v in r["exports"].get(export, {}).get("top1", {}).items()}


def paired_difference(a: dict[tuple[int, str], float], b: dict[tuple[int, str], float]) -> dict[str, Any] | None:
    """a - b over the (search seed, retraining seed) pairs both hold: the same search data, data order and
    retraining seed on both sides, so seed noise common to both cancels. None under 2 pairs."""
    diffs = [a[k] - b[k] for k in sorted(a.keys() & b.keys())]
    return mean_interval(diffs) if len(diffs) >= 2 else None


def mean_interval(values: list[float]) -> dict[str, Any]:
    """Mean, 95 % t-interval and count: one shape for every summary number of this benchmark."""
    lo, hi = t_interval(values)
    return {"mean": statistics.mean(values), "ci_low": lo, "ci_high": hi, "n": len(values)}


def tagged_records(out: Path, tag: str) -> list[dict[str, Any]]:
    """The records one search setting made (the shipped config's have the tag '')."""
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    return [r for r in records if r.get("tag", "") == tag]


def write_summary(out: Path, rows: list[dict[str, Any]], a: argparse.Namespace, wall: float,
                  argv: list[str] | None) -> None:
    guard = f"guard{a.guard}"
    lines = ["# DARTS collapse and the P-DARTS guard" + (f" ({a.tag}: {' '.join(a.search_overrides)})" if a.tag else ""),
             "",
             f"Command: `python studies/darts_collapse/run.py {shlex.join(argv if argv is not None else sys.argv[1:])}`; "
             f"wall {wall / 60:.1f} min this invocation; search {SEARCH_CONFIG}, retraining {RETRAIN_CONFIG}.", "",
             "| source | search seed | parameter-free ops per epoch (plain rule) | alpha entropy, last epoch | "
             f"plain export: param-free / top-1 % | {guard} export: param-free / top-1 % |", "|---|---|---|---|---|---|"]
    for r in rows:
        pe, ex = r["per_epoch"], r["exports"]
        fmt = lambda e: f"{e['parameter_free_normal']} / " + ", ".join(f"{100 * v:.2f}" for v in e["top1"].values())  # noqa: E731
        lines.append(f"| {r['source']} | {r['seed']} | {' '.join(str(h['parameter_free_normal_unguarded']) for h in pe)}"
                     f" | {pe[-1]['alpha_entropy_normal']:.3f} | {fmt(ex['plain'])} | {fmt(ex[guard])} |")
    lines += ["", "Mean test top-1 over searches and retraining seeds (95 % t-interval):", ""]
    summary = {}
    for source in a.sources:
        for name in ("plain", guard):
            vals = list(top1_by_pair(rows, source, name).values())
            if vals:
                m = summary[f"{source}/{name}"] = mean_interval(vals)
                lines.append(f"* {source}, {name}: {m['mean']:.2f} % [{m['ci_low']:.2f}, {m['ci_high']:.2f}] (n={m['n']})")
    comparisons = {}
    others = tagged_records(out, a.compare_with) if a.compare_with is not None else []
    for source in a.sources:
        pairs = [(f"{source}: {guard} - plain (same search)", top1_by_pair(rows, source, guard),
                  top1_by_pair(rows, source, "plain"))]
        pairs += [(f"{source}: {name}, {a.tag or 'shipped'} - {a.compare_with or 'shipped'}",
                   top1_by_pair(rows, source, name), top1_by_pair(others, source, name))
                  for name in ("plain", guard) if others]
        for label, x, y in pairs:
            d = paired_difference(x, y)
            if d:
                comparisons[label] = d
    if comparisons:
        lines += ["", "Paired differences in points (same source, search seed and retraining seed; 95 % t-interval):", ""]
        lines += [f"* {k}: {d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] (n={d['n']})"
                  for k, d in comparisons.items()]
    stem = tagged("darts_collapse", a.tag)
    atomic_write_json(out / f"{stem}.json", {"command": ["python", "-m", "studies/darts_collapse/run.py",
                                                                *(argv if argv is not None else sys.argv[1:])],
                                                    "wall_seconds_this_invocation": round(wall, 1),
                                                    "versions": versions(), "rows": rows, "summary": summary,
                                                    "paired_differences": comparisons})
    atomic_write_bytes(out / f"{stem}.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
