"""Synthetic sets for the drivers that compare them: each one a run of the synthesis stage (the same
LightningCLI config as by hand, plus its own extra arguments) in its own process, several at once, a
set that already has its ``manifest.json`` skipped. Shared by ``rank-fidelity`` and ``synthesis-sweep``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Named synthesis settings the drivers compare, spelled out in full so that a set's meaning does not move
# when the synthesis config's defaults do (they follow the measurements: studies/synthesis_quality/README.md).
# Their base is per-image optimisation's config: the paper's method and its baselines are per-image by definition.
PIXELS_CONFIG = "experiments/fmnist/synthesize_pixels.yaml"
"""The per-image (DeepInversion) synthesis config: the base every named set below is spelled out against."""
PAPER_METHOD = ["--model.init_args.label_calibration", "true", "--model.init_args.regional_update", "zoom",
                "--model.init_args.r_feature", "0.01"]
"""The paper's method at our scale: calibrated rounds, a zoom regional update, the official BN-loss weight."""
PLAIN_INVERSION = ["--model.init_args.label_calibration", "false", "--model.init_args.regional_update", "false",
                   "--model.init_args.r_feature", "0.01"]
"""Plain model inversion (DeepInversion's loss) with the official BN-loss weight: the baseline."""
SHIPPED_DEFAULT = ["--model.init_args.label_calibration", "false", "--model.init_args.regional_update", "false",
                   "--model.init_args.r_feature", "0.1", "--model.init_args.synthesizer", "generator",
                   "--model.init_args.iterations", "20", "--model.init_args.warmup_iterations", "2"]
"""What the Fashion-MNIST synthesis config ships (the measured best at 28 px): plain inversion's loss with the BN
loss x10, made by the meta-learned generator at 20 steps per batch (studies/synthesis_alternatives/README.md)."""


def set_dir(run_dir: Path, name: str) -> Path:
    """Where the set ``name`` of a driver's run directory lives."""
    return run_dir / f"synthetic_{name}"


def make_synthetic_sets(run_dir: Path, synthesis_config: str, variants: dict[str, list[str]], names: list[str],
                        workers: int = 2, threads: int = 1,
                        record_seconds: Callable[[str, float], None] | None = None) -> dict[str, str]:
    """``{name: <run_dir>/synthetic_<name>}`` for every name, made with ``variants[name]`` where missing.

    Runs up to ``workers`` syntheses in parallel, ``threads`` torch threads each (inversion is teacher
    forward + backward on small batches: processes scale better than threads on a small CPU)."""
    sets = {name: str(set_dir(run_dir, name)) for name in names}
    todo = [name for name in names if not (Path(sets[name]) / "manifest.json").exists()]
    procs = []
    for name in todo:
        out = set_dir(run_dir, name)
        cmd = [sys.executable, "-m", "dfnas_pl", "fit", "--config", synthesis_config,
               "--model.init_args.output_dir", str(out), "--trainer.default_root_dir", str(run_dir),
               "--trainer.logger.init_args.save_dir", str(run_dir), *variants[name]]
        print(f"=== synthesis ({name}): {' '.join(cmd[1:])}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        log = open(run_dir / f"synthesis_{name}.log", "ab")
        env = {**os.environ, "DFNAS_NUM_THREADS": str(threads), "WANDB_JOB_TYPE": "synthesis"}
        procs.append((name, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), time.time(), log))
        while len([p for p in procs if p[1].poll() is None]) >= workers:
            time.sleep(2)
    failed = []
    for name, proc, start, log in procs:
        code = proc.wait()
        log.close()
        if record_seconds is not None:
            record_seconds(f"synthesis ({name})", time.time() - start)
        if code != 0:
            failed.append(f"'{name}' (exit {code}; log {run_dir / f'synthesis_{name}.log'})")
    if failed:
        raise SystemExit(f"Synthesis of {', '.join(failed)} failed. Fix the cause and run the same command again "
                         f"(finished sets are kept).")
    return sets
