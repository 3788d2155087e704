"""``python -m dfnas_pl rank-fidelity --config studies/layerwise_groundtruth/rank_fidelity.yaml``: does a supernet
trained on each search-data source rank the ground-truth architectures as real data does?

For every space (a committed ground truth, :mod:`dfnas_pl.drivers.groundtruth`), source and supernet
seed, one *unit*: train the space's one-shot supernet with uniform single-path sampling (the SPOS stage
module with ``evolution: false``, through the same CLI and search config as a search, KD settings
included; real data trains on labels), then score every ground-truth architecture as the search does
(:func:`dfnas_pl.search.scoring.score_path`: BN recalibration on the source's search-train split, top-1 on
its search-val split). With ``cross``, the real-trained supernet is also scored on synthetic data and the
synthetic-trained one on real data - a 2x2 that tells which half fails, training the supernet or ranking
with it.

Sources: ``real_<n>`` (n real training images, labels), ``real_full`` (the whole real split), any
synthetic set named in ``synthetic_sets`` (made by the synthesis stage with extra arguments, e.g.
``default``, ``synthetic``, ``synthetic_4x``, ``plain``), ``noise`` (Gaussian noise, KD). Baselines that need no data:
``flops`` and ``params``. Every ranking number comes from :mod:`dfnas_pl.search.ranking`.

Each unit's scores are a small JSON under ``<table_dir>/scores/`` (committed with the table), so a killed
run - or a later session on a fresh clone - redoes only the units that have none.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser

from dfnas_pl.data.vision import VisionDataModule
from dfnas_pl.drivers.commands import REAL_DATA, driver_from_args, driver_parser, recorded_command, versions
from dfnas_pl.drivers.groundtruth import _fmt, load_groundtruth
from dfnas_pl.drivers.synthetic_sets import (
    PAPER_METHOD,
    PIXELS_CONFIG,
    PLAIN_INVERSION,
    SHIPPED_DEFAULT,
    make_synthetic_sets,
    set_dir,
)
from dfnas_pl.drivers.variants import Variant, check_variants
from dfnas_pl.search.ranking import fidelity, kendall_tau
from dfnas_pl.utils.io import atomic_write_bytes, atomic_write_json, strict_json
from dfnas_pl.utils.locking import one_writer
from dfnas_pl.wandb_setup import pipeline_group

SOURCES = ["real_500", "real_full", "default", "synthetic", "synthetic_4x", "plain", "noise"]
SYNTHETIC_SETS = {"default": SHIPPED_DEFAULT, "synthetic": PAPER_METHOD,
                  "synthetic_4x": [*PAPER_METHOD, "--data.init_args.images_per_class", "100"], "plain": PLAIN_INVERSION}
CSV_COLUMNS = ["space", "source", "scored_on", "seed", "supernet_steps", "n", "kendall_tau", "spearman_rho",
               "tau_ci_low", "tau_ci_high", "tau_minus_flops_ci_low", "tau_minus_flops_ci_high", "band_n",
               "band_tau", "within_band_tau", "top25_recall", "best_scored_top1", "regret", "train_seconds", "score_seconds"]


def is_real(source: str) -> bool:
    return source == "real_full" or (source.startswith("real_") and source[5:].isdigit())


def data_args(source: str, sets: dict[str, str], noise_images: int) -> list[str]:
    """Search-stage CLI arguments that make ``source`` the supernet's training data."""
    if source == "real_full":
        return ["--data.init_args.source", "real", "--model.init_args.teacher", "null",
                "--data.init_args.max_images", "null"]
    if is_real(source):
        return ["--data.init_args.source", "real", "--model.init_args.teacher", "null",
                "--data.init_args.max_images", source[5:]]
    if source == "noise":
        return ["--data.init_args.source", "noise", "--data.init_args.noise_images", str(noise_images)]
    return ["--data.init_args.source", "synthetic", "--data.init_args.path", sets[source]]


def space_args(space_config: dict[str, Any]) -> list[str]:
    """The ground truth's space as one JSON value, so the supernet is exactly the space that was measured
    (field by field, the CLI cannot set an optional tuple such as stage_strides back to null)."""
    return ["--model.init_args.space", json.dumps(space_config)]


# -- one unit, in a worker process ---------------------------------------------------------------------

def run_unit(unit: dict[str, Any]) -> dict[str, Any]:
    """Train the supernet of one (space, source, seed) unless its weights exist; score the ground truth on
    the source (and the cross partner); write the unit's score file."""
    import torch

    torch.set_num_threads(unit["threads"])
    out = Path(unit["out_dir"])
    weights = out / "supernet.pt"
    train_seconds = 0.0
    if not weights.exists():
        ckpt = out / "checkpoints"
        resume = ["--ckpt_path", str(ckpt / "last.ckpt")] if (ckpt / "last.ckpt").exists() else []
        cmd = [sys.executable, "-m", "dfnas_pl", "fit", "--config", unit["train_config"], *unit["train_args"],
               "--model.init_args.output_dir", str(out), "--trainer.default_root_dir", str(out),
               "--trainer.callbacks.init_args.dirpath", str(ckpt), *resume]
        env = {**os.environ, "DFNAS_NUM_THREADS": str(unit["threads"]), "WANDB_JOB_TYPE": "rank-fidelity-supernet",
               "WANDB_RUN_GROUP": unit["group"]}
        start = time.time()
        log = out / "train.log"
        out.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            result = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        train_seconds = time.time() - start
        if result.returncode != 0 or not weights.exists():
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Supernet training for {unit['name']} failed (exit {result.returncode}); log "
                               f"{log}:\n{tail}\nFix the cause and run the same rank-fidelity command again.")
    previous = Path(unit["score_file"])
    if not train_seconds and previous.exists():  # re-scored for a cross pair added later: the training was then
        train_seconds = json.loads(previous.read_text()).get("train_seconds", 0.0)
    start = time.time()
    scores = {scored_on: score_all(unit, weights, scored_on) for scored_on in unit["scored_on"]}
    record = {"space": unit["space"], "source": unit["source"], "seed": unit["seed"], "steps": unit["steps"],
              "scorer": unit.get("scorer", "top1"), "scores": scores, "train_seconds": round(train_seconds, 1),
              "score_seconds": round(time.time() - start, 1)}
    atomic_write_json(unit["score_file"], record)
    return record


def score_all(unit: dict[str, Any], weights: Path, scored_on: str) -> dict[str, float]:
    """Every ground-truth architecture's score, the data half (BN recalibration + val) from ``scored_on``."""
    import torch
    from lightning.pytorch.cli import instantiate_class

    from dfnas_pl.data.search_data import SearchDataModule
    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig, LayerwiseSupernet
    from dfnas_pl.search.scoring import ScoringSet, first, score_path
    from dfnas_pl.teachers.loading import load_teacher

    cfg = LayerwiseSpaceConfig.from_dict(unit["space_config"])
    supernet = LayerwiseSupernet(cfg)
    supernet.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    trained = json.loads(weights.with_suffix(".json").read_text())
    d = trained["data"]  # split and batch as the supernet's own training did
    real = instantiate_class((), unit["real_data"])
    source = "real" if is_real(scored_on) else ("noise" if scored_on == "noise" else "synthetic")
    max_images = None if scored_on == "real_full" else (int(scored_on[5:]) if is_real(scored_on) else None)
    dm = SearchDataModule(source=source, path=unit["sets"].get(scored_on, ""), real_data=real,
                          val_fraction=d["val_fraction"], max_images=max_images, noise_images=unit["noise_images"],
                          image_shape=(cfg.in_channels, cfg.image_size, cfg.image_size), batch_size=d["batch_size"],
                          augment=d.get("augment", True), split_seed=d.get("split_seed", 0))
    dm.setup("fit")
    bn_loader, val_loader = dm.scoring_loaders()
    teacher = None if source == "real" else load_teacher(unit["teacher"]).model.eval()
    bn_batches = trained["bn_recalibration_batches"]
    val_batches = math.ceil(unit["score_images"] / d["batch_size"]) if unit["score_images"] else None
    scoring = ScoringSet(first(val_loader, val_batches), teacher, trained.get("temperature", 1.0))
    scores = {}
    for arch in unit["architectures"]:
        path = [names.index(c) for names, c in zip(supernet.choice_names, arch["choices"])]
        scores[arch["id"]] = score_path(supernet, path, first(bn_loader, bn_batches), scoring,
                                        unit.get("scorer", "top1")).score
    return scores


def scored(unit: dict[str, Any]) -> bool:
    """A unit is done when its score file holds every dataset it is scored on (a cross pair added later
    re-scores the kept supernet; it is not trained again)."""
    path = Path(unit["score_file"])
    return path.exists() and set(unit["scored_on"]) <= set(json.loads(path.read_text())["scores"])


# -- the driver -------------------------------------------------------------------------------------------

class RankFidelity:
    """How a supernet trained on each data source ranks fixed architectures whose real accuracy a ground truth
    holds (Kendall tau with a bootstrap interval, per space, source and seed)."""

    def __init__(self, run_dir: str = "runs/fmnist_rank_fidelity", table_dir: str = "runs/rank_fidelity/table",
                 spaces: list[dict[str, Any]] = [], sources: list[str] = SOURCES, seeds: list[int] = [0, 1],
                 supernet_steps: int = 240, synthesis_config: str = PIXELS_CONFIG,
                 synthetic_sets: dict[str, Variant] = SYNTHETIC_SETS, real_data: VisionDataModule = REAL_DATA,
                 cross: list[list[str]] = [["real_500", "synthetic"], ["synthetic", "real_500"]],
                 noise_images: int = 500, score_images: int | None = 2000, workers: int = 2,
                 threads_per_worker: int = 1, bootstrap_samples: int = 1000, table_name: str = "rank_fidelity",
                 curve_steps: list[int] = [], curve_sources: list[str] = ["real_500"]) -> None:
        """
        Args:
            run_dir: synthetic sets, supernets, logs
            table_dir: score files per unit, <table_name>.md/.csv/.json and the scatter plots
            spaces: per space: name, groundtruth (JSON), train_config (search YAML), overrides (CLI args), teacher
                (labels synthetic/noise data when scoring; default: the train config's), scorer (default: the
                train config's, as the search scores)
            sources: real_<count>, real_full, noise, or a name in synthetic_sets
            seeds: supernet seeds per source
            supernet_steps: training steps of every supernet (equal budget)
            synthesis_config: the synthesis stage's config, the base the named sets are spelled out against
                (per-image optimisation's by default: the paper's method is per-image)
            synthetic_sets: synthetic sources: name -> extra synthesis settings (a mapping of its constructor
                arguments, or CLI arguments)
            real_data: real data (a VisionDataModule, kept as its class_path + init_args mapping): the real sources
                and the real half of the 2x2
            cross: [trained on, also scored on] pairs: the 2x2 of supernet data vs ranking data
            noise_images: images of the noise source
            score_images: search-val images scored at most
            workers: units trained and scored in parallel
            threads_per_worker: torch threads per process
            bootstrap_samples: resamples of every interval
            table_name: the table's file name
            curve_steps: other supernet budgets for a tau-vs-steps curve (e.g. [960, 2400]); empty: none
            curve_sources: sources the curve is measured for
        """
        if not spaces:
            raise ValueError("No spaces: give --spaces (or a config such as "
                             "studies/layerwise_groundtruth/rank_fidelity.yaml).")
        spaces = [dict(space) for space in spaces]
        for space in spaces:
            missing = {"name", "groundtruth", "train_config"} - set(space)
            if missing:
                raise ValueError(f"Space entry {space} lacks {sorted(missing)}.")
        synthetic_sets = check_variants(dict(synthetic_sets), synthesis_config, "synthetic set")
        self.run, self.table_dir = Path(run_dir), Path(table_dir)
        self.spaces, self.sources, self.seeds, self.steps = spaces, list(sources), list(seeds), supernet_steps
        self.synthesis_config, self.synthetic_sets, self.real_data = synthesis_config, synthetic_sets, real_data
        self.cross = [tuple(pair) for pair in cross]
        self.noise_images, self.score_images = noise_images, score_images
        self.workers, self.threads, self.samples, self.table_name = workers, threads_per_worker, bootstrap_samples, table_name
        known = {"real_full", "noise", *synthetic_sets}
        unknown = [s for s in self.sources if s not in known and not is_real(s)]
        if unknown:
            raise ValueError(f"Unknown source(s) {unknown}: use real_<count>, real_full, noise, or a name in "
                             f"synthetic_sets ({sorted(synthetic_sets)}).")
        bad = [p for p in self.cross if len(p) != 2 or not set(p) <= set(self.sources)]
        if bad:
            raise ValueError(f"cross pairs {bad} must name two of the sources {self.sources}.")
        self.curve_steps, self.curve_sources = list(curve_steps or []), list(curve_sources or [])
        if set(self.curve_sources) - set(self.sources):
            raise ValueError(f"curve_sources {self.curve_sources} must be among the sources {self.sources}.")
        self._ledger_lock = threading.Lock()

    # -- synthetic sets (synthesis stage runs, skipped when done) -------------------------------------
    def set_paths(self) -> dict[str, str]:
        """Where each synthetic source's set is (made or not)."""
        return {s: str(set_dir(self.run, s)) for s in self.sources if s in self.synthetic_sets}

    def make_sets(self, todo: list[dict[str, Any]]) -> None:
        """Make the sets the units still to run train or score on; a finished study (its score files
        committed) rewrites its tables without one synthesis."""
        needed = sorted({s for u in todo for s in (u["source"], *u["scored_on"]) if s in self.synthetic_sets})
        make_synthetic_sets(self.run, self.synthesis_config, self.synthetic_sets, needed, self.workers, self.threads,
                            self.record_seconds)

    def record_seconds(self, name: str, seconds: float) -> None:
        with self._ledger_lock:
            ledger = self.run / "stage_seconds.json"
            spent = json.loads(ledger.read_text()) if ledger.exists() else {}
            spent[name] = round(spent.get(name, 0.0) + seconds, 1)
            atomic_write_json(ledger, spent)

    # -- units ------------------------------------------------------------------------------------------
    def score_file(self, space: str, source: str, seed: int, steps: int | None = None) -> Path:
        return self.table_dir / "scores" / f"{space}_{source}_seed{seed}_steps{steps or self.steps}.json"

    def units(self, sets: dict[str, str], truths: dict[str, dict[str, Any]], steps: int,
              sources: list[str]) -> list[dict[str, Any]]:
        units = []
        group = pipeline_group(self.run)
        for space in self.spaces:
            gt = truths[space["name"]]
            train_cfg = yaml.safe_load(Path(space["train_config"]).read_text())
            model_args = train_cfg["model"]["init_args"]
            for seed in self.seeds:
                for source in sources:
                    partners = [b for a, b in self.cross if a == source] if steps == self.steps else []
                    missing = [p for p in partners if p not in sets and not is_real(p) and p != "noise"]
                    if missing:
                        raise ValueError(f"cross partner(s) {missing} of {source} are not sources.")
                    name = f"{space['name']}/{source}/seed{seed}"
                    units.append({
                        "name": f"{name}/steps{steps}", "space": space["name"], "source": source, "seed": seed,
                        "steps": steps,
                        # every architecture of the selection, finished or not: a score file stays valid
                        # while the ground truth is completed later
                        "space_config": gt["space_config"], "architectures": gt["architectures"],
                        "train_config": space["train_config"], "group": group, "threads": self.threads,
                        "train_args": [*space_args(gt["space_config"]), *data_args(source, sets, self.noise_images),
                                       # the driver's real data and teacher, not the train config's
                                       "--data.init_args.real_data", json.dumps(self.real_data),
                                       *(["--model.init_args.teacher", json.dumps(space["teacher"])]
                                         if "teacher" in space and not is_real(source) else []),
                                       *space.get("overrides", []), "--seed_everything", str(seed),
                                       "--model.init_args.seed", str(seed), "--model.init_args.evolution", "false",
                                       "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
                                       "--trainer.limit_val_batches", "2",
                                       "--trainer.logger.init_args.save_dir", str(self.run)],
                        "out_dir": str(self.run / "supernets" / space["name"] / f"steps{steps}" / source / f"seed{seed}"),
                        "score_file": str(self.score_file(space["name"], source, seed, steps)),
                        "scored_on": [source, *partners], "sets": sets, "real_data": self.real_data,
                        "noise_images": self.noise_images, "score_images": self.score_images,
                        # the search's own scorer unless the space names one: the instrument scores as the search does
                        "scorer": space.get("scorer", model_args.get("scorer", "top1")),
                        "teacher": space.get("teacher", model_args.get("teacher", "embedded:fmnist_resnet8"))})
        return units

    @one_writer("run", "rank-fidelity run")
    def __call__(self) -> list[dict[str, Any]]:
        truths = {}
        for space in self.spaces:
            gt = load_groundtruth(space["groundtruth"])
            gt["scored"] = [a for a in gt["architectures"] if len(a["top1"]) >= 2]
            if len(gt["scored"]) < 4:
                raise ValueError(f"The ground truth {space['groundtruth']} has only {len(gt['scored'])} architectures "
                                 f"with 2 seeds: finish it first (`python -m dfnas_pl groundtruth --config ...`).")
            truths[space["name"]] = gt
        sets = self.set_paths()
        units = self.units(sets, truths, self.steps, self.sources)
        for steps in self.curve_steps:
            if steps != self.steps:
                units += self.units(sets, truths, steps, self.curve_sources)
        todo = [u for u in units if not scored(u)]
        self.make_sets(todo)
        print(f"Rank fidelity: {len(units)} units ({len(self.spaces)} spaces x {len(self.sources)} sources x "
              f"{len(self.seeds)} seeds, {self.steps} supernet steps; budget curve {self.curve_steps} for "
              f"{self.curve_sources}), {len(units) - len(todo)} done, {len(todo)} to run on "
              f"{self.workers} worker{'s' if self.workers != 1 else ''}.", flush=True)
        if todo:
            with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn")) as pool:
                pending = {pool.submit(run_unit, u): u for u in todo}
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        u = pending.pop(future)
                        rec = future.result()
                        self.record_seconds(f"unit {u['name']}", rec["train_seconds"] + rec["score_seconds"])
                        print(f"--- {u['name']}: trained {rec['train_seconds']:.0f} s, scored "
                              f"{len(u['architectures'])} architectures on {u['scored_on']} in {rec['score_seconds']:.0f} s",
                              flush=True)
        rows = self.table(truths)
        self.write(rows, truths)
        if self.curve_steps:
            self.write_curve(truths)
        return rows

    def write_curve(self, truths: dict[str, dict[str, Any]]) -> None:
        """Kendall tau (seed-mean score, bootstrap CI) against supernet steps, per space and curve source."""
        steps_all = sorted(set(self.curve_steps) | {self.steps})
        rows = []
        for space in self.spaces:
            gt = truths[space["name"]]
            archs = gt["scored"]
            truth = [statistics.mean(a["top1"].values()) for a in archs]
            flops = [float(a["flops"]) for a in archs]
            band, groups = [a["in_median_band"] for a in archs], band_groups(archs)
            for source in self.curve_sources:
                for steps in steps_all:
                    recs = [json.loads(self.score_file(space["name"], source, s, steps).read_text()) for s in self.seeds]
                    score = [statistics.mean(r["scores"][source][a["id"]] for r in recs) for a in archs]
                    f = fidelity(score, truth, band, flops, self.samples, groups=groups)
                    rows.append({"space": space["name"], "source": source, "supernet_steps": steps, **f,
                                 "flops_tau": kendall_tau(flops, truth)})
        buf = io.StringIO()
        cols = ["space", "source", "supernet_steps", "kendall_tau", "tau_ci_low", "tau_ci_high",
                "tau_minus_flops_ci_low", "tau_minus_flops_ci_high", "band_tau", "within_band_tau", "flops_tau"]
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows])
        base = self.table_dir / f"{self.table_name}_curve"
        atomic_write_bytes(base.with_suffix(".csv"), buf.getvalue().encode())
        ceilings = {name: gt["noise_ceiling"]["kendall_tau"] for name, gt in truths.items()}
        budget_curve(base.with_suffix(".png"), rows, [sp["name"] for sp in self.spaces], self.curve_sources, ceilings)
        print(f"Budget curve: {base.with_suffix('.csv')} (.png)")

    # -- the table ----------------------------------------------------------------------------------------
    def table(self, truths: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for space in self.spaces:
            gt = truths[space["name"]]
            archs = gt["scored"]
            truth = [statistics.mean(a["top1"].values()) for a in archs]
            band = [a["in_median_band"] for a in archs]
            groups = band_groups(archs)
            flops = [float(a["flops"]) for a in archs]
            common = {"space": space["name"], "supernet_steps": str(self.steps)}  # str: one type per W&B column
            for name, score in (("flops", flops), ("params", [float(a["params"]) for a in archs])):
                rows.append({**common, "source": name, "scored_on": "-", "seed": "-", "supernet_steps": "-",
                             **fidelity(score, truth, band, flops if name != "flops" else None, self.samples,
                                          groups=groups)})
            for source in self.sources:
                for scored_on in [source, *[b for a, b in self.cross if a == source]]:
                    per_seed, meta = [], []
                    for seed in self.seeds:
                        rec = json.loads(self.score_file(space["name"], source, seed).read_text())
                        s = [rec["scores"][scored_on][a["id"]] for a in archs]
                        per_seed.append(s)
                        meta.append(rec)
                        rows.append({**common, "source": source, "scored_on": scored_on, "seed": str(seed),
                                     **fidelity(s, truth, band, flops, self.samples, groups=groups),
                                     "train_seconds": rec["train_seconds"], "score_seconds": rec["score_seconds"]})
                    mean_score = [statistics.mean(v) for v in zip(*per_seed)]
                    rows.append({**common, "source": source, "scored_on": scored_on, "seed": "mean",
                                 **fidelity(mean_score, truth, band, flops, self.samples, groups=groups),
                                 "train_seconds": sum(m["train_seconds"] for m in meta),
                                 "score_seconds": sum(m["score_seconds"] for m in meta)})
        return rows

    def write(self, rows: list[dict[str, Any]], truths: dict[str, dict[str, Any]]) -> None:
        base = self.table_dir / self.table_name
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: (("" if math.isnan(v) else round(v, 4)) if isinstance(v, float) else v)  # NaN: empty cell
                           for k, v in r.items()} for r in rows])
        atomic_write_bytes(base.with_suffix(".csv"), buf.getvalue().encode())
        ledger = self.run / "stage_seconds.json"
        spent = json.loads(ledger.read_text()) if ledger.exists() else {}
        atomic_write_json(base.with_suffix(".json"), {
            "rows": rows, "steps": self.steps, "seeds": self.seeds, "sources": self.sources,
            "noise_ceiling": {k: v["noise_ceiling"] for k, v in truths.items()},
            "stage_seconds_in_run_dir": spent, "versions": versions(),
            "command": recorded_command("rank-fidelity")})
        md = markdown(rows, truths, self.steps)
        atomic_write_bytes(base.with_suffix(".md"), md.encode())
        pngs = [scatter(self.table_dir / f"{self.table_name}_{space['name']}.png", space["name"], truths[space["name"]],
                        self.table_dir, self.sources, self.seeds, self.steps) for space in self.spaces]
        log_wandb(self.run, rows, pngs)
        if self.run.resolve() != self.table_dir.resolve():  # the run dir holds its own copy beside the supernets
            for path in [base.with_suffix(".md"), base.with_suffix(".csv"), base.with_suffix(".json"), *pngs]:
                atomic_write_bytes(self.run / path.name, path.read_bytes())
        print("\n" + md + f"\nTable: {base.with_suffix('.md')} (.csv, .json), plots: {', '.join(map(str, pngs))}")


def band_groups(archs: list[dict[str, Any]]) -> list[str | None] | None:
    """Each architecture's equal-FLOPs band (ground truths selected in bands), else None for all."""
    groups = [a.get("stratum") if str(a.get("stratum", "")).startswith("band") else None for a in archs]
    return groups if any(g is not None for g in groups) else None


def _f(v: Any, digits: int = 2) -> str:
    return _fmt(v, digits)


def markdown(rows: list[dict[str, Any]], truths: dict[str, dict[str, Any]], steps: int) -> str:
    lines = []
    for space, gt in truths.items():
        c = gt["noise_ceiling"]
        lines += [f"### {space} ({len(gt['scored'])} architectures, supernet {steps} steps)", "",
                  f"Ground-truth noise ceiling (seed {c['seeds'][0]} vs {c['seeds'][1]}): Kendall tau "
                  f"{_f(c['kendall_tau'])}, median-FLOPs band tau {_f(c['band_kendall_tau'])} ({c['band_n']} architectures).",
                  "", "| source | scored on | Kendall tau, seed-mean score [95 % CI] | tau per seed | minus FLOPs tau [95 % CI] "
                  "| Spearman rho | band tau | within-band tau | top-25 % recall | regret (points) |",
                  "|---|---|---|---|---|---:|---:|---:|---:|---:|"]
        mine = [r for r in rows if r["space"] == space]
        for r in mine:
            if r["seed"] not in ("mean", "-"):
                continue
            seeds = [x for x in mine if x["source"] == r["source"] and x["scored_on"] == r["scored_on"]
                     and x["seed"] not in ("mean", "-")]
            delta = (f"[{_f(r.get('tau_minus_flops_ci_low'))}, {_f(r.get('tau_minus_flops_ci_high'))}]"
                     if "tau_minus_flops_ci_low" in r else "-")
            lines.append(f"| {r['source']} | {r['scored_on']} | {_f(r['kendall_tau'])} [{_f(r['tau_ci_low'])}, "
                         f"{_f(r['tau_ci_high'])}] | {' / '.join(_f(x['kendall_tau']) for x in seeds) or '-'} | {delta} | "
                         f"{_f(r['spearman_rho'])} | {_f(r['band_tau'])} | {_f(r.get('within_band_tau'))} | "
                         f"{_f(r['top25_recall'])} | "
                         f"{_f(100 * r['regret'])} |")
        lines.append("")
    return "\n".join(lines)


def scatter(path: Path, space: str, gt: dict[str, Any], table_dir: Path, sources: list[str], seeds: list[int],
            steps: int) -> Path:
    """True top-1 against the score, one panel per source (seed-mean score) plus the FLOPs baseline."""
    from dfnas_pl.search.plots import plt, save_figure

    archs = gt["scored"]
    truth = [100 * statistics.mean(a["top1"].values()) for a in archs]
    band = [a["in_median_band"] for a in archs]
    panels = [("flops", [a["flops"] / 1e6 for a in archs], "MFLOPs")]
    for source in sources:
        recs = [json.loads((table_dir / "scores" / f"{space}_{source}_seed{s}_steps{steps}.json").read_text())
                for s in seeds]
        panels.append((source, [100 * statistics.mean(r["scores"][source][a["id"]] for r in recs) for a in archs],
                       "supernet score (%)"))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    for ax, (name, score, xlabel) in zip(axes.flat, panels):
        ax.scatter([s for s, b in zip(score, band) if not b], [t for t, b in zip(truth, band) if not b], s=14,
                   label="FLOPs range")
        ax.scatter([s for s, b in zip(score, band) if b], [t for t, b in zip(truth, band) if b], s=14, marker="^",
                   label="median band")
        ax.set_title(f"{name}: tau {kendall_tau(score, truth):.2f}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("true top-1 (%)", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{space}: ground truth vs supernet score ({steps} steps, mean of {len(seeds)} seeds)", fontsize=10)
    return save_figure(fig, path)


def budget_curve(path: Path, rows: list[dict[str, Any]], spaces: list[str], sources: list[str],
                 ceilings: dict[str, float | None]) -> Path:
    """Kendall tau against supernet steps (log axis), one panel per space.

    A point whose tau is undefined (a supernet that scores every architecture alike) is left out rather
    than drawn; a panel with no defined point says so instead of asking matplotlib for an empty log axis.
    """
    from dfnas_pl.search.plots import plt, save_figure

    fig, axes = plt.subplots(1, len(spaces), figsize=(4.2 * len(spaces), 3.2), squeeze=False)
    for ax, space in zip(axes.flat, spaces):
        mine = [r for r in rows if r["space"] == space]
        drawn = 0
        for source in sources:
            rs = [r for r in mine if r["source"] == source and math.isfinite(r["kendall_tau"])]
            drawn += len(rs)
            if rs:
                ax.errorbar([r["supernet_steps"] for r in rs], [r["kendall_tau"] for r in rs],
                            yerr=[[max(0.0, r["kendall_tau"] - r["tau_ci_low"]) for r in rs],
                                  [max(0.0, r["tau_ci_high"] - r["kendall_tau"]) for r in rs]],
                            marker="o", capsize=3, label=source)
        if mine and math.isfinite(mine[0]["flops_tau"]):
            ax.axhline(mine[0]["flops_tau"], color="grey", ls="--", label="FLOPs alone")
        ax.axhline(ceilings.get(space) or 0, color="black", ls=":", label="noise ceiling")
        if drawn:
            ax.set_xscale("log")
        else:
            ax.text(0.5, 0.5, "Kendall tau undefined at every budget\n(every architecture scored alike)",
                    ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xlabel("supernet steps")
        ax.set_ylabel("Kendall tau vs ground truth")
        ax.set_title(space, fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def log_wandb(run_dir: Path, rows: list[dict[str, Any]], pngs: list[Path]) -> None:
    """The table and the scatter plots as one W&B run (offline unless logged in, like every stage)."""
    import wandb

    run = wandb.init(project="dfnas_pl", job_type="rank-fidelity", dir=str(run_dir), group=pipeline_group(run_dir),
                     name="rank-fidelity", reinit="finish_previous")
    table = wandb.Table(columns=CSV_COLUMNS, data=[[strict_json(r.get(c)) for c in CSV_COLUMNS] for r in rows])
    run.log({"rank_fidelity/table": table, **{f"rank_fidelity/{p.stem}": wandb.Image(str(p)) for p in pngs}})
    run.finish()


def parser() -> ArgumentParser:
    return driver_parser(RankFidelity, "python -m dfnas_pl rank-fidelity", "studies/layerwise_groundtruth/rank_fidelity.yaml")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    return driver_from_args(RankFidelity, argv, "python -m dfnas_pl rank-fidelity")()
