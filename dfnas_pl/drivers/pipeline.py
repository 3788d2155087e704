"""``python -m dfnas_pl pipeline --config experiments/fmnist/pipeline.yaml``: synthesis -> search
(any subset of darts / proxylessnas / spos) -> retraining, each stage through the same LightningCLI
configs as when run by hand, in its own process, with the paths between stages passed as overrides.

A stage whose output exists is skipped (``synthetic/manifest.json``, ``search/<alg>/architecture.json``,
``retrain/<alg>/metrics.json``); a stage with a ``last.ckpt`` resumes from it. So a killed pipeline,
started again with the same command, redoes nothing that finished.

All stages of one pipeline run share a W&B group (``<run_dir>/wandb_group.json``), each stage its
job type. On a cluster, ``launcher`` runs every stage on all processes and nodes: ``[srun, python]``
inside a SLURM batch script, ``[torchrun, --nproc_per_node, "2"]`` on one machine
(``experiments/cluster/``); ``overrides.all`` then sets ``--trainer.devices`` / ``--trainer.num_nodes``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from jsonargparse import ArgumentParser

from dfnas_pl.data.vision import VisionDataModule
from dfnas_pl.drivers.commands import driver_from_args, driver_parser
from dfnas_pl.search.registry import search_algorithms
from dfnas_pl.teachers.loading import TeacherSource
from dfnas_pl.utils.io import atomic_write_bytes, atomic_write_json, readable_json
from dfnas_pl.utils.locking import one_writer
from dfnas_pl.wandb_setup import pipeline_group

REGISTERED = search_algorithms()
ALGORITHMS = tuple(REGISTERED)  # the registered search algorithms, in registration order
SEARCH_CONFIGS = {name: algorithm.config for name, algorithm in REGISTERED.items()}
# Defaults below are shared objects that the drivers only read (each constructor copies what it keeps).


def parser() -> ArgumentParser:
    return driver_parser(Pipeline, "python -m dfnas_pl pipeline", "pipeline YAML (experiments/fmnist/pipeline.yaml)")


def stage_failed(name: str, code: int) -> SystemExit:
    return SystemExit(f"Stage '{name}' failed (exit {code}). Fix the cause and run the same pipeline command "
                      f"again: finished stages are kept.")


class Pipeline:
    """synthesis -> search -> retraining, each stage a LightningCLI run of its own config."""

    def __init__(self, run_dir: str = "runs/fmnist", algorithms: list[str] = list(ALGORITHMS),
                 synthesis_config: str = "experiments/fmnist/synthesize.yaml",
                 search_configs: dict[str, str] = SEARCH_CONFIGS,
                 retrain_config: str = "experiments/fmnist/retrain.yaml",
                 overrides: dict[str, list[str]] = {}, launcher: list[str] | None = None,
                 teacher: TeacherSource | None = None, real_data: VisionDataModule | None = None,
                 random_baseline: bool = True, export_unhealthy: bool = False) -> None:
        """
        Args:
            run_dir: where every stage writes
            algorithms: the searches to run (registered search algorithms)
            synthesis_config: the synthesis stage's config
            search_configs: each search's config, by algorithm
            retrain_config: the retraining stage's config
            overrides: extra CLI arguments per stage: all, synthesis, search, darts, proxylessnas, spos, retrain
            launcher: what runs `-m dfnas_pl <stage>`: default this Python; [srun, python] in a SLURM batch
                script; [torchrun, --nproc_per_node, '2'] for several processes on one machine
            teacher: your teacher for every stage that takes one (synthesis, searches): a path or a mapping
                {path, arch, in_channels, image_size, mean, std, class_names, trust_checkpoint}; the search spaces
                and the synthesis' class count are sized from it. null: each stage config's own (the embedded
                Fashion-MNIST teacher)
            real_data: your real data (class_path + init_args, e.g. VisionDataModule with dataset: ImageFolder)
                for the searches' test set and the retraining; null: each stage config's own. Checked as that
                class on the command line and kept as the mapping: each stage's process builds its own.
            random_baseline: beside each found architecture, retrain a uniformly random one of the same space and
                (within 5 %) the same FLOPs with the same budget: the bar a search must clear to earn its place
            export_unhealthy: let every search export even when its health check finds it cannot choose (each
                search's ``export_unhealthy``); false: such a search exports nothing, its row says why, and the
                other searches go on
        """
        unknown = sorted(set(algorithms) - set(ALGORITHMS))
        if unknown:
            raise ValueError(f"Unknown search algorithm(s) {unknown}; choose from {list(ALGORITHMS)}.")
        missing = [a for a in algorithms if a not in search_configs]
        if missing:
            raise ValueError(f"No search config for {missing}: add them to search_configs.")
        self.run = Path(run_dir)
        self.algorithms, self.synthesis_config = list(algorithms), synthesis_config
        self.search_configs, self.retrain_config = dict(search_configs), retrain_config
        self.overrides = {k: list(v) for k, v in overrides.items()}
        self.timings: dict[str, float] = {}  # seconds per stage in this invocation
        self.launcher = list(launcher) if launcher else [sys.executable]
        self.group: str | None = None  # the W&B group, made when the first stage runs
        self.teacher, self.real_data = teacher, real_data
        self.teacher_facts = self._check_teacher_and_data()
        self.synthesis_args: list[str] = []  # extra synthesis arguments of <run_dir>/synthetic (paper-table's (b))
        self.random_baseline, self.export_unhealthy = random_baseline, export_unhealthy

    def _check_teacher_and_data(self) -> dict[str, int] | None:
        """Channels, classes and size of the user's teacher, loaded once here so that a wrong source, or
        real data whose classes are not the teacher's, fails before any stage runs."""
        if self.teacher is None:
            return None
        from lightning.pytorch.cli import instantiate_class

        from dfnas_pl.data.compatibility import check_real_data
        from dfnas_pl.teachers.loading import load_teacher

        spec = load_teacher(self.teacher)
        if self.real_data is not None:
            check_real_data(instantiate_class((), self.real_data), spec.describe(), f"the teacher '{spec.source}'",
                            spec.class_names)
        return {"in_channels": spec.in_channels, "num_classes": spec.num_classes, "image_size": spec.image_size}

    def stage_args(self, stage: str) -> list[str]:
        """What ``teacher`` and ``real_data`` set in one stage (before the user's own overrides)."""
        args: list[str] = []
        facts = self.teacher_facts
        if facts is not None and stage in ("synthesis", *ALGORITHMS):
            args += ["--model.init_args.teacher", self.teacher if isinstance(self.teacher, str)
                     else json.dumps(self.teacher)]
            if stage == "synthesis":
                args += ["--data.init_args.num_classes", str(facts["num_classes"])]
            else:
                sized = REGISTERED[stage].sized_space
                keys = ("in_channels", "num_classes", "image_size") if sized else ("in_channels", "num_classes")
                args += [a for k in keys for a in (f"--model.init_args.space.{k}", str(facts[k]))]
                c, size = facts["in_channels"], facts["image_size"]
                args += ["--data.init_args.image_shape", json.dumps([c, size, size])]
                if not sized:  # a size-free space (DARTS cells): the search module takes the size
                    args += ["--model.init_args.image_size", str(size)]
        if self.real_data is not None:
            if stage in ALGORITHMS:
                args += ["--data.init_args.real_data", json.dumps(self.real_data)]
            elif stage == "retrain":
                args += ["--data", json.dumps(self.real_data)]
        return args

    # -- running one stage ------------------------------------------------------------------------
    def _cli(self, name: str, subcommand: str, config: str, args: list[str], extra_keys: list[str],
             allowed_exit: int | None = None) -> int:
        extra = [a for key in ["all", *extra_keys] for a in self.overrides.get(key, [])]
        own = self.stage_args(extra_keys[-1])
        cmd = [*self.launcher, "-m", "dfnas_pl", subcommand, "--config", config, *args, *own, *extra]
        print(f"\n=== {name}: {' '.join(cmd[len(self.launcher):])}", flush=True)
        self.group = self.group or pipeline_group(self.run)
        env = {**os.environ, "WANDB_RUN_GROUP": self.group, "WANDB_JOB_TYPE": extra_keys[0]}
        start = time.time()
        result = subprocess.run(cmd, env=env)
        seconds = time.time() - start
        self.timings[name] = self.timings.get(name, 0.0) + seconds
        self._record_seconds(name, seconds)
        if result.returncode not in (0, allowed_exit):
            raise stage_failed(name, result.returncode)
        return result.returncode

    @property
    def ledger(self) -> Path:
        """``<run_dir>/stage_seconds.json``: wall seconds per stage summed over every invocation, so a
        table built over several resumed runs still says what it cost (killed attempts included)."""
        return self.run / "stage_seconds.json"

    def spent_seconds(self) -> dict[str, float]:
        return json.loads(self.ledger.read_text()) if readable_json(self.ledger) else {}

    def _record_seconds(self, name: str, seconds: float) -> None:
        spent = self.spent_seconds()
        spent[name] = round(spent.get(name, 0.0) + seconds, 1)
        atomic_write_json(self.ledger, spent)

    @staticmethod
    def _resume(checkpoint_dir: Path) -> list[str]:
        return ["--ckpt_path", str(checkpoint_dir / "last.ckpt")] if (checkpoint_dir / "last.ckpt").exists() else []

    def synthesis(self) -> Path:
        out = self.run / "synthetic"
        if set_is_sound(out):
            print(f"=== synthesis: done ({out / 'manifest.json'}), skipped")
            return out
        self._cli("synthesis", "fit", self.synthesis_config,
                  ["--model.init_args.output_dir", str(out), "--trainer.default_root_dir", str(self.run),
                   "--trainer.logger.init_args.save_dir", str(self.run), *self.synthesis_args], ["synthesis"])
        return out

    def search(self, algorithm: str, synthetic: Path) -> Path | None:
        """The search's ``architecture.json``; None when its health check refused to export (``health.json``
        says why)."""
        out = self.run / "search" / algorithm
        if readable_json(out / "architecture.json"):
            print(f"=== search {algorithm}: done ({out / 'architecture.json'}), skipped")
            return out / "architecture.json"
        ckpt = out / "checkpoints"
        unhealthy = ["--model.init_args.export_unhealthy", "true"] if self.export_unhealthy else []
        started = time.time()
        code = self._cli(f"search {algorithm}", "fit", self.search_configs[algorithm],
                         ["--data.init_args.path", str(synthetic), "--model.init_args.output_dir", str(out),
                          "--trainer.default_root_dir", str(out), "--trainer.callbacks.init_args.dirpath", str(ckpt),
                          "--trainer.logger.init_args.save_dir", str(self.run), *unhealthy, *self._resume(ckpt)],
                         ["search", algorithm], allowed_exit=2)
        health = out / "health.json"
        # a refusal is exit 2 with a verdict written by *this* run (an older one may lie there from a refused
        # run before, and exit 2 is also every bad-input error)
        if (code == 2 and readable_json(health) and health.stat().st_mtime >= started - 1
                and not json.loads(health.read_text()).get("can_choose", True)):
            print(f"=== search {algorithm}: its health check refused the export ({health}); no retraining. "
                  f"The pipeline goes on; export_unhealthy: true exports anyway.", flush=True)
            return None
        if code != 0:
            raise stage_failed(f"search {algorithm}", code)
        if not readable_json(out / "architecture.json"):
            raise SystemExit(f"Stage 'search {algorithm}' ended without writing {out / 'architecture.json'}; its log "
                             f"above says why. Fix the cause and run the same pipeline command again.")
        return out / "architecture.json"

    def random_architecture(self, algorithm: str, architecture: Path) -> Path:
        """A uniformly random architecture of the found one's space within 5 % of its FLOPs, never the found
        one (seeded, so a resumed pipeline retrains the same one)."""
        from dfnas_pl.search.random_arch import write_random_like

        return write_random_like(self.run / "random" / algorithm / "architecture.json", architecture,
                                 exclude_reference=True)

    def retrain(self, algorithm: str, architecture: Path) -> Path:
        out = self.run / "retrain" / algorithm
        metrics = out / "metrics.json"
        if readable_json(metrics):
            print(f"=== retrain {algorithm}: done ({metrics}), skipped")
            return metrics
        ckpt = out / "checkpoints"
        args = ["--model.init_args.architecture", str(architecture), "--model.init_args.metrics_path", str(metrics),
                "--trainer.default_root_dir", str(out), "--trainer.callbacks.init_args.dirpath", str(ckpt),
                "--trainer.logger.init_args.save_dir", str(self.run)]
        self._cli(f"retrain {algorithm}", "fit", self.retrain_config, [*args, *self._resume(ckpt)], ["retrain"])
        self._cli(f"retrain {algorithm}", "test", self.retrain_config, [*args, "--ckpt_path", str(ckpt / "last.ckpt")],
                  ["retrain"])
        return metrics

    # -- all of it ------------------------------------------------------------------------------------
    @one_writer("run", "pipeline run")
    def __call__(self) -> list[dict]:
        synthetic = self.synthesis()
        rows = []
        for algorithm in self.algorithms:
            architecture = self.search(algorithm, synthetic)
            health = json.loads((self.run / "search" / algorithm / "health.json").read_text()) \
                if readable_json(self.run / "search" / algorithm / "health.json") else None
            row = {"algorithm": algorithm, "health": health}
            if architecture is not None:
                metrics = json.loads(self.retrain(algorithm, architecture).read_text())
                row.update(architecture=summarise(metrics["choices"]), mflops=metrics["flops"] / 1e6,
                           kparams=metrics["params"] / 1e3, test_top1=metrics["test_top1"])
                if self.random_baseline:
                    rand = json.loads(self.retrain(f"random_{algorithm}",
                                                   self.random_architecture(algorithm, architecture)).read_text())
                    row.update(random_mflops=rand["flops"] / 1e6, random_top1=rand["test_top1"])
            rows.append(row)
        self.report(rows)
        return rows

    def report(self, rows: list[dict]) -> None:
        lines = ["| algorithm | health | architecture | MFLOPs | K params | test top-1 | random, same FLOPs |",
                 "|---|---|---|---:|---:|---:|---:|"]
        for r in rows:
            h = r["health"]
            verdict = "-" if h is None else (h["verdict"] + (" (exported anyway)" if h.get("exported_anyway") else "")
                                             + f": {h['level']:.0%} vs chance {h['chance']:.0%}")
            if "architecture" not in r:
                lines.append(f"| {r['algorithm']} | {verdict} | not exported | | | | |")
                continue
            rand = f"{100 * r['random_top1']:.2f} % ({r['random_mflops']:.2f} MFLOPs)" if "random_top1" in r else "-"
            lines.append(f"| {r['algorithm']} | {verdict} | {r['architecture']} | {r['mflops']:.2f} | "
                         f"{r['kparams']:.1f} | {100 * r['test_top1']:.2f} % | {rand} |")
        if any(r["algorithm"] == "darts" and "architecture" in r for r in rows):
            lines += ["", DARTS_NOTE]
        table = "\n".join(lines)
        atomic_write_bytes(self.run / "pipeline_results.md", (table + "\n").encode())
        # stage_seconds: the run dir's ledger (every invocation, so a resumed pipeline still shows its
        # full cost); stage_seconds_this_invocation: only the stages this command ran.
        atomic_write_json(self.run / "pipeline_results.json", {"rows": rows, "stage_seconds": self.spent_seconds(),
                                                               "stage_seconds_this_invocation": self.timings})
        print("\n" + table)
        print(f"\nResults: {self.run / 'pipeline_results.md'}\nSynthetic set and image grids: "
              f"{self.run / 'synthetic'} (grids/)\nSearch plots and architectures: {self.run / 'search'}/<algorithm>/\n"
              f"Retraining logs and metrics: {self.run / 'retrain'}/<algorithm>/ (random_<algorithm>/: the random "
              f"architecture of the same FLOPs)\nEach search's health check: {self.run / 'search'}/<algorithm>/"
              f"health.json\n"
              f"W&B runs (group {self.group or pipeline_group(self.run)}): {self.run / 'wandb'} "
              f"(offline: `wandb sync {self.run / 'wandb'}/offline-run-*` uploads them)")


# Said wherever the pipeline prints a DARTS cell, until a DARTS selection is measured to beat random cells.
DARTS_NOTE = ("Note: DARTS is not shown to beat random cells of its space: over 4 search seeds, neither its alpha rule "
              "nor perturbation selection retrained better than a random cell (studies/darts_selection). Read its "
              "row against the random cell beside it.")


def summarise(choices) -> str:
    """A short one-line architecture description for the table."""
    if isinstance(choices, dict):  # DARTS genotype
        return "; ".join(f"{cell}: " + ", ".join(op.replace("_conv", "").replace("_connect", "")
                                                 for node in nodes for op, _ in node)
                         for cell, nodes in choices.items())
    return ", ".join(str(c).replace("mbconv_", "") for c in choices)


def main(argv: list[str] | None = None) -> list[dict]:
    return driver_from_args(Pipeline, argv, "python -m dfnas_pl pipeline")()


def set_is_sound(root: Path) -> bool:
    """A finished synthetic set whose files check out; a damaged one is rerun (the synthesis repairs it)."""
    from dfnas_pl.data.synthetic import open_set

    if not (root / "manifest.json").exists():
        return False
    try:
        open_set(root)
        return True
    except ValueError as err:
        print(f"=== synthesis: {err} Rerunning the synthesis stage to repair it.")
        return False
