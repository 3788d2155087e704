"""``python -m dfnas_pl paper-table --config studies/paper_table/paper_table.yaml``: the paper's
comparison at our scale. For each algorithm, search on (a) real Fashion-MNIST, (b) the paper's method
(label calibration + regional update: the synthesis config plus ``synthetic_args``, which pin it whatever
the config's own default is), (c) plain model-inversion data, (d) Gaussian noise; plus (e) a
random architecture of the same space at FLOPs similar to (b). Every architecture is retrained on the
real training split with several seeds; the table reports test top-1 mean and std.

With ``groundtruth`` (a ground-truth JSON of the searched space, :mod:`dfnas_pl.drivers.groundtruth`), every
found architecture is trained instead with that ground truth's recipe, data and seeds: its accuracy is then on
the ground truth's scale, with the run-to-run noise the ground truth measured, and an architecture the ground
truth already holds reuses its records (``studies/macro_paper_table/``).

The same driver runs the ablations: ``synthesis_variants`` names synthetic sets made with extra
synthesis arguments (no label calibration, no regional update, no BN-statistics loss, ...), each a
search source like the others (``studies/paper_table/ablation.yaml``); ``table_name`` keeps its table
apart while searches and retrainings shared with the paper table are reused.

Every search, retraining and synthesis is a stage of :class:`~dfnas_pl.drivers.pipeline.Pipeline` (its own
process, skipped when its output exists), so a killed table run resumes.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from jsonargparse import ArgumentParser

from dfnas_pl.drivers.commands import driver_from_args, driver_parser
from dfnas_pl.drivers.groundtruth import GroundTruth, Selection, TrainingRecipe, load_groundtruth
from dfnas_pl.drivers.pipeline import ALGORITHMS, SEARCH_CONFIGS, Pipeline, set_is_sound
from dfnas_pl.drivers.synthetic_sets import (
    PAPER_METHOD,
    PIXELS_CONFIG,
    PLAIN_INVERSION,
    SHIPPED_DEFAULT,
    set_dir,
)
from dfnas_pl.drivers.variants import Variant, check_variants
from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig
from dfnas_pl.search.random_arch import write_random_like
from dfnas_pl.utils.io import atomic_write_bytes, readable_json
from dfnas_pl.utils.locking import one_writer

SOURCES = {"real": "(a) real data", "synthetic": "(b) the paper's method: calibration + regional",
           "plain": "(c) plain inversion", "noise": "(d) Gaussian noise", "random": "(e) random architecture"}
SYNTHESIS_VARIANTS = {"plain": PLAIN_INVERSION, "default": SHIPPED_DEFAULT}  # (c), and the shipped synthesis


def parser() -> ArgumentParser:
    return driver_parser(PaperTable, "python -m dfnas_pl paper-table", "studies/paper_table/paper_table.yaml")


class PaperTable(Pipeline):
    """The paper's comparison of search-data sources, each architecture retrained with several seeds."""

    def __init__(self, run_dir: str = "runs/fmnist_paper_table", algorithms: list[str] = list(ALGORITHMS),
                 sources: list[str] = list(SOURCES), seeds: list[int] = [0, 1, 2], search_images: int = 500,
                 synthesis_config: str = PIXELS_CONFIG,
                 search_configs: dict[str, str] = SEARCH_CONFIGS,
                 retrain_config: str = "experiments/fmnist/retrain.yaml", overrides: dict[str, list[str]] = {},
                 synthesis_variants: dict[str, Variant] = SYNTHESIS_VARIANTS, labels: dict[str, str] = {},
                 table_name: str = "paper_table", synthetic_args: Variant = PAPER_METHOD,
                 groundtruth: str | None = None, workers: int = 2) -> None:
        """
        Args:
            run_dir: where every search, retraining and synthetic set is written
            algorithms: the searches (registered search algorithms)
            sources: the search-data sources (rows): real, synthetic, plain, noise, random, or a synthesis variant
            seeds: retraining seeds per architecture
            search_images: images every search source gets
            synthesis_config: the synthesis stage's config, the base the named sets are spelled out against
                (per-image optimisation's by default: the paper's method is per-image)
            search_configs: each search's config, by algorithm
            retrain_config: the retraining stage's config (unused with groundtruth)
            overrides: extra CLI arguments per stage (as in the pipeline)
            synthesis_variants: synthetic sets made with extra synthesis settings (a mapping of its constructor
                arguments, or CLI arguments), each usable as a source
            labels: table labels of the sources (variants)
            table_name: the table is <run_dir>/<table_name>.md/.csv/.png
            synthetic_args: extra synthesis settings of the 'synthetic' source (b): the paper's method whatever
                the synthesis config's own default is (the shipped default is plain inversion with 10x the BN-loss
                weight: README)
            groundtruth: a ground-truth JSON of the searched space: train every found architecture with its
                recipe and seeds (reusing its records) instead of retrain_config
            workers: parallel ground-truth training jobs (with groundtruth)
        """
        synthesis_variants = check_variants(dict(synthesis_variants), synthesis_config, "synthesis variant")
        synthetic_args = check_variants({"synthetic_args": synthetic_args}, synthesis_config,
                                        "the paper's method")["synthetic_args"]
        super().__init__(run_dir, algorithms, synthesis_config, search_configs, retrain_config, overrides)
        self.groundtruth, self.workers = groundtruth, workers
        if groundtruth is not None:
            load_groundtruth(groundtruth)  # a missing or foreign file is refused before any stage runs
        self.synthesis_args = synthetic_args
        self.variants = synthesis_variants
        clash = sorted(set(self.variants) & (set(SOURCES) - {"plain"}))
        if clash:
            raise ValueError(f"Synthesis variant name(s) {clash} are built-in sources; rename the variant(s).")
        self.labels = {**SOURCES, **{v: v for v in self.variants if v not in SOURCES}, **labels}
        known = set(SOURCES) - {"plain"} | set(self.variants)
        unknown = sorted(set(sources) - known)
        if unknown:
            raise ValueError(f"Unknown source(s) {unknown}; choose from {sorted(known)} or add a synthesis_variants "
                             f"entry for them.")
        self.table_name = table_name
        if "random" in sources and "synthetic" not in sources:
            raise ValueError("The random baseline matches the FLOPs of the 'synthetic' architecture: keep 'synthetic'.")
        self.sources, self.seeds, self.search_images = list(sources), list(seeds), search_images

    def synthetic_set(self, name: str) -> Path:
        """The set of a synthetic source, made when a search first needs it: a table whose searches are all
        done (resumed, or their architectures copied in) makes no set at all."""
        if name == "synthetic":
            return self.synthesis()
        out = set_dir(self.run, name)
        if not set_is_sound(out):
            self._cli(f"synthesis ({name})", "fit", self.synthesis_config,
                      ["--model.init_args.output_dir", str(out), *self.variants[name], "--trainer.default_root_dir",
                       str(self.run), "--trainer.logger.init_args.save_dir", str(self.run)], ["synthesis"])
        return out

    def search_source(self, algorithm: str, source: str) -> Path:
        out = self.run / "search" / algorithm / source
        if readable_json(out / "architecture.json"):
            return out / "architecture.json"
        data = {"real": ["--data.init_args.source", "real", "--model.init_args.teacher", "null",
                         "--data.init_args.max_images", str(self.search_images)],
                "noise": ["--data.init_args.source", "noise", "--data.init_args.noise_images", str(self.search_images)],
                }.get(source) or ["--data.init_args.path", str(self.synthetic_set(source))]
        ckpt = out / "checkpoints"
        self._cli(f"search {algorithm} on {source}", "fit", self.search_configs[algorithm],
                  [*data, "--model.init_args.output_dir", str(out), "--trainer.default_root_dir", str(out),
                   "--trainer.callbacks.init_args.dirpath", str(ckpt), "--trainer.logger.init_args.save_dir",
                   str(self.run), "--model.init_args.export_unhealthy", "true", *self._resume(ckpt)],
                  ["search", algorithm])
        return out / "architecture.json"  # a table measures what every search finds: its health is a column

    def random_architecture(self, algorithm: str, reference: Path) -> Path:
        return write_random_like(self.run / "search" / algorithm / "random" / "architecture.json", reference)

    def retrain_seed(self, algorithm: str, source: str, seed: int, architecture: Path) -> dict:
        out = self.run / "retrain" / algorithm / source / f"seed{seed}"
        metrics = out / "metrics.json"
        if not readable_json(metrics):
            ckpt = out / "checkpoints"
            args = ["--seed_everything", str(seed), "--model.init_args.architecture", str(architecture),
                    "--model.init_args.metrics_path", str(metrics), "--trainer.default_root_dir", str(out),
                    "--trainer.callbacks.init_args.dirpath", str(ckpt), "--trainer.logger.init_args.save_dir", str(out)]
            name = f"retrain {algorithm}/{source} seed {seed}"
            self._cli(name, "fit", self.retrain_config, [*args, *self._resume(ckpt)], ["retrain"])
            self._cli(name, "test", self.retrain_config, [*args, "--ckpt_path", str(ckpt / "last.ckpt")], ["retrain"])
        return json.loads(metrics.read_text())

    @one_writer("run", "paper-table run")
    def __call__(self) -> list[dict]:
        rows, found = [], {}
        for algorithm in self.algorithms:
            archs = {s: self.search_source(algorithm, s) for s in self.sources if s != "random"}
            if "random" in self.sources:
                archs["random"] = self.random_architecture(algorithm, archs["synthetic"])
            found[algorithm] = archs
        if self.groundtruth is not None:
            rows = self.groundtruth_rows(found)
        else:
            for algorithm, archs in found.items():
                for source in self.sources:
                    runs = [self.retrain_seed(algorithm, source, seed, archs[source]) for seed in self.seeds]
                    rows.append({**row(algorithm, source, self.labels[source], [100 * m["test_top1"] for m in runs],
                                       runs[0]["flops"], runs[0]["params"]), "health": health_of(archs[source])})
        self.write_table(rows)
        return rows

    def groundtruth_rows(self, found: dict[str, dict[str, Path]]) -> list[dict]:
        """Train every found architecture with the ground truth's recipe and seeds (one GroundTruth run over
        them, resumable per job), reusing the ground truth's own records where it holds the architecture."""
        gt = load_groundtruth(self.groundtruth)
        known = {tuple(a["choices"]): a for a in gt["architectures"] if set(map(str, self.seeds)) <= set(a["top1"])}
        archs = {(alg, src): json.loads(path.read_text()) for alg, paths in found.items() for src, path in paths.items()}
        for (alg, src), arch in archs.items():
            if arch["space_config"] != gt["space_config"]:
                raise ValueError(f"The {alg} search on {src} searched another space than the ground truth "
                                 f"{self.groundtruth}: {arch['space_config']} vs {gt['space_config']}. Search the "
                                 f"ground truth's space (e.g. experiments/fmnist/search_spos_macro.yaml).")
        new = tuple(dict.fromkeys(tuple(a["choices"]) for a in archs.values() if tuple(a["choices"]) not in known))
        trained = {}
        if new:
            result = GroundTruth(LayerwiseSpaceConfig.from_dict(gt["space_config"]), str(self.run / "found.json"),
                                 str(self.run / "found_jobs"), gt["data"], TrainingRecipe(**gt["recipe"]),
                                 Selection(stratified=0, median_band=0, include=new), self.seeds, self.workers)()
            trained = {tuple(a["choices"]): a for a in result["architectures"]}
        rows = []
        for (alg, src), arch in archs.items():
            entry = known.get(tuple(arch["choices"])) or trained[tuple(arch["choices"])]
            accs = [100 * entry["top1"][str(seed)] for seed in self.seeds]
            rows.append({**row(alg, src, self.labels[src], accs, entry["flops"], entry["params"]),
                         "health": health_of(found[alg][src]), "in_groundtruth": tuple(arch["choices"]) in known, "choices": " ".join(arch["choices"])})
        return rows

    def write_table(self, rows: list[dict]) -> None:
        lines = ["| algorithm | search data | test top-1 (mean ± std) | seeds | MFLOPs | K params | search health |",
                 "|---|---|---:|---:|---:|---:|---|"]
        lines += [f"| {r['algorithm']} | {r['label']} | {r['mean']:.2f} ± {r['std']:.2f} | {r['seeds']} | "
                  f"{r['mflops']:.2f} | {r['kparams']:.1f} | {r['health']} |" for r in rows]
        if self.groundtruth is not None:  # which architecture each search found, on the ground truth's scale
            lines[0] += " architecture | in the ground truth |"
            lines[1] += "---|---|"
            lines[2:] = [f"{line} {r['choices']} | {'yes' if r['in_groundtruth'] else 'no'} |"
                         for line, r in zip(lines[2:], rows)]
            lines += ["", f"Every architecture trained with the recipe and seeds of {self.groundtruth}."]
        ledger = self.spent_seconds()
        if ledger:
            spent, stages = sum(ledger.values()), len(ledger)
            lines += ["", f"Stage wall time in {self.ledger.name}: {spent / 3600:.2f} h over {stages} stages (summed "
                          f"over invocations; shared by every table in this run dir)."]
        table = self.run / self.table_name
        atomic_write_bytes(table.with_suffix(".md"), ("\n".join(lines) + "\n").encode())
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(table.with_suffix(".csv"), buf.getvalue().encode())
        plot(table.with_suffix(".png"), rows)
        print("\n" + "\n".join(lines) + f"\n\nTable: {table.with_suffix('.md')} (.csv, .png)")


def health_of(architecture: Path) -> str:
    """The search's health verdict with its level and chance (dfnas_pl/search/health.py); "-" for the random
    baseline and for searches made before the check existed."""
    h = json.loads(Path(architecture).read_text()).get("health")
    return "-" if not h else f"{h['verdict']}: {h['level']:.0%} vs chance {h['chance']:.0%}"


def row(algorithm: str, source: str, label: str, accs: list[float], flops: float, params: float) -> dict:
    """One table row: test top-1 (%) mean and std over the seeds, size of the architecture."""
    return {"algorithm": algorithm, "source": source, "label": label, "mean": statistics.mean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "seeds": len(accs), "mflops": flops / 1e6,
            "kparams": params / 1e3}


def plot(path: Path, rows: list[dict]) -> None:
    from dfnas_pl.search.plots import plt, save_figure

    algorithms = list(dict.fromkeys(r["algorithm"] for r in rows))
    sources = list(dict.fromkeys(r["source"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(algorithms), 3.8))
    width = 0.8 / len(sources)
    for k, source in enumerate(sources):
        rs = [next(r for r in rows if r["algorithm"] == a and r["source"] == source) for a in algorithms]
        ax.bar([i + k * width for i in range(len(algorithms))], [r["mean"] for r in rs], width,
               yerr=[r["std"] for r in rs], capsize=3, label=rs[0]["label"])
    ax.set_xticks([i + width * (len(sources) - 1) / 2 for i in range(len(algorithms))], algorithms)
    lo = min(r["mean"] - r["std"] for r in rows)
    ax.set_ylim(max(0.0, lo - 2), 100)
    ax.set_ylabel("real test top-1 (%)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    return driver_from_args(PaperTable, argv, "python -m dfnas_pl paper-table")()
