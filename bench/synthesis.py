"""Synthesis benchmark: overhead over the physical floor, throughput, peak memory.

The floor is a bare teacher forward + backward to the input on the same batch: synthesis cannot be
faster than that, since every step needs exactly one. Everything above it (BN hooks, the loss terms,
the regional crop, Adam, clipping) is overhead, reported as ``ratio = synthesis / floor``.

    python -m bench.synthesis --out bench/results.md     (make bench)

Each configuration runs in its own process, so peak memory (max RSS) belongs to that case alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.report import machine, write_section

CASES = [  # (batch size, threads, regional update)
    (125, 1, True), (125, 1, False), (125, 2, True), (25, 1, True),
]


def measure(batch: int, threads: int, regional: bool, iterations: int, teacher: str) -> dict:
    """One case, in this process: seconds per iteration for the floor and for synthesis."""
    import tempfile

    import torch
    import torch.nn.functional as F

    from dfnas_pl.inversion.module import ModelInversion

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = ModelInversion(teacher=teacher, output_dir=tmp, iterations=iterations, regional_update=regional,
                               warmup_iterations=min(20, iterations // 4))
    teacher_net = model.teacher
    spec = model.spec
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size, requires_grad=True)
    for _ in range(5):
        teacher_net(x).sum().backward()
    start = time.perf_counter()
    for _ in range(iterations):
        x.grad = None
        teacher_net(x).sum().backward()
    floor = (time.perf_counter() - start) / iterations
    targets = F.one_hot(torch.arange(batch) % spec.num_classes, spec.num_classes).float()
    model.synthesize(targets, torch.Generator().manual_seed(1))  # warm-up
    start = time.perf_counter()
    model.synthesize(targets, torch.Generator().manual_seed(0))
    synth = (time.perf_counter() - start) / iterations
    return {"batch": batch, "threads": threads, "regional_update": regional, "iterations": iterations,
            "floor_ms_per_it": floor * 1e3, "synthesis_ms_per_it": synth * 1e3, "ratio": synth / floor,
            "image_iterations_per_s": batch / synth,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="embedded:fmnist_resnet8")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file for the results table")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case, JSON to stdout
    args = parser.parse_args(argv)
    if args.case:
        batch, threads, regional = json.loads(args.case)
        print(json.dumps(measure(batch, threads, regional, args.iterations, args.teacher)))
        return
    rows = []
    for case in CASES:
        proc = subprocess.run([sys.executable, "-m", "bench.synthesis", "--teacher", args.teacher, "--iterations",
                               str(args.iterations), "--case", json.dumps(case)], capture_output=True, text=True,
                              check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"B={row['batch']:4d} threads={row['threads']} regional={row['regional_update']!s:5}  floor "
              f"{row['floor_ms_per_it']:.1f} ms/it  synthesis {row['synthesis_ms_per_it']:.1f} ms/it  ratio "
              f"{row['ratio']:.2f}  {row['image_iterations_per_s']:.0f} img-it/s  peak {row['peak_rss_mib']:.0f} MiB",
              flush=True)
    if args.out:
        lines = ["## Synthesis overhead and throughput", "",
                 f"Machine: {machine()}.", f"Command: `python -m bench.synthesis --iterations {args.iterations}` "
                 f"(teacher `{args.teacher}`, {time.strftime('%Y-%m-%d')}).", "",
                 "| batch | threads | regional update | floor ms/it | synthesis ms/it | ratio | image-it/s | peak RSS MiB |",
                 "|---:|---:|:--|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['batch']} | {r['threads']} | {r['regional_update']} | {r['floor_ms_per_it']:.1f} | "
                  f"{r['synthesis_ms_per_it']:.1f} | {r['ratio']:.2f} | {r['image_iterations_per_s']:.0f} | "
                  f"{r['peak_rss_mib']:.0f} |" for r in rows]
        lines += ["", "floor = bare teacher forward + backward to the input on the same batch (ratio 1.0 is the "
                  "physical limit)."]
        write_section(args.out, lines)
        print(f"Results written to {args.out}")


if __name__ == "__main__":
    main()
