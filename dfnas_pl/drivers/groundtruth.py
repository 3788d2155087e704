"""``python -m dfnas_pl groundtruth --config studies/layerwise_groundtruth/groundtruth_<space>.yaml``: the real-data
accuracy of a fixed set of architectures of a layer-wise search space - the ground truth that the
rank-fidelity instrument compares every search-data source against.

Selection (deterministic from ``selection.seed``): a pool of uniform random architectures of the space;
``stratified`` of them one per equal-width FLOPs stratum between the space's cheapest and most expensive
path (the pool member nearest the stratum's centre), plus ``median_band`` more whose FLOPs lie within
``band_tolerance`` of the pool's median FLOPs - so that a ranking can be judged beyond "bigger is better".

Each architecture is built from its ``architecture.json`` and trained from scratch with one fixed recipe
(:class:`TrainingRecipe`: a seeded subset of the real training split, SGD with a one-cycle schedule) by
the retraining module, then tested on the real test set, once per seed. Jobs run in ``workers`` processes
(one thread each: small convolutions scale better over processes than over threads on a CPU). Every
finished (architecture, seed) is its own record file, so a killed run loses only the jobs in flight; a
rerun with a different recipe, selection or data in the same directory is refused.

The result is data, committed to the repository (``studies/layerwise_groundtruth/<space>.json``): choices,
FLOPs, params and per-seed top-1 of every architecture, the recipe, the noise ceiling (seed-vs-seed
Kendall tau), wall time and library versions. :func:`load_groundtruth` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import random
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser

from dfnas_pl.data.vision import VisionDataModule
from dfnas_pl.drivers.commands import (
    REAL_DATA,
    as_dataclass,
    driver_from_args,
    driver_parser,
    recorded_command,
    versions,
)
from dfnas_pl.drivers.rank_signal import signal_report
from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig
from dfnas_pl.search.space_registry import Sampler, space_sampler
from dfnas_pl.stats import bootstrap_interval, kendall_tau, spearman_rho
from dfnas_pl.utils.io import atomic_write_json
from dfnas_pl.utils.locking import one_writer

GROUNDTRUTH_FORMAT = "dfnas_pl.groundtruth/1"


@dataclass(frozen=True)
class TrainingRecipe:
    """How every ground-truth architecture is trained (the same for all, so only the architecture varies).

    Args:
        train_images: images of the real training split used (a seeded subset; the split's 5,000
            validation images are never used).
        epochs: passes over those images.
        batch_size: SGD batch size.
        lr: peak learning rate of the one-cycle schedule (linear warm-up, cosine to 0).
        warmup_fraction: share of the steps spent warming up.
        momentum: SGD (Nesterov) momentum.
        weight_decay: SGD weight decay.
        label_smoothing: cross-entropy label smoothing.
        augment: random crop (padding 2) and horizontal flip on the training images.
        subset_seed: seed of the training subset (the same images for every architecture and seed).
        loop: ``lightning`` (the retraining module, through a DataLoader) or ``tensor`` (a plain loop
            over the split decoded once into memory, :mod:`dfnas_pl.drivers.tensor_training`: several
            times faster for networks this small; the data order is the seed's, shared by every
            architecture).
        ema_decay: ``tensor`` loop only: evaluate an exponential moving average of the weights with
            this per-step decay (0: the weights themselves).
        flip_tta: ``tensor`` loop only: average the class probabilities of each test image and its mirror.
    """

    train_images: int = 10000
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.1
    warmup_fraction: float = 0.15
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = False
    subset_seed: int = 0
    loop: Literal["lightning", "tensor"] = "lightning"
    ema_decay: float = 0.0
    flip_tta: bool = False

    def __post_init__(self) -> None:
        if self.loop == "lightning" and (self.ema_decay or self.flip_tta):
            raise ValueError("recipe.ema_decay and recipe.flip_tta need recipe.loop: tensor (the Lightning loop "
                             "has neither).")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"recipe.ema_decay {self.ema_decay} must lie in [0, 1) (0: no EMA).")


@dataclass(frozen=True)
class Selection:
    """Which architectures make up the ground truth.

    Args:
        stratified: architectures spread over the space's FLOPs range (one per equal-width stratum).
        median_band: further architectures with FLOPs within ``band_tolerance`` of the median.
        band_tolerance: relative half-width of the median-FLOPs band (0.1: +-10 %).
        pool: uniform random architectures drawn to pick from.
        seed: seed of the pool (the whole selection follows from it).
        flops_bands: instead of ``median_band``, this many equal-FLOPs groups at evenly spaced quantiles
            of the pool's FLOPs (a group: ``median_band`` architectures within ``band_tolerance``, those
            that differ most in depth, i.e. that trade layers against kernel and expansion), plus the
            space's cheapest and most expensive path. 0: the single median band.
        include: further architectures by their choices (a pilot's hand-picked set); listed first.
        uniform: further architectures drawn uniformly at random from the whole space (not from a band),
            appended after all the others, so raising it keeps every existing id and record: a ranking
            judged on them is judged on the space a search sees, not on hand-chosen strata.
    """

    stratified: int = 24
    median_band: int = 8
    band_tolerance: float = 0.1
    pool: int = 20000
    seed: int = 0
    flops_bands: int = 0
    include: tuple[tuple[str, ...], ...] = ()
    uniform: int = 0


def select_architectures(space_config: dict[str, Any], sel: Selection) -> dict[str, Any]:
    """The architectures of the ground truth, with FLOPs, the median and the band (deterministic)."""
    sampler = space_sampler(space_config["family"], space_config)
    rng = random.Random(sel.seed)
    pool, seen = [], set()
    for _ in range(sel.pool):
        choices = tuple(sampler.draw(rng))
        if choices not in seen:
            seen.add(choices)
            pool.append((choices, sampler.flops(choices)))
    median = statistics.median(f for _, f in pool)
    lo = sampler.fixed + sum(min(row) for row in sampler.table)
    hi = sampler.fixed + sum(max(row) for row in sampler.table)
    chosen: list[dict[str, Any]] = []
    taken: set[tuple] = set()
    for choices in sel.include:
        choices = tuple(choices)
        if len(choices) != len(sampler.names) or any(c not in ok for c, ok in zip(choices, sampler.names)):
            raise ValueError(f"selection.include {list(choices)} does not fit the space ({len(sampler.names)} layers, "
                             f"choices {sampler.names[0]} ...).")
        taken.add(choices)
        chosen.append({"choices": list(choices), "flops": sampler.flops(choices), "stratum": "included"})
    if sel.flops_bands:
        chosen += _flops_bands(sampler, pool, sel, taken)
    else:
        width = (hi - lo) / sel.stratified if sel.stratified else 0
        for k in range(sel.stratified):
            centre = lo + (k + 0.5) * width
            choices, flops = min((p for p in pool if p[0] not in taken), key=lambda p: (abs(p[1] - centre), p[0]))
            taken.add(choices)
            chosen.append({"choices": list(choices), "flops": flops, "stratum": f"range {k + 1}/{sel.stratified}"})
        band = [p for p in pool if p[0] not in taken and abs(p[1] - median) <= sel.band_tolerance * median]
        if len(band) < sel.median_band:
            raise ValueError(f"Only {len(band)} architectures of the pool lie within {sel.band_tolerance:.0%} of the "
                             f"median FLOPs; raise selection.pool or band_tolerance, or lower median_band.")
        for choices, flops in random.Random(sel.seed + 1).sample(band, sel.median_band):
            chosen.append({"choices": list(choices), "flops": flops, "stratum": "median band"})
    if sel.uniform:
        rest = [p for p in pool if p[0] not in taken]
        if len(rest) < sel.uniform:
            raise ValueError(f"selection.uniform {sel.uniform} exceeds the {len(rest)} distinct architectures left "
                             f"in the pool; raise selection.pool.")
        random.Random(sel.seed + 2).shuffle(rest)  # a shuffle, not sample(): the first k stay the first k
        for choices, flops in rest[: sel.uniform]:
            chosen.append({"choices": list(choices), "flops": flops, "stratum": "uniform"})
    for i, arch in enumerate(chosen):
        arch["id"] = f"a{i:02d}"
        if sel.flops_bands:
            arch["depth"] = _depth(tuple(arch["choices"]))
            arch["in_median_band"] = "band" in arch
        else:
            arch["in_median_band"] = abs(arch["flops"] - median) <= sel.band_tolerance * median
    return {"architectures": chosen, "median_flops": median, "space_flops_range": [lo, hi]}


def _depth(choices: tuple[str, ...]) -> int:
    """Layers that are not an identity (or a skipped 'zero'): the network's searchable depth."""
    return sum(c not in ("identity", "zero") for c in choices)


def _flops_bands(sampler: Sampler, pool: list[tuple[tuple, int]], sel: Selection,
                 taken: set[tuple]) -> list[dict[str, Any]]:
    """The cheapest and dearest path, then ``flops_bands`` groups of ``median_band`` architectures of (nearly)
    equal FLOPs that differ most in depth, at the quantiles k / (bands + 1) of the pool's FLOPs."""
    chosen: list[dict[str, Any]] = []
    ends = [tuple(names[min(range(len(row)), key=row.__getitem__)] for row, names in zip(sampler.table, sampler.names)),
            tuple(names[max(range(len(row)), key=row.__getitem__)] for row, names in zip(sampler.table, sampler.names))]
    for choices, label in zip(ends, ("cheapest", "most expensive")):
        if choices not in taken:
            taken.add(choices)
            chosen.append({"choices": list(choices), "flops": sampler.flops(choices), "stratum": label})
    flops_sorted = sorted(f for _, f in pool)
    rng = random.Random(sel.seed + 1)
    for k in range(1, sel.flops_bands + 1):
        centre = flops_sorted[int(k * (len(flops_sorted) - 1) / (sel.flops_bands + 1))]
        near = [p for p in pool if p[0] not in taken and abs(p[1] - centre) <= sel.band_tolerance * centre]
        by_depth: dict[int, list] = {}
        for p in near:
            by_depth.setdefault(_depth(p[0]), []).append(p)
        if len(near) < sel.median_band:
            raise ValueError(f"Only {len(near)} architectures lie within {sel.band_tolerance:.0%} of FLOPs band "
                             f"{k}'s centre; raise selection.band_tolerance or lower median_band.")
        # round-robin over depths, shallowest and deepest first, so a band spans its depth range
        depths = sorted(by_depth)
        order = [d for pair in zip(depths, reversed(depths)) for d in pair][: len(depths)]
        for d in order:
            rng.shuffle(by_depth[d])
        picked: list = []
        while len(picked) < sel.median_band:
            for d in order:
                if by_depth[d] and len(picked) < sel.median_band:
                    picked.append(by_depth[d].pop())
        for choices, flops in sorted(picked, key=lambda p: p[1]):
            taken.add(choices)
            chosen.append({"choices": list(choices), "flops": flops, "stratum": f"band {k}/{sel.flops_bands}",
                           "band": k, "band_centre_flops": centre})
    return chosen


# -- one job: one architecture, one seed (runs in a worker process) ----------------------------------

def train_one(arch_file: str, seed: int, recipe: dict[str, Any], data: dict[str, Any], record: str,
              threads: int, accelerator: str = "cpu") -> dict[str, Any]:
    """Train ``arch_file`` from scratch with ``recipe`` and test it on the real test set; write ``record``."""
    import lightning as L
    import torch
    from lightning.pytorch.cli import instantiate_class
    from torch.utils.data import DataLoader, Subset

    from dfnas_pl.retrain import RetrainClassifier

    torch.set_num_threads(threads)
    r = TrainingRecipe(**recipe)
    if r.loop == "tensor":
        return train_one_on_tensors(arch_file, seed, r, record)
    for name in ("lightning.pytorch", "lightning.fabric"):  # one line per job is enough in the driver's log
        logging.getLogger(name).setLevel(logging.ERROR)
    start = time.time()
    dm = instantiate_class((), data)  # {class_path, init_args}, as in the configs
    dm.hparams.augment = r.augment
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    order = torch.randperm(len(dm.train_set), generator=torch.Generator().manual_seed(r.subset_seed)).tolist()
    if r.train_images > len(order):
        raise ValueError(f"recipe.train_images {r.train_images} exceeds the {len(order)} training images.")
    train = DataLoader(Subset(dm.train_set, order[: r.train_images]), batch_size=r.batch_size, shuffle=True,
                       drop_last=True, generator=torch.Generator().manual_seed(seed))
    test = DataLoader(dm.test_set, batch_size=500)
    L.seed_everything(seed, verbose=False)
    metrics = Path(record).with_suffix(".metrics.json")
    model = RetrainClassifier(arch_file, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay,
                              label_smoothing=r.label_smoothing, warmup_fraction=r.warmup_fraction,
                              metrics_path=str(metrics))
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=r.epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=str(Path(record).parent))
    trainer.fit(model, train_dataloaders=train)
    trainer.test(model, dataloaders=test, verbose=False)
    result = json.loads(metrics.read_text())
    metrics.unlink()
    out = {"arch_file": arch_file, "seed": seed, "test_top1": result["test_top1"], "test_images": len(dm.test_set),
           "seconds": round(time.time() - start, 1), "device": device_name(model.device)}
    atomic_write_json(record, out)
    return out


def train_one_on_tensors(arch_file: str, seed: int, recipe: TrainingRecipe, record: str) -> dict[str, Any]:
    """The ``tensor`` loop's job: the split decoded once (``tensors.pt`` of the work dir), a plain loop."""
    import torch

    from dfnas_pl.drivers.tensor_training import load_tensors, train_on_tensors
    from dfnas_pl.search.export import build_from_architecture

    start = time.time()
    data = load_tensors(Path(arch_file).parents[2] / "tensors.pt")
    torch.manual_seed(seed)
    model = build_from_architecture(arch_file)
    result = train_on_tensors(model, data, recipe, seed)
    out = {"arch_file": arch_file, "seed": seed, **result, "test_images": len(data["test_y"]),
           "seconds": round(time.time() - start, 1), "device": device_name(torch.device("cpu"))}
    atomic_write_json(record, out)
    return out


def device_name(device: Any) -> str:
    """What a job ran on, for its record: the GPU's name, or the CPU's."""
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {platform.processor() or platform.machine()}"


def check_accelerator(accelerator: str) -> None:
    """A GPU asked for where there is none is refused before any job starts (not as N worker tracebacks)."""
    import torch

    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu, but torch sees no CUDA device on this machine: run with "
                         "--accelerator cpu (or auto), or on a machine with a GPU.")


# -- the driver ---------------------------------------------------------------------------------------

class GroundTruth:
    """Real-data top-1 of fixed architectures of one space, each trained with one recipe and several seeds."""

    def __init__(self, space: LayerwiseSpaceConfig = LayerwiseSpaceConfig(),
                 output: str = "runs/groundtruth/groundtruth.json", work_dir: str = "runs/groundtruth/jobs",
                 data: VisionDataModule = REAL_DATA, recipe: TrainingRecipe = TrainingRecipe(),
                 selection: Selection = Selection(), seeds: list[int] = [0, 1], workers: int = 2,
                 threads_per_worker: int = 1, limit: int | None = None,
                 accelerator: Literal["cpu", "gpu", "auto"] = "cpu") -> None:
        """
        Args:
            space: the layer-wise search space (as in the search config)
            output: the ground-truth JSON (rewritten after every finished job)
            work_dir: per-job records and architecture files (the unit of resume)
            data: real data: a VisionDataModule (class_path + init_args; its training split and test set),
                kept as that mapping: each job's process builds its own
            recipe: the one training recipe
            selection: which architectures
            seeds: training seeds per architecture (>= 2)
            workers: parallel training processes
            threads_per_worker: torch threads per process
            limit: run at most this many new jobs, then stop
            accelerator: where each job trains (Lightning's accelerator, one device per job; several workers
                may share one GPU). Not part of the recipe: records of one recipe may come from CPU and GPU;
                each record names its device
        """
        if len(seeds) < 2:
            raise ValueError(f"seeds {seeds}: the noise ceiling needs at least 2 seeds per architecture.")
        self.space = dataclasses.asdict(space)
        self.output, self.work = Path(output), Path(work_dir)
        self.data, self.recipe, self.selection = data, recipe, selection
        self.seeds, self.workers, self.threads, self.limit = list(seeds), workers, threads_per_worker, limit
        self.accelerator = accelerator  # where the jobs run; not a setting: the recipe is the same on any device
        if recipe.loop == "tensor" and accelerator == "gpu":
            raise ValueError("recipe.loop: tensor trains on the CPU only; use --accelerator cpu, or recipe.loop: "
                             "lightning on a GPU.")

    def settings(self) -> dict[str, Any]:
        """What the numbers depend on: a rerun in the same directory must match it exactly."""
        return json.loads(json.dumps({"space": self.space, "recipe": dataclasses.asdict(self.recipe),
                                      "selection": dataclasses.asdict(self.selection), "data": self.data,
                                      "seeds": self.seeds}))

    def check_settings(self) -> None:
        path = self.work / "settings.json"
        mine = self.settings()
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); delete {self.work} to start the ground truth "
                                 f"over.") from err
            # fields added since the directory was made: their defaults, which is what it was made with
            for key, cls in (("space", LayerwiseSpaceConfig), ("recipe", TrainingRecipe), ("selection", Selection)):
                if isinstance(saved, dict) and isinstance(saved.get(key), dict):
                    saved[key] = json.loads(json.dumps(dataclasses.asdict(as_dataclass(cls, saved[key]))))
            if isinstance(saved, dict) and isinstance(saved.get("data"), dict):
                saved["data"] = _new_arguments_at_default(saved["data"], mine["data"])
            if _more_seeds(saved, mine):  # a seed added: every record made so far is still valid
                print(f"Ground truth: seeds {saved['seeds']} -> {mine['seeds']} (the records made so far are kept).",
                      flush=True)
                atomic_write_json(path, mine)
            elif _other_uniform(saved, mine):  # architectures appended or a prefix read: ids and records agree
                if mine["selection"]["uniform"] > saved["selection"].get("uniform", 0):
                    print(f"Ground truth: {saved['selection'].get('uniform', 0)} -> {mine['selection']['uniform']} "
                          f"uniform architectures (the records made so far are kept).", flush=True)
                    atomic_write_json(path, mine)
            elif _appended_include(saved, mine):  # listed architectures appended: earlier ids and records agree
                print(f"Ground truth: {len(saved['selection']['include'])} -> {len(mine['selection']['include'])} "
                      f"listed architectures (the records made so far are kept).", flush=True)
                atomic_write_json(path, mine)
            elif saved != mine:
                diff = sorted(_diff(saved, mine))
                raise ValueError(f"The ground-truth directory {self.work} was made with other settings ({'; '.join(diff)}). "
                                 f"Its records would mix two recipes: set another work_dir (and output), or delete "
                                 f"{self.work} to start over.")
        else:
            atomic_write_json(path, mine)

    @one_writer("work", "ground-truth work")
    def __call__(self) -> dict[str, Any]:
        check_accelerator(self.accelerator)
        self.check_settings()
        from lightning.pytorch.cli import instantiate_class

        from dfnas_pl.data.compatibility import check_real_data

        check_real_data(instantiate_class((), self.data), self.space, "the ground truth's space", normalisation=False)
        chosen = select_architectures(self.space, self.selection)
        from dfnas_pl.search.export import write_architecture

        if self.recipe.loop == "tensor":  # decoded once, read by every job
            from dfnas_pl.drivers.tensor_training import materialise

            materialise(instantiate_class((), self.data), self.work / "tensors.pt")
        arch_files = {}
        for arch in chosen["architectures"]:
            path = self.work / "archs" / arch["id"] / "architecture.json"
            if not path.exists():
                cfg = {k: v for k, v in self.space.items() if k != "image_size"}
                write_architecture(path, "groundtruth", self.space["family"], cfg, self.space["image_size"],
                                   arch["choices"])
            arch.update(params=json.loads(path.read_text())["params"])
            arch_files[arch["id"]] = path
        # architecture-major: a partial run already holds seed pairs, so the noise ceiling is known early;
        # seeds beyond the first two wait until every architecture has its pair
        jobs = [(a["id"], s) for a in chosen["architectures"] for s in self.seeds]
        todo = sorted((j for j in jobs if not self.record(*j).exists()),
                      key=lambda j: self.seeds.index(j[1]) >= 2)
        if self.limit is not None:
            todo = todo[: self.limit]
        print(f"Ground truth {self.space['family']}: {len(chosen['architectures'])} architectures x {len(self.seeds)} "
              f"seeds = {len(jobs)} jobs, {len(jobs) - len(todo)} already done, {len(todo)} to run "
              f"({self.workers} worker{'s' if self.workers != 1 else ''} x {self.threads} thread(s), accelerator {self.accelerator}). "
              f"Records: {self.work / 'records'}", flush=True)
        started = time.time()
        if todo:
            with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn")) as pool:
                pending = {pool.submit(train_one, str(arch_files[a]), s, dataclasses.asdict(self.recipe), self.data,
                                       str(self.record(a, s)), self.threads, self.accelerator): (a, s)
                           for a, s in todo}
                done_count = len(jobs) - len(todo)
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        a, s = pending.pop(future)
                        out = future.result()
                        done_count += 1
                        print(f"[{done_count}/{len(jobs)}] {a} seed {s}: top-1 {out['test_top1']:.4f} "
                              f"({out['seconds']:.0f} s)", flush=True)
                    self.write(chosen, time.time() - started)
        return self.write(chosen, time.time() - started)

    def record(self, arch_id: str, seed: int) -> Path:
        return self.work / "records" / f"{arch_id}_seed{seed}.json"

    def write(self, chosen: dict[str, Any], invocation_seconds: float) -> dict[str, Any]:
        archs, job_seconds, devices = [], 0.0, set()
        for arch in chosen["architectures"]:
            top1, nll, seconds = {}, {}, {}
            for s in self.seeds:
                if self.record(arch["id"], s).exists():
                    rec = json.loads(self.record(arch["id"], s).read_text())
                    top1[str(s)], seconds[str(s)] = rec["test_top1"], rec["seconds"]
                    if "test_nll" in rec:
                        nll[str(s)] = rec["test_nll"]
                    job_seconds += rec["seconds"]
                    devices.add(rec.get("device", "cpu (not recorded)"))
            archs.append({**arch, "top1": top1, **({"nll": nll} if nll else {}), "seconds": seconds,
                          "mean_top1": statistics.mean(top1.values()) if top1 else None})
        complete = all(len(a["top1"]) == len(self.seeds) for a in archs)
        wall = self.work / "wall_seconds.json"
        walls = json.loads(wall.read_text()) if wall.exists() else {}
        walls[str(os.getpid()) + "@" + str(int(time.time() - invocation_seconds))] = round(invocation_seconds, 1)
        atomic_write_json(wall, walls)
        result = {"format": GROUNDTRUTH_FORMAT, "space": self.space["family"], "space_config": self.space,
                  "complete": complete, "architectures": archs, "median_flops": chosen["median_flops"],
                  "space_flops_range": chosen["space_flops_range"], "selection": dataclasses.asdict(self.selection),
                  "recipe": dataclasses.asdict(self.recipe), "data": self.data, "seeds": self.seeds,
                  "noise_ceiling": noise_ceiling(archs, self.seeds),
                  "signal": signal_report(archs, self.seeds),
                  "wall_seconds": round(sum(walls.values()), 1), "job_seconds": round(job_seconds, 1),
                  "workers": self.workers, "threads_per_worker": self.threads, "devices": sorted(devices),
                  "versions": versions(),
                  # --limit only bounds how many jobs run (--limit 0 rewrites the JSON from the records)
                  "command": recorded_command("groundtruth", "--limit")}
        atomic_write_json(self.output, result)  # strict JSON (NaN -> null)
        if complete:
            plot_groundtruth(result, self.output.with_suffix(".png"))
        return result


def noise_ceiling(archs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Seed-vs-seed rank agreement of the ground truth itself (first two seeds, finished pairs only):
    no search data can rank better than the truth agrees with itself."""
    a, b = str(seeds[0]), str(seeds[1])
    pairs = [(x["top1"][a], x["top1"][b], x["in_median_band"]) for x in archs if a in x["top1"] and b in x["top1"]]
    band = [(p, q) for p, q, inside in pairs if inside]
    lo, hi = (bootstrap_interval(kendall_tau, [p for p, _, _ in pairs], [q for _, q, _ in pairs], samples=1000)
              if len(pairs) >= 4 else (math.nan, math.nan))
    means = [statistics.mean(x["top1"].values()) for x in archs if len(x["top1"]) == len(seeds)]
    flops = [float(x["flops"]) for x in archs if len(x["top1"]) == len(seeds)]
    return {"seeds": [seeds[0], seeds[1]], "n": len(pairs),
            "kendall_tau": kendall_tau([p for p, _, _ in pairs], [q for _, q, _ in pairs]),
            "tau_ci_low": lo, "tau_ci_high": hi,
            "architecture_std": statistics.pstdev(means) if len(means) > 1 else None,
            "flops_kendall_tau": kendall_tau(flops, means) if len(means) > 1 else None,
            "spearman_rho": spearman_rho([p for p, _, _ in pairs], [q for _, q, _ in pairs]),
            "band_n": len(band), "band_kendall_tau": kendall_tau([p for p, _ in band], [q for _, q in band]),
            "mean_abs_seed_difference": statistics.mean(abs(p - q) for p, q, _ in pairs) if pairs else None}


def plot_groundtruth(gt: dict[str, Any], path: Path) -> Path:
    """Seed vs seed top-1 (the noise ceiling, seen) and mean top-1 vs MFLOPs (what FLOPs alone explains)."""
    from dfnas_pl.search.plots import plt, save_figure

    a, b = (str(s) for s in gt["seeds"][:2])
    archs = [x for x in gt["architectures"] if a in x["top1"] and b in x["top1"]]
    c = gt["noise_ceiling"]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
    banded = any("band" in x for x in archs)
    for inside, marker, label in ((False, "o", "cheapest / dearest" if banded else "FLOPs range"),
                                  (True, "^", "equal-FLOPs bands" if banded else "median band")):
        sub = [x for x in archs if x["in_median_band"] == inside]
        axes[0].scatter([100 * x["top1"][a] for x in sub], [100 * x["top1"][b] for x in sub], marker=marker, s=16,
                        label=label)
        axes[1].scatter([x["flops"] / 1e6 for x in sub], [100 * statistics.mean(x["top1"].values()) for x in sub],
                        marker=marker, s=16, label=label)
    lims = [100 * min(min(x["top1"].values()) for x in archs), 100 * max(max(x["top1"].values()) for x in archs)]
    axes[0].plot(lims, lims, color="grey", lw=0.8)
    tau = c.get("kendall_tau")
    axes[0].set_title(f"seed {a} vs seed {b}: Kendall tau {tau:.2f}" if tau is not None else "seed vs seed", fontsize=9)
    axes[0].set_xlabel(f"top-1 seed {a} (%)")
    axes[0].set_ylabel(f"top-1 seed {b} (%)")
    ft = c.get("flops_kendall_tau")
    axes[1].set_title(f"mean top-1 vs FLOPs: tau {ft:.2f}" if ft is not None else "mean top-1 vs FLOPs", fontsize=9)
    axes[1].set_xlabel("MFLOPs")
    axes[1].set_ylabel("mean top-1 (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Ground truth {gt['space']}: {len(archs)} architectures, recipe {gt['recipe']['train_images']} images "
                 f"x {gt['recipe']['epochs']} epochs", fontsize=10)
    return save_figure(fig, path)


def _more_seeds(saved: Any, mine: dict[str, Any]) -> bool:
    """True when ``mine`` only appends seeds to ``saved``: the issue's rule adds a third seed where the
    first two leave a group's rank agreement low, without retraining the first two."""
    if not isinstance(saved, dict) or not isinstance(saved.get("seeds"), list):
        return False
    old, new = saved["seeds"], mine["seeds"]
    return (len(new) > len(old) and new[: len(old)] == old
            and {k: v for k, v in saved.items() if k != "seeds"} == {k: v for k, v in mine.items() if k != "seeds"})


def _other_uniform(saved: Any, mine: dict[str, Any]) -> bool:
    """True when ``mine`` differs from ``saved`` only in ``selection.uniform``. The uniform architectures come
    last, in an order fixed by the seed alone, so a larger count appends ids and a smaller one reads a prefix
    of the same directory (a study pinned to the smaller ground truth keeps its meaning): every record agrees."""
    if not isinstance(saved, dict) or not isinstance(saved.get("selection"), dict):
        return False
    rest = lambda d: {**d, "selection": {k: v for k, v in d["selection"].items() if k != "uniform"}}  # noqa: E731
    return rest(saved) == rest(mine)


def _appended_include(saved: Any, mine: dict[str, Any]) -> bool:
    """True when ``mine`` only appends to ``selection.include`` of a selection that is nothing but that list
    (no strata, bands or uniform draws, which would come after it and change ids): every earlier id keeps its
    architecture, so its records stay valid (a study that adds the architectures its searches find)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("selection"), dict):
        return False
    sel_old, sel_new = saved["selection"], mine["selection"]
    only_listed = all(not sel_new.get(k) for k in ("stratified", "median_band", "flops_bands", "uniform"))
    old, new = [list(c) for c in sel_old.get("include", [])], [list(c) for c in sel_new.get("include", [])]
    rest = lambda d: {**d, "selection": {k: v for k, v in d["selection"].items() if k != "include"}}  # noqa: E731
    return only_listed and len(new) > len(old) and new[: len(old)] == old and rest(saved) == rest(mine)


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"]


def load_groundtruth(path: str | Path) -> dict[str, Any]:
    """A ground-truth JSON, checked: a missing, corrupt or foreign file gets the fix in the message."""
    path = Path(path)
    fix = (f"restore it (`git checkout -- {path}`) or make it again with `python -m dfnas_pl groundtruth "
           f"--config studies/layerwise_groundtruth/groundtruth_<space>.yaml`")
    if not path.is_file():
        raise FileNotFoundError(f"No ground-truth file '{path}': {fix}.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"The ground-truth file '{path}' is not valid JSON ({err}): {fix}.") from err
    if not isinstance(data, dict) or data.get("format") != GROUNDTRUTH_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"'{path}' is not a dfnas_pl ground-truth file (format {got!r}, expected "
                         f"{GROUNDTRUTH_FORMAT!r}): {fix}.")
    broken = [a.get("id", i) for i, a in enumerate(data.get("architectures", []))
              if not isinstance(a, dict) or not {"choices", "flops", "top1"} <= set(a)]
    if broken or not data.get("architectures"):
        raise ValueError(f"The ground-truth file '{path}' has no or incomplete architecture entries "
                         f"({broken[:5]}): {fix}.")
    return data


def parser() -> ArgumentParser:
    return driver_parser(GroundTruth, "python -m dfnas_pl groundtruth",
                         "studies/layerwise_groundtruth/groundtruth_<space>.yaml")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    driver = driver_from_args(GroundTruth, argv, "python -m dfnas_pl groundtruth")
    result = driver()
    ceiling = result["noise_ceiling"]
    done = sum(len(a["top1"]) for a in result["architectures"])
    print(f"\nGround truth written to {driver.output} ({done} of {len(result['architectures']) * len(driver.seeds)} jobs; "
          f"complete: {result['complete']}). Noise ceiling (seed {ceiling['seeds'][0]} vs {ceiling['seeds'][1]}, "
          f"{ceiling['n']} architectures): Kendall tau {_fmt(ceiling['kendall_tau'])} [95 % CI "
          f"{_fmt(ceiling.get('tau_ci_low'))}, {_fmt(ceiling.get('tau_ci_high'))}], Spearman rho "
          f"{_fmt(ceiling['spearman_rho'])}; median-FLOPs band ({ceiling['band_n']}): tau "
          f"{_fmt(ceiling['band_kendall_tau'])}; mean |seed difference| {_fmt(ceiling['mean_abs_seed_difference'], 4)}; "
          f"FLOPs alone vs the mean: tau {_fmt(ceiling.get('flops_kendall_tau'))}.")
    return result


def _new_arguments_at_default(saved: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """A saved data module spec with the arguments its class gained since (``train_images``, say) added at
    the value this run gives them when that is the class's default: what the records were made with."""
    if saved.get("class_path") != mine.get("class_path"):
        return saved
    import importlib
    import inspect

    module, name = mine["class_path"].rsplit(".", 1)
    params = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    old, new = dict(saved.get("init_args") or {}), mine.get("init_args") or {}
    for key, value in new.items():
        if key not in old and key in params and params[key].default is not inspect.Parameter.empty \
                and json.loads(json.dumps(params[key].default)) == value:
            old[key] = value
    return {**saved, "init_args": old}


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"
