"""Has the per-image synthesis path become dearer? The default synthesis step of this tree against an earlier
commit's, measured alternately (old, new, old, new, ...) so that a machine busy with other work slows both alike.

    python -m bench.synthesis_regression --against b83195a --out bench/results.md

Each measurement is ``bench.synthesis``'s case (batch 125, one thread, no regional update: the per-image
path, the shipped default until 2026-12-03) in a fresh process of that tree: seconds per synthesis step, and
the ratio to the bare teacher forward + backward measured in the same process. The ratio is the number to compare: the floor
absorbs the machine's load at that moment. The issue's bound: at most 10 % dearer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import machine, write_section

ROOT = Path(__file__).resolve().parent.parent
CASE = [125, 1, False]


def measure(tree: Path, iterations: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-m", "bench.synthesis", "--iterations", str(iterations), "--case",
                           json.dumps(CASE)], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file for the results")
    args = parser.parse_args(argv)
    rev = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    rows: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), rev], cwd=ROOT, check=True)
        try:
            for i in range(args.repeats):
                for name, tree in (("old", old), ("new", ROOT)):
                    row = measure(tree, args.iterations)
                    rows[name].append(row)
                    print(f"{i} {name}: {row['synthesis_ms_per_it']:.1f} ms/step, ratio {row['ratio']:.3f}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("synthesis_ms_per_it", "ratio")} for k, v in rows.items()}
    change = 100 * (med["new"]["ratio"] / med["old"]["ratio"] - 1)
    print(f"ratio {med['old']['ratio']:.3f} ({rev}) -> {med['new']['ratio']:.3f} ({head}): {change:+.1f} %")
    if args.out:
        lines = ["## Synthesis cost against an earlier commit", "",
                 f"Machine: {machine()}.", f"Command: `python -m bench.synthesis_regression --against {rev} "
                 f"--iterations {args.iterations} --repeats {args.repeats}` (HEAD {head}, {time.strftime('%Y-%m-%d')}).",
                 "", "| tree | synthesis ms/step (median) | ratio to floor (median) | ratios |", "|:--|---:|---:|:--|"]
        for name, label in (("old", rev), ("new", head)):
            ratios = ", ".join(f"{r['ratio']:.3f}" for r in rows[name])
            lines.append(f"| {label} | {med[name]['synthesis_ms_per_it']:.1f} | {med[name]['ratio']:.3f} | {ratios} |")
        lines += ["", f"Change of the ratio: **{change:+.1f} %** (bound: +10 %). Batch 125, one thread, the per-image path "
                  "(no regional update), measured alternately in fresh processes."]
        write_section(args.out, lines)


if __name__ == "__main__":
    main()
