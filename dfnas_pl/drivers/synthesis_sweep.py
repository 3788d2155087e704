"""``python -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_sweep.yaml``: the cheapest
instrument for a synthesis setting - the data-free distillation check, with seeds and intervals - over
named variants of the synthesis config (one factor at a time around the default).

Per variant: one synthetic set (the synthesis stage with the variant's extra arguments; its minutes,
teacher top-1, BN distance and diversity from its manifest), then for each seed a student trained only
on it by KD and tested on the real test set (the distillation stage with ``experiments/fmnist/
distill_check.yaml``, through the CLI as by hand). With ``set_per_seed`` every seed gets a set of its own
instead (synthesis seed = student seed), so the interval holds the set-to-set variance too, not only
the student's: one set per variant measures that set, not the setting. With ``real_images`` a row ``real_<N>`` trains
the same student on N real training images (class-balanced, the teacher's soft labels: it never sees a real
label) for every seed, the reference a synthetic set of N images is read against. Every (variant, seed) writes its
own record under ``<table_dir>/records/``, so a killed sweep - or a later session on a fresh clone -
redoes only what has none. The table (``<table_name>.md/.csv/.json`` and a plot) gives each variant's
student top-1 as mean, 95 % t-interval over seeds and the per-seed values, says which variants overlap
the reference, and gives the seed-paired difference from the reference with its interval (the same seed
means the same student initialisation and, per seed, the same image initialisation). ``effects`` name
factors of a factorial sweep by their (with, without) variant pairs - label calibration is
``calibration - plain``, ``calibration_zoom - zoom``, ... - and each gets the mean of its pairs'
differences per seed and a t-interval over the seeds (the seed is the unit of replication: the pairs of
one seed share its student initialisation, so they are averaged before the interval, not counted apart).
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
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from dfnas_pl.data.vision import VisionDataModule
from dfnas_pl.drivers.commands import REAL_DATA, driver_from_args, driver_parser, recorded_command, versions
from dfnas_pl.drivers.groundtruth import _fmt
from dfnas_pl.drivers.synthetic_sets import make_synthetic_sets, set_dir
from dfnas_pl.drivers.variants import Variant, check_variants
from dfnas_pl.stats import t_interval
from dfnas_pl.utils.io import atomic_write_bytes, atomic_write_json
from dfnas_pl.utils.locking import one_writer

EFFECT_COLUMNS = ["effect", "pairs", "seeds", "difference", "ci_low", "ci_high", "per_seed", "verdict"]
CSV_COLUMNS = ["variant", "images", "synthesis_minutes", "teacher_passes_per_image", "teacher_top1", "bn_distance",
               "diversity", "sets", "seeds",
               "student_top1_mean", "ci_low", "ci_high", "student_top1_std", "per_seed", "overlaps_reference",
               "paired_difference", "difference_low", "difference_high"]


class SynthesisSweep:
    """The distillation check (a student taught by the teacher on the set, tested on real data) over synthesis
    variants, seeds and an optional real-data row, with t-intervals and paired effects."""

    def __init__(self, run_dir: str = "runs/fmnist_synthesis_sweep", table_dir: str = "runs/synthesis_sweep/table",
                 variants: dict[str, Variant] = {"default": []}, seeds: list[int] = [0, 1, 2],
                 synthesis_config: str = "experiments/fmnist/synthesize.yaml",
                 distill_config: str = "experiments/fmnist/distill_check.yaml", distill_overrides: list[str] = [],
                 reference: str | None = "default", workers: int = 2, threads_per_worker: int = 1,
                 table_name: str = "synthesis_sweep", set_per_seed: bool = False,
                 effects: dict[str, list[list[str]]] = {}, real_images: int | None = None,
                 real_data: VisionDataModule = REAL_DATA, table_only: bool = False) -> None:
        """
        Args:
            run_dir: sets, students, logs
            table_dir: per-(variant, seed) records and the table (committed)
            variants: name -> extra synthesis settings (a mapping of its constructor arguments, or CLI arguments;
                [] = the synthesis config as it is)
            seeds: distillation (student) seeds per variant
            synthesis_config: the synthesis stage's config
            distill_config: the student's config (the distillation check)
            distill_overrides: extra CLI arguments of every student run
            reference: the variant every other one is compared with (overlap of intervals)
            workers: syntheses / students run in parallel
            threads_per_worker: torch threads per process
            table_name: the table's file name
            set_per_seed: every seed its own synthetic set (synthesis seed = student seed): intervals hold the
                set-to-set variance; false: one set per variant, only the students vary
            effects: factor name -> [with, without] variant pairs; the table adds each factor's difference
                averaged over its pairs per seed, with a t-interval over seeds
            real_images: a row real_<N>: the same student taught on N real training images (class-balanced, the
                teacher's soft labels), the reference a synthetic set of N images is read against; null: none
            real_data: the real data of the real_<N> row (a VisionDataModule, kept as its class_path + init_args
                mapping)
            table_only: rewrite the table from the records there are and run nothing (a sweep still running, or
                one to be continued later)
        """
        if not variants:
            raise ValueError("No variants: give at least one (name -> extra synthesis arguments, [] for the config).")
        variants = check_variants(dict(variants), synthesis_config, "variant")  # a misspelt setting first
        real = {f"real_{real_images}"} if real_images else set()  # the real-data row's name
        if reference is not None and reference not in {*variants, *real}:
            raise ValueError(f"reference '{reference}' is not one of the variants {sorted({*variants, *real})}.")
        if not seeds:
            raise ValueError("seeds is empty: give the distillation seeds (3 for an interval).")
        self.run, self.table_dir = Path(run_dir), Path(table_dir)
        self.variants = variants
        self.seeds, self.table_only = list(seeds), table_only
        self.real_images, self.real = real_images, real
        self.real_data = real_data
        if self.real & set(variants):
            raise ValueError(f"A variant is named {sorted(self.real)}, the real-data row's name: rename it.")
        self.variants.update({name: [] for name in self.real})  # a row like the others; it makes no set
        self.synthesis_config, self.distill_config = synthesis_config, distill_config
        self.distill_overrides = check_variants({"distill_overrides": distill_overrides}, distill_config,
                                                "the student's")["distill_overrides"]
        if self.real:  # the real row's student: the set's batch size, not the set's data overrides
            import yaml

            pairs = list(zip(self.distill_overrides[::2], self.distill_overrides[1::2]))
            config_batch = (yaml.safe_load(Path(distill_config).read_text()).get("data", {}).get("init_args", {})
                            .get("batch_size", 64))
            self.real_batch = int(dict(pairs).get("--data.init_args.batch_size", config_batch))
            self.real_overrides = [a for flag, value in pairs if not flag.startswith("--data.") for a in (flag, value)]
        self.reference, self.workers, self.threads, self.table_name = reference, workers, threads_per_worker, table_name
        self.set_per_seed = set_per_seed
        self.effects = {name: [tuple(pair) for pair in pairs] for name, pairs in effects.items()}
        for name, pairs in self.effects.items():
            unknown = sorted({v for pair in pairs for v in pair} - set(variants))
            if not pairs or unknown or any(len(pair) != 2 for pair in pairs):
                raise ValueError(f"effect '{name}': give [with, without] pairs of variants ({sorted(variants)}); "
                                 f"{'unknown: ' + ', '.join(unknown) if unknown else 'got ' + repr(pairs)}.")

    def record(self, variant: str, seed: int) -> Path:
        return self.table_dir / "records" / f"{variant}_seed{seed}.json"

    def set_name(self, variant: str, seed: int) -> str:
        """The set a (variant, seed) student trains on: the variant's one set, or with ``set_per_seed`` its own."""
        return f"{variant}_seed{seed}" if self.set_per_seed else variant

    def set_path(self, variant: str, seed: int) -> str:
        return str(set_dir(self.run, self.set_name(variant, seed)))

    def make_set(self, variant: str, seed: int) -> str:
        """The (variant, seed) set with ``set_per_seed`` (synthesis seed = the student seed), made if missing."""
        name = self.set_name(variant, seed)
        extra = [*self.variants[variant], "--model.init_args.seed", str(seed), "--seed_everything", str(seed)]
        return make_synthetic_sets(self.run, self.synthesis_config, {name: extra}, [name], 1, self.threads)[name]

    def real_data_args(self, seed: int) -> list[str]:
        """The real-data row's data: ``real_images`` training images, class-balanced and seeded by the student's
        seed, at the batch size the check uses for sets."""
        init = {**self.real_data.get("init_args", {}), "batch_size": self.real_batch, "train_images": self.real_images,
                "split_seed": seed}
        return ["--data", json.dumps({"class_path": self.real_data["class_path"], "init_args": init})]

    def student_overrides(self, variant: str) -> list[str]:
        """``distill_overrides`` as given; for the real-data row without the ``--data.`` ones, which address the
        synthetic set's data module (its batch size is taken over by :meth:`real_data_args`)."""
        return self.real_overrides if variant in self.real else self.distill_overrides

    def distill(self, variant: str, seed: int, set_path: str | None) -> dict[str, Any]:
        """Train and test one student (fit, then test on the last checkpoint) through the CLI."""
        out = self.run / "distill" / variant / f"seed{seed}"
        ckpt, metrics = out / "checkpoints", out / "metrics.json"
        data = self.real_data_args(seed) if variant in self.real else ["--data.init_args.path", str(set_path)]
        args = ["--config", self.distill_config, "--seed_everything", str(seed), *data,
                "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out),
                "--trainer.callbacks.init_args.dirpath", str(ckpt), "--trainer.enable_progress_bar", "false",
                "--model.init_args.metrics_path", str(metrics), *self.student_overrides(variant)]
        env = {**os.environ, "DFNAS_NUM_THREADS": str(self.threads)}
        out.mkdir(parents=True, exist_ok=True)
        start = time.time()
        with open(out / "distill.log", "ab") as log:
            for stage, extra in (("fit", ["--ckpt_path", str(ckpt / "last.ckpt")] if (ckpt / "last.ckpt").exists()
                                  else []), ("test", ["--ckpt_path", str(ckpt / "last.ckpt")])):
                code = subprocess.run([sys.executable, "-m", "dfnas_pl", stage, *args, *extra], env=env, stdout=log,
                                      stderr=subprocess.STDOUT).returncode
                if code != 0:
                    raise RuntimeError(f"Distillation {stage} of {variant} seed {seed} failed (exit {code}); see "
                                       f"{out / 'distill.log'}. Fix the cause and run the same command again.")
        rec = {"variant": variant, "seed": seed, "test_top1": json.loads(metrics.read_text())["test_top1"],
               "seconds": round(time.time() - start, 1), "synthetic_set": set_path,
               "set_quality": set_quality(set_path) if set_path else None, **self.arguments(variant)}
        atomic_write_json(self.record(variant, seed), rec)
        return rec

    def arguments(self, variant: str) -> dict[str, list[str]]:
        """What a record was made with: a record is reused only for the same arguments."""
        if variant in self.real:
            return {"real_data": self.real_data, "distill_overrides": self.distill_overrides}
        return {"synthesis_arguments": self.variants[variant], "distill_overrides": self.distill_overrides}

    def check_records(self) -> None:
        """Refuse to mix records made with other arguments under a variant's name (an edited config)."""
        for variant in self.variants:
            for seed in self.seeds:
                path = self.record(variant, seed)
                if not path.exists():
                    continue
                rec = json.loads(path.read_text())
                changed = [k for k, v in self.arguments(variant).items() if k in rec and rec[k] != v]
                if changed:
                    raise ValueError(
                        f"{path} was made with other {' and '.join(changed)} "
                        f"({'; '.join(f'{k}: {rec[k]} now {self.arguments(variant)[k]}' for k in changed)}). Give the "
                        f"changed variant a new name, or delete its records under {path.parent} to remake them.")

    @one_writer("run", "synthesis-sweep run")
    def __call__(self) -> list[dict[str, Any]]:
        self.check_records()
        if self.table_only:
            return self.write_table()
        self.run.mkdir(parents=True, exist_ok=True)
        if not self.set_per_seed:  # the variants' sets first, in parallel; every student then reads its variant's
            made = [v for v in self.variants if v not in self.real]
            make_synthetic_sets(self.run, self.synthesis_config, self.variants, made, self.workers, self.threads)
        # seed-major order: a sweep cut short leaves whole seeds of every variant, which the paired difference needs
        todo = [(v, s) for s in self.seeds for v in self.variants if not self.record(v, s).exists()]
        total = len(self.variants) * len(self.seeds)
        print(f"Synthesis sweep: {len(self.variants)} variants x {len(self.seeds)} seeds"
              f"{' (a set per seed)' if self.set_per_seed else ''}, {total - len(todo)} done, "
              f"{len(todo)} to run on {self.workers} worker{'s' if self.workers != 1 else ''}.", flush=True)

        def job(v: str, s: int) -> dict[str, Any]:
            if v in self.real:
                return self.distill(v, s, None)
            return self.distill(v, s, self.make_set(v, s) if self.set_per_seed else self.set_path(v, s))

        with ThreadPoolExecutor(self.workers) as pool:  # each job is its own CLI process (or two: set, student)
            pending = {pool.submit(job, v, s): (v, s) for v, s in todo}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    v, s = pending.pop(future)
                    rec = future.result()
                    print(f"--- {v} seed {s}: student top-1 {rec['test_top1']:.4f} ({rec['seconds']:.0f} s)", flush=True)
                    self.write_table(quiet=True)  # a sweep cut short leaves the table of what it finished
        return self.write_table()

    def write_table(self, quiet: bool = False) -> list[dict[str, Any]]:
        records = self.records()
        top1 = self.top1(records)
        if not any(top1.values()):
            raise ValueError(f"No records under {self.table_dir / 'records'}: nothing to table yet. Run the sweep "
                             f"(the same command without --table_only).")
        rows = self.table(top1, records)
        self.write(rows, self.effect_rows(top1), quiet)
        return rows

    def records(self) -> dict[str, dict[int, dict[str, Any]]]:
        """Every record there is, per variant and seed, read once: a sweep cut short (or still running) tables
        what it has."""
        return {v: {s: json.loads(self.record(v, s).read_text()) for s in self.seeds if self.record(v, s).exists()}
                for v in self.variants}

    def qualities(self, variant: str, records: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        """The quality summary of each of the variant's sets: from its records (committed, so a fresh clone can
        remake the table), else from the set's manifest."""
        by_set: dict[str, dict[str, Any]] = {}
        if variant in self.real:
            return []
        for seed, rec in records.items():
            path = self.set_path(variant, seed)
            if path not in by_set:
                stored = rec.get("set_quality")
                if stored is None or ("teacher_passes_per_image" not in stored and (Path(path) / "manifest.json").exists()):
                    stored = {**set_quality(path), **(stored or {})}  # a record made before a quality key existed
                by_set[path] = stored
        return list(by_set.values())

    def top1(self, records: dict[str, dict[int, dict[str, Any]]] | None = None) -> dict[str, dict[int, float]]:
        """Student real test top-1 (%) per variant and seed, for the (variant, seed) pairs with a record."""
        records = self.records() if records is None else records
        return {v: {s: 100 * rec["test_top1"] for s, rec in recs.items()} for v, recs in records.items()}

    @staticmethod
    def differences(top1: dict[str, dict[int, float]], with_: str, without: str,
                    seeds: list[int] | None = None) -> list[float]:
        """Seed-paired differences ``with_ - without`` over the seeds both have (or ``seeds``), in seed order
        (the same seed: the same student and image initialisation)."""
        common = [s for s in top1[with_] if s in top1[without]] if seeds is None else seeds
        return [top1[with_][s] - top1[without][s] for s in common]

    def effect_rows(self, top1: dict[str, dict[int, float]] | None = None) -> list[dict[str, Any]]:
        """Per effect: the mean over its pairs of (with - without) for each seed, then mean and t-interval over seeds."""
        top1 = self.top1() if top1 is None else top1
        rows = []
        for name, pairs in self.effects.items():
            # the seeds every variant of the effect has: each seed's pairs are averaged together
            seeds = [s for s in self.seeds if all(s in top1[v] for pair in pairs for v in pair)]
            if not seeds:
                continue
            per_pair = [self.differences(top1, w, wo, seeds) for w, wo in pairs]
            per_seed = [statistics.mean(d) for d in zip(*per_pair, strict=True)]
            by_seed = dict(zip(seeds, per_seed, strict=True))
            lo, hi = t_interval(per_seed)
            rows.append({"effect": name, "pairs": ", ".join(f"{w} - {wo}" for w, wo in pairs), "seeds": len(per_seed),
                         "difference": statistics.mean(per_seed), "ci_low": lo, "ci_high": hi,
                         # every seed of the sweep, '-' where the effect lacks one (as in the variants' rows)
                         "per_seed": " / ".join(f"{by_seed[s]:+.2f}" if s in by_seed else "-" for s in self.seeds),
                         "verdict": ("n/a" if math.isnan(lo) else "helps" if lo > 0 else "hurts" if hi < 0 else
                                     "interval holds 0: not shown either way")})
        return rows

    def table(self, top1: dict[str, dict[int, float]] | None = None,
              records: dict[str, dict[int, dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
        records = self.records() if records is None else records
        top1 = self.top1(records) if top1 is None else top1
        rows = []
        for variant in self.variants:
            if not top1[variant]:
                continue  # not started yet
            sets = self.qualities(variant, records[variant])
            accs = list(top1[variant].values())
            lo, hi = t_interval(accs)

            def mean_of(key: str, sets: list[dict[str, Any]] = sets) -> float:  # over the variant's sets
                values = [q.get(key, math.nan) for q in sets]  # (records made before a key existed: NaN)
                return statistics.mean(values) if values else math.nan

            rows.append({"variant": variant, "images": sets[0]["images"] if sets else self.real_images,
                         "synthesis_minutes": mean_of("wall_time_s") / 60,
                         "teacher_passes_per_image": mean_of("teacher_passes_per_image"),
                         "teacher_top1": mean_of("teacher_top1"), "bn_distance": mean_of("bn_distance"),
                         "diversity": mean_of("diversity"), "sets": len(sets),
                         "seeds": len(accs), "student_top1_mean": statistics.mean(accs), "ci_low": lo, "ci_high": hi,
                         "student_top1_std": statistics.stdev(accs) if len(accs) > 1 else math.nan,
                         "per_seed": " / ".join(f"{top1[variant][s]:.2f}" if s in top1[variant] else "-"
                                                for s in self.seeds)})
        ref = next((r for r in rows if r["variant"] == self.reference), None)
        for r in rows:  # overlapping intervals: say so instead of ranking
            r["overlaps_reference"] = ("-" if ref is None or r is ref or math.isnan(r["ci_low"]) else
                                       "yes" if r["ci_low"] <= ref["ci_high"] and ref["ci_low"] <= r["ci_high"] else
                                       "no: above" if r["ci_low"] > ref["ci_high"] else "no: below")
            diffs = [] if ref is None or r is ref else self.differences(top1, r["variant"], self.reference)
            r["paired_difference"] = statistics.mean(diffs) if diffs else math.nan
            r["difference_low"], r["difference_high"] = t_interval(diffs)
        return rows

    def write(self, rows: list[dict[str, Any]], effects: list[dict[str, Any]] | None = None,
              quiet: bool = False) -> None:
        base = self.table_dir / self.table_name
        fmt = _fmt
        done = sum(r["seeds"] for r in rows)
        progress = "" if done == len(self.variants) * len(self.seeds) else \
            f"; partial: {done} of {len(self.variants) * len(self.seeds)} (variant, seed) records, '-' = not run yet"
        lines = [f"Distillation check (student trained only on the set, real test top-1 %; {len(self.seeds)} seeds, "
                 f"95 % t-interval; reference: {self.reference or 'none'}{progress})", "",
                 "| variant | images | synthesis min | teacher passes / image | teacher top-1 | BN distance | diversity | student top-1 [95 % CI] "
                 "| per seed | overlaps reference | paired difference [95 % CI] |",
                 "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['images']} | {fmt(r['synthesis_minutes'], 1)} | "
                  f"{fmt(r['teacher_passes_per_image'], 0)} | {fmt(r['teacher_top1'], 3)} | "
                  f"{fmt(r['bn_distance'])} | {fmt(r['diversity'], 3)} | {fmt(r['student_top1_mean'])} "
                  f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | {r['per_seed']} | {r['overlaps_reference']} | "
                  + ("-" if math.isnan(r["paired_difference"]) else f"{r['paired_difference']:+.2f} "
                     + ("[n/a]" if math.isnan(r["difference_low"]) else
                        f"[{r['difference_low']:+.2f}, {r['difference_high']:+.2f}]")) + " |"
                  for r in rows]
        sets = "a set of its own per seed (synthesis seed = student seed)" if self.set_per_seed else "one set per variant"
        lines.insert(1, f"Synthetic sets: {sets}. Quality columns: mean over the variant's sets.")
        if effects:
            lines += ["", "Effects (mean over the pairs of with - without, per seed; 95 % t-interval over seeds):", "",
                      "| effect | pairs | difference [95 % CI] | per seed | verdict |", "|---|---|---|---|---|"]
            lines += [f"| {e['effect']} | {e['pairs']} | {e['difference']:+.2f} "
                      + ("[n/a]" if math.isnan(e["ci_low"]) else f"[{e['ci_low']:+.2f}, {e['ci_high']:+.2f}]")
                      + f" | {e['per_seed']} | {e['verdict']} |" for e in effects]
        md = "\n".join(lines) + "\n"
        atomic_write_bytes(base.with_suffix(".md"), md.encode())
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows([{k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else
                               "" if isinstance(v, float) else v) for k, v in r.items()} for r in rows])
        atomic_write_bytes(base.with_suffix(".csv"), buf.getvalue().encode())
        if effects:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=EFFECT_COLUMNS)
            writer.writeheader()
            writer.writerows([{k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()} for e in effects])
            atomic_write_bytes(base.with_name(base.name + "_effects.csv"), buf.getvalue().encode())
        atomic_write_json(base.with_suffix(".json"), {
            "rows": rows, "seeds": self.seeds, "variants": self.variants, "reference": self.reference,
            "set_per_seed": self.set_per_seed, "effects": effects or [],
            "synthesis_config": self.synthesis_config, "distill_config": self.distill_config,
            "distill_overrides": self.distill_overrides, "versions": versions(),
            "command": sweep_command()})
        plot(base.with_suffix(".png"), rows, self.reference, effects or [])
        if not quiet:
            print("\n" + md + f"\nTable: {base.with_suffix('.md')} (.csv, .json, .png)")


def sweep_command(argv: list[str] | None = None) -> str:
    """The command that makes the records: a ``--table_only`` rewrite is not how the numbers were made."""
    return recorded_command("synthesis-sweep", "--table_only", argv)


def set_quality(path: str) -> dict[str, Any]:
    """A set's size, synthesis wall time and quality summary, read from its manifest."""
    manifest = Path(path) / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} is missing and the record of a student trained on it has no set_quality: "
                                f"the set is gone. Delete that variant's records to remake set and students.")
    m = json.loads(manifest.read_text())
    passes = m.get("cost", {}).get("per_image")
    if passes is None:  # a set made before the manifest counted them: every image took the batch's steps
        config = m.get("config", {})
        passes = config.get("iterations", math.nan) + config.get("lowres_iterations", 0)
    return {"images": m["images"], "wall_time_s": m.get("wall_time_s", math.nan), "teacher_passes_per_image": passes,
            **{k: m["quality"][k] for k in ("teacher_top1", "bn_distance", "diversity")}}


def plot(path: Path, rows: list[dict[str, Any]], reference: str | None, effects: list[dict[str, Any]]) -> Path:
    """Student top-1 per variant with its interval, the reference's interval as a band; beside it, each
    effect's difference with its interval against zero, and, when the variants spend different numbers of teacher
    passes per image, top-1 against that cost (a cheaper synthesizer is read off this panel)."""
    from dfnas_pl.search.plots import plt, save_figure

    costed = [r for r in rows if math.isfinite(r.get("teacher_passes_per_image") or math.nan)
              and r["teacher_passes_per_image"] > 0]
    with_cost = len({r["teacher_passes_per_image"] for r in costed}) > 1
    panels = 1 + bool(effects) + with_cost
    fig, axes = plt.subplots(1, panels, figsize=(4.5 + 5.5 * (panels - 1), max(3.0, 0.8 + 0.35 * len(rows))),
                             squeeze=False)
    ax = axes[0][0]
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        err = None if math.isnan(r["ci_low"]) else [[r["student_top1_mean"] - r["ci_low"]],
                                                     [r["ci_high"] - r["student_top1_mean"]]]
        ax.errorbar([r["student_top1_mean"]], [y], xerr=err, fmt="o", capsize=3,
                    color="black" if r["variant"] == reference else "tab:blue")
    ref = next((r for r in rows if r["variant"] == reference), None)
    if ref is not None and not math.isnan(ref["ci_low"]):
        ax.axvspan(ref["ci_low"], ref["ci_high"], color="grey", alpha=0.2, label=f"{reference} 95 % CI")
        ax.legend(fontsize=7)
    ax.set_yticks(ys, [r["variant"] for r in rows], fontsize=8)
    ax.set_xlabel("student real test top-1 (%)")
    if effects:
        ax = axes[0][1]
        ys = list(range(len(effects)))[::-1]
        for y, e in zip(ys, effects):
            ax.errorbar([e["difference"]], [y], xerr=[[e["difference"] - e["ci_low"]], [e["ci_high"] - e["difference"]]],
                        fmt="o", capsize=3, color="tab:green" if e["ci_low"] > 0 else "tab:red" if e["ci_high"] < 0
                        else "tab:grey")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(ys, [e["effect"] for e in effects], fontsize=8)
        ax.set_xlabel("effect on top-1 (points, 95 % CI)")
    if with_cost:
        cost_panel(axes[0][-1], costed, [r for r in rows if r not in costed])
    return save_figure(fig, path)


def cost_panel(ax, costed: list[dict[str, Any]], uncosted: list[dict[str, Any]]) -> None:
    """Student top-1 against the teacher passes each variant spent per image (log scale); rows without a
    synthesis cost (real data) as horizontal lines."""
    from dfnas_pl.search.plots import plt

    groups: dict[float, list[dict[str, Any]]] = {}
    for r in costed:
        groups.setdefault(r["teacher_passes_per_image"], []).append(r)
    for cost, group in groups.items():
        # variants of equal cost side by side (a few per cent apart on the log axis), labels stacked in the
        # order of their points, so that neither bars nor names overlap
        group = sorted(group, key=lambda r: r["student_top1_mean"])
        middle = (len(group) - 1) / 2
        spread = len(group) == 1 or group[-1]["student_top1_mean"] - group[0]["student_top1_mean"] > 10
        for i, r in enumerate(group):
            x = cost * 1.07 ** (i - middle)
            err = None if math.isnan(r["ci_low"]) else [[r["student_top1_mean"] - r["ci_low"]],
                                                         [r["ci_high"] - r["student_top1_mean"]]]
            ax.errorbar([x], [r["student_top1_mean"]], yerr=err, fmt="o", capsize=3, color="tab:blue")
            if spread:  # one, or far apart: each name beside its point
                ax.annotate(r["variant"], (x, r["student_top1_mean"]), fontsize=7, xytext=(5, 0),
                            textcoords="offset points", va="center")
            else:  # close together: a stack to the left of the group
                ax.annotate(r["variant"], (cost * 1.07 ** -middle, r["student_top1_mean"]), fontsize=7,
                            xytext=(-6, 9 * (i - middle)), textcoords="offset points", va="center", ha="right")
    for r in uncosted:
        ax.axhline(r["student_top1_mean"], color="grey", ls="--", lw=0.8)
        ax.annotate(r["variant"], (0.02, r["student_top1_mean"]), xycoords=("axes fraction", "data"), fontsize=7,
                    xytext=(0, -9), textcoords="offset points", color="grey")
    ax.set_xscale("log")
    ticks = sorted({r["teacher_passes_per_image"] for r in costed})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlim(ticks[0] / 1.5, ticks[-1] * 1.8)  # room for the labels
    ax.set_xlabel("teacher passes per image (forward + backward)")
    ax.set_ylabel("student real test top-1 (%)")


def parser() -> ArgumentParser:
    return driver_parser(SynthesisSweep, "python -m dfnas_pl synthesis-sweep", "studies/synthesis_quality/synthesis_sweep.yaml")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    return driver_from_args(SynthesisSweep, argv, "python -m dfnas_pl synthesis-sweep")()
