"""Budgets from curves: each shipped search's health-check numbers against its supernet's training budget.

For each algorithm's shipped config (the ones `make run` uses, or the macro ones with ``--macro``), each budget
(``--trainer.max_epochs``) and each search seed: one search on the shipped synthetic set, exactly as the
pipeline runs it, but exporting whatever its health (``export_unhealthy``) so that every budget has a record.
DARTS searches with ``selection: perturbation`` (the first-order estimate), so one search exports both the alpha
rule's cell and the perturbation cell (``architecture.json``: ``alpha_genotype``) for studies/darts_selection.

    python studies/search_health/run.py --synthetic runs/fmnist/synthetic --algorithms spos --epochs 40 80 160

Every (algorithm, epochs, seed) writes ``records/<algorithm>_e<epochs>_s<seed>.json`` (the health verdict and
numbers, the architecture, wall seconds, the command); a killed run redoes only the searches without a record.
Writes ``search_health.md`` and ``search_health.png`` from all records.
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

from dfnas_pl.drivers.commands import versions
from dfnas_pl.search.registry import search_algorithms
from dfnas_pl.utils.io import atomic_write_bytes, atomic_write_json

HERE = Path(__file__).resolve().parent
CONFIGS = {name: a.config for name, a in search_algorithms().items()}
MACRO = {"spos": "experiments/fmnist/search_spos_macro.yaml",
         "proxylessnas": "experiments/fmnist/search_proxylessnas_macro.yaml"}


def search(algorithm: str, config: str, synthetic: str, epochs: int, seed: int, run: Path, tag: str,
           search_args: list[str] = (), variant: str = "") -> dict:
    name = f"{tag}{algorithm}_e{epochs}_s{seed}{'_' + variant if variant else ''}"
    record = HERE / "records" / f"{name}.json"
    if record.exists():
        return json.loads(record.read_text())
    out = run / name
    extra = ["--model.init_args.selection", "perturbation"] if algorithm == "darts" else []
    args = ["fit", "--config", config, "--data.init_args.path", synthetic, "--trainer.max_epochs", str(epochs),
            "--seed_everything", str(seed), "--model.init_args.seed", str(seed),
            "--model.init_args.output_dir", str(out), "--model.init_args.export_unhealthy", "true",
            "--trainer.default_root_dir", str(out), "--trainer.callbacks.init_args.dirpath", str(out / "checkpoints"),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *extra, *search_args]
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(out / "search.log", "ab") as log:
        code = subprocess.run([sys.executable, "-m", "dfnas_pl", *args], stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"The {name} search failed (exit {code}); see {out / 'search.log'}.")
    arch = json.loads((out / "architecture.json").read_text())
    ckpt = json.loads((out / "health.json").read_text())
    rec = {"algorithm": algorithm, "config": config, "epochs": epochs, "seed": seed, "variant": variant,
           "search_args": list(search_args), "health": ckpt,
           "choices": arch["choices"], "flops": arch["flops"], "params": arch["params"],
           **({"alpha_genotype": arch["alpha_genotype"], "importance": arch["importance"]} if "importance" in arch
              else {}),
           "architecture": str(out / "architecture.json"), "seconds": round(time.time() - start, 1),
           "command": " ".join(["python -m dfnas_pl", *args]), "versions": versions()}
    atomic_write_json(record, rec)
    return rec


def table(records: list[dict], tag: str) -> str:
    lines = ["| algorithm | epochs | seeds | level (median over seeds) | chance | floor | spread / noise | "
             "passes | search seconds (mean) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["algorithm"], r["epochs"], r.get("variant", "")) for r in records})
    for alg, ep, variant in keys:
        rs = [r for r in records if (r["algorithm"], r["epochs"], r.get("variant", "")) == (alg, ep, variant)]
        h = [r["health"] for r in rs]
        ratio = [x["spread"] / x["noise"] for x in h if x.get("spread") is not None]
        ratio_s = " / ".join(f"{v:.1f}" for v in ratio) if ratio else "-"
        levels = " / ".join(f"{x['level']:.2f}" for x in h)
        lines.append(f"| {alg}{' (' + variant + ')' if variant else ''} | {ep} | {len(rs)} | {statistics.median(x['level'] for x in h):.2f} "
                     f"({levels}) | {h[0]['chance']:.2f} | "
                     f"{h[0]['level_floor']:.2f} | {ratio_s} | {sum(x['can_choose'] for x in h)} / {len(h)} | "
                     f"{statistics.mean(r['seconds'] for r in rs):.0f} |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    from dfnas_pl.search.plots import plt, save_figure

    algs = sorted({r["algorithm"] for r in records})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for alg in algs:
        rs = sorted((r for r in records if r["algorithm"] == alg), key=lambda r: r["epochs"])
        axes[0].scatter([r["epochs"] for r in rs], [r["health"]["level"] for r in rs], label=alg, s=14)
        sp = [r for r in rs if r["health"].get("spread") is not None]
        axes[1].scatter([r["epochs"] for r in sp], [r["health"]["spread"] / r["health"]["noise"] for r in sp],
                        label=alg, s=14)
    if records:
        floors = {r["health"]["level_floor"] for r in records}
        for f in floors:
            axes[0].axhline(f, color="grey", lw=0.6, ls="--")
    axes[0].set(xscale="log", xlabel="supernet epochs", ylabel="level (agreement with the teacher)",
                title="learned: level vs the floor (dashed)")
    axes[1].set(xscale="log", xlabel="supernet epochs", ylabel="spread / sampling noise",
                title="separates: random candidates' spread")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", default="runs/fmnist/synthetic", help="the shipped synthetic set (make synthesize)")
    p.add_argument("--algorithms", nargs="+", default=["spos", "proxylessnas", "darts"])
    p.add_argument("--epochs", nargs="+", type=int, required=True, help="supernet budgets (--trainer.max_epochs)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--macro", action="store_true", help="the macro search configs instead of make run's")
    p.add_argument("--run_dir", default="runs/search_health")
    p.add_argument("--search_args", type=shlex.split, default=[],
                   help="extra search CLI arguments, one quoted string (give them a --variant name)")
    p.add_argument("--variant", default="", help="name of the --search_args setting in the records and the table")
    p.add_argument("--table_only", action="store_true", help="rewrite the table and plot from the records")
    a = p.parse_args(argv)
    if a.search_args and not a.variant:
        raise SystemExit("--search_args change the search: name them with --variant, so their records stay apart.")
    tag = "macro_" if a.macro else ""
    if not a.table_only:
        for alg in a.algorithms:
            config = (MACRO if a.macro else CONFIGS)[alg]
            for ep in a.epochs:
                for seed in a.seeds:
                    rec = search(alg, config, a.synthetic, ep, seed, Path(a.run_dir), tag, a.search_args, a.variant)
                    h = rec["health"]
                    print(f"{tag}{alg} {ep} epochs seed {seed}: {h['verdict']} (level {h['level']:.2f}, floor "
                          f"{h['level_floor']:.2f}, spread/noise "
                          f"{h['spread'] / h['noise'] if h.get('spread') is not None else float('nan'):.1f}), "
                          f"{rec['seconds']:.0f} s", flush=True)
    records = [json.loads(f.read_text()) for f in sorted((HERE / "records").glob(f"{tag}*.json"))]
    if not a.macro:
        records = [r for r in records if "macro" not in r["config"]]
    text = table(records, tag)
    atomic_write_bytes(HERE / f"search_health{'_macro' if a.macro else ''}.md", (text + "\n").encode())
    plot(records, HERE / f"search_health{'_macro' if a.macro else ''}.png")
    print(text)


if __name__ == "__main__":
    main()
