"""Single Path One-Shot (Guo et al., 2020) as a LightningModule.

Supernet training: every step trains one path drawn uniformly (rejection-sampled under
``max_mflops``); the draw depends only on (seed, step), so all DDP ranks train the same path. Then,
at the end of training, an evolutionary search under the same FLOPs limit scores each candidate on
the search-val split after recalibrating BatchNorm statistics on search-train batches (shared
weights leave BN statistics that fit no single path). Every rank runs the same deterministic
search on the same data, and the results are compared across ranks at the end. The evolution state is saved after each
generation, so a killed search resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
from typing import Any, Literal

import lightning as L
import torch

from dfnas_pl.losses import TeacherTargets
from dfnas_pl.search.consistency import assert_same_on_all_ranks
from dfnas_pl.search.evolution import Candidate, EvolutionSearch, first_generation
from dfnas_pl.search.export import write_architecture
from dfnas_pl.search.hooks import SearchHooks
from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig, LayerwiseSupernet
from dfnas_pl.search.plots import line_plot
from dfnas_pl.search.registry import register_search_algorithm
from dfnas_pl.search.scoring import (
    PathScore,
    ScoringSet,
    batchnorm_state_kept,
    check_scorer,
    first,
    score_path,
)
from dfnas_pl.teachers.loading import TeacherSource
from dfnas_pl.utils.io import atomic_torch_save, atomic_write_json
from dfnas_pl.utils.settings import check_all

DEFAULT_SHUFFLENET_SPACE = LayerwiseSpaceConfig(family="shufflenetv2")


@register_search_algorithm("spos", config="experiments/fmnist/search_spos.yaml")
class SPOSSearch(SearchHooks, L.LightningModule):
    """SPOS: uniform single-path supernet training, then an evolutionary search under a FLOPs limit.

    Args:
        space: the ShuffleNetV2 layer-wise space.
        teacher: teacher for KD (synthetic / noise data); ``null`` trains on labels (real data). A teacher
            source is a path, ``embedded:<name>`` or a mapping ``{path, arch, in_channels, image_size, mean, std, class_names, trust_checkpoint}``: a teacher file, a Lightning checkpoint, a state dict with its arch (registry name, torchvision:/timm: name, or an nn.Module import path / class_path + init_args), a TorchScript or torch.export archive, or a pickled module (trusted only).
        temperature: KD temperature (official: 3).
        kd_t_squared: scale KD by T^2 (standard KD; the official code does not).
        kd_targets: soft: the teacher's distribution at the temperature (KD, official); hard: cross-entropy
            to the teacher's top-1 class.
        lr: SGD learning rate of the supernet (cosine to 0).
        momentum: SGD momentum.
        weight_decay: SGD weight decay (SPOS: 4e-5).
        max_mflops: FLOPs limit (millions, one image) for training paths and for evolution; null: none.
        population: candidates per generation (SPOS: 50).
        generations: generations of evolution (SPOS: 20).
        top_k: parents kept per generation (SPOS: 10).
        mutation_prob: per-layer mutation probability (SPOS: 0.1).
        bn_recalibration_batches: search-train batches to re-estimate BN statistics per candidate.
        score_batches: search-val batches to score a candidate (null: all).
        scorer: what a candidate is scored by on search-val (dfnas_pl/search/scoring.py): ``top1``, agreement
            with the teacher's argmax (or the label); ``kd``, minus the KL divergence from the teacher's
            distribution at ``temperature`` (or the label's log-likelihood), continuous, so it orders candidates
            whose top-1 ties. Which ranks better: studies/macro_scorer/README.md.
        strategy: ``evolution`` (SPOS) or ``random``: random search with weight sharing, as many uniformly random
            candidates under the limit as evolution scores (population x generations), the best kept; the
            baseline evolution must beat at equal cost.
        output_dir: where architecture.json, evolution_state.json and the evolution plot go.
        seed: seed of path sampling and evolution.
        evolution: run the evolutionary search after supernet training; false: only train the supernet
            and save its weights to ``<output_dir>/supernet.pt`` and what it was trained on to
            ``supernet.json`` (the rank-fidelity instrument scores fixed architectures with them).
        export_unhealthy: export even when the health check finds that the supernet's scores cannot tell
            candidates apart (the first generation's random candidates: their median against chance, their
            spread against the scoring set's noise; dfnas_pl/search/health.py); recorded in architecture.json.
    """

    def __init__(self, space: LayerwiseSpaceConfig = DEFAULT_SHUFFLENET_SPACE,
                 teacher: TeacherSource | None = "embedded:fmnist_resnet8", temperature: float = 3.0, kd_t_squared: bool = False,
                 kd_targets: TeacherTargets = "soft", lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 4e-5, max_mflops: float | None = None,
                 population: int = 20, generations: int = 5, top_k: int = 5, mutation_prob: float = 0.1,
                 bn_recalibration_batches: int = 5, score_batches: int | None = None, scorer: str = "kd",
                 strategy: Literal["evolution", "random"] = "evolution",
                 output_dir: str = "runs/fmnist/search/spos", seed: int = 0, evolution: bool = True,
                 export_unhealthy: bool = False) -> None:
        super().__init__()
        check_all([("temperature", temperature, 0, None, True), ("lr", lr, 0, None, True), ("momentum", momentum, 0, 1),
                   ("weight_decay", weight_decay, 0, None), ("max_mflops", max_mflops, 0, None, True),
                   ("population", population, 1, None), ("generations", generations, 1, None),
                   ("top_k", top_k, 1, population), ("mutation_prob", mutation_prob, 0, 1),
                   ("bn_recalibration_batches", bn_recalibration_batches, 0, None),
                   ("score_batches", score_batches, 1, None)])
        check_scorer(scorer)
        self.save_hyperparameters()
        self.space = space
        self.supernet = LayerwiseSupernet(space)
        self.init_search(teacher, temperature, kd_t_squared, output_dir, kd_targets, export_unhealthy)
        self.fixed_flops, self.flops_table = self.supernet.cost_table()
        self.max_flops = None if max_mflops is None else max_mflops * 1e6
        if self.max_flops is not None and self.path_flops(self.cheapest()) > self.max_flops:
            raise ValueError(f"max_mflops {max_mflops} is below the cheapest path of the space "
                             f"({self.path_flops(self.cheapest()) / 1e6:.2f} MFLOPs): raise it.")

    # -- paths and costs ----------------------------------------------------------------------
    def path_flops(self, path: Candidate) -> int:
        return self.fixed_flops + sum(row[c] for row, c in zip(self.flops_table, path))

    def cheapest(self) -> Candidate:
        return tuple(min(range(len(row)), key=row.__getitem__) for row in self.flops_table)

    def feasible(self, path: Candidate) -> bool:
        return self.max_flops is None or self.path_flops(path) <= self.max_flops

    def sample_path(self, step: int) -> Candidate:
        rng = random.Random(self.hparams.seed * 1_000_003 + step)
        while True:
            path = tuple(rng.randrange(n) for n in self.supernet.num_choices)
            if self.feasible(path):
                return path

    def names(self, path: Candidate) -> list[str]:
        return [names[c] for names, c in zip(self.supernet.choice_names, path)]

    # -- supernet training --------------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.supernet.parameters(), lr=hp.lr, momentum=hp.momentum,
                              weight_decay=hp.weight_decay, nesterov=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        train = batch["train"] if isinstance(batch, dict) else batch
        targets = self.objective.targets(train)
        logits = self.supernet(train[0], self.sample_path(self.global_step))
        loss = self.objective(logits, targets)
        self.log("search/train_loss", loss, prog_bar=True)
        self.log("search/train_agreement", self.objective.agreement(logits.detach(), targets), prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.hparams.evolution and self.current_epoch == self.trainer.max_epochs - 1:
            self.finish()

    def on_train_end(self) -> None:
        """Training stopped by max_steps (the ImageNet config) or time: evolve now (SearchHooks). Without
        evolution the supernet itself is the result (weights only, loadable with weights_only)."""
        if self.hparams.evolution:
            super().on_train_end()
        elif self.trainer.is_global_zero:
            atomic_torch_save(self.output_dir / "supernet.pt", self.supernet.state_dict())
            dm = self.trainer.datamodule  # what it was trained on: a scorer must split and batch the same way
            data = {k: getattr(dm, k, None) for k in ("source", "path", "val_fraction", "max_images", "noise_images",
                                                      "batch_size", "augment", "split_seed")}
            atomic_write_json(self.output_dir / "supernet.json", {
                "steps": self.global_step, "space": dataclasses.asdict(self.space), "data": data,
                "teacher": self.hparams.teacher, "bn_recalibration_batches": self.hparams.bn_recalibration_batches,
                "temperature": self.hparams.temperature, "scorer": self.hparams.scorer,
                "seed": self.hparams.seed})
            print(f"SPOS supernet (no evolution) saved to {self.output_dir / 'supernet.pt'} "
                  f"after {self.global_step} steps.")

    def validation_step(self, batch, batch_idx: int) -> None:
        """Supernet health: search-val agreement of one fixed random path (running BN statistics)."""
        targets = self.objective.targets(batch)
        logits = self.supernet(batch[0], self.sample_path(-1))
        self.log("search/val_agreement_fixed_path", self.objective.agreement(logits, targets), prog_bar=True)

    # -- evolution ----------------------------------------------------------------------------
    def fitness(self, path: Candidate, train_loader) -> float:
        """The scorer's mean on search-val after BN recalibration on search-train batches (the per-image values
        are kept for the health check)."""
        scored = score_path(self.supernet, path, first(train_loader, self.hparams.bn_recalibration_batches),
                            self.scoring, self.hparams.scorer)
        self.path_scores[tuple(path)] = scored
        return scored.score

    def evolution_settings(self) -> dict[str, Any]:
        keys = ("population", "generations", "top_k", "mutation_prob", "bn_recalibration_batches", "score_batches",
                "scorer", "strategy", "seed", "max_mflops")
        return {**{k: self.hparams[k] for k in keys}, "space": dataclasses.asdict(self.space)}

    def run_evolution(self) -> Candidate:
        hp = self.hparams
        train_loader, val_loader = self.trainer.datamodule.scoring_loaders()
        search = EvolutionSearch(self.supernet.num_choices, self.path_flops, self.max_flops, hp.population,
                                 hp.generations, hp.top_k, hp.mutation_prob, seed=hp.seed,
                                 strategy=hp.strategy)
        state_file = self.output_dir / "evolution_state.json"
        weights_file = self.output_dir / "evolution_supernet.pt"  # the weights every score was measured with
        settings = self.evolution_settings()
        try:
            saved = json.loads(state_file.read_text()) if state_file.exists() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):  # damaged: evolve again from the start (kept aside)
            state_file.replace(state_file.with_name(state_file.name + ".corrupt"))
            print(f"'{state_file}' was damaged (kept as {state_file.name}.corrupt): the evolution starts over.")
            saved = {}
        if saved.get("settings") == json.loads(json.dumps(settings)) and weights_file.exists():
            # a killed evolution: continue it with the very weights its scores came from (the last epoch,
            # redone after the restart, would not give bit-identical weights)
            self.supernet.load_state_dict(torch.load(weights_file, map_location=self.device, weights_only=True))
            search.state = saved["state"]
            print(f"Resuming the SPOS evolution at generation {search.state['generation']}.")
        else:
            if self.trainer.is_global_zero:
                atomic_torch_save(weights_file, self.supernet.state_dict())
                state_file.unlink(missing_ok=True)
            self.trainer.strategy.barrier("spos-evolution-start")
        self.scoring = ScoringSet(first(val_loader, hp.score_batches), self.objective.teacher,
                                  self.objective.temperature, self.device)
        self.path_scores: dict[Candidate, PathScore] = {}
        self.verdict = None

        def on_generation(state: dict[str, Any]) -> None:
            if state.get("exhausted"):
                print(f"SPOS evolution stopped early: all {len(state['scores'])} candidates within the FLOPs limit "
                      f"were scored (raise max_mflops for a larger search).")
            h = state["history"][-1]
            print(f"SPOS evolution generation {h['generation']}: best {h['best']:.4f}, mean {h['mean']:.4f}, "
                  f"best path {self.names(tuple(h['best_candidate']))}")
            for logger in self.loggers:
                logger.log_metrics({"evolution/best": h["best"], "evolution/mean": h["mean"],
                                    "evolution/generation": h["generation"]})
            if self.trainer.is_global_zero:
                atomic_write_json(state_file, {"settings": settings, "state": state})
                png = line_plot(self.output_dir / "evolution.png",
                          {"best": [x["best"] for x in state["history"]], "mean": [x["mean"] for x in state["history"]]},
                          "generation", f"search-val score ({self.hparams.scorer})", "SPOS evolution")
                for logger in self.loggers:
                    if hasattr(logger, "log_image"):
                        logger.log_image(key="search/evolution", images=[str(png)])
            if self.verdict is None:  # before any later generation reads the scores: stop here if they are noise
                self.verdict = self.first_generation_health(state, train_loader)

        with batchnorm_state_kept(self.supernet):
            best = search.run(lambda c: self.fitness(c, train_loader), on_generation)
            if self.verdict is None:  # resumed after its last generation: no generation ran to judge it
                self.verdict = self.first_generation_health(search.state, train_loader)
        self.evolution_state = search.state
        self.ranks_agreeing = assert_same_on_all_ranks(self.trainer, torch.tensor(best), "SPOS evolution result")
        return best

    def first_generation_health(self, state: dict[str, Any], train_loader) -> dict[str, Any]:
        """The health check on the first generation, uniform over the feasible paths: what the supernet tells
        apart before evolution has selected anything (later generations are chosen by these very scores). A
        resumed evolution scores them again for their per-image values (deterministic, the same weights)."""
        first_gen = first_generation(state)
        for c in first_gen:
            if c not in self.path_scores:
                self.fitness(c, train_loader)
        scored = [self.path_scores[c] for c in first_gen]
        return self.judge(self.scoring, statistics.median(s.agreement for s in scored),
                          f"median of {len(scored)} random candidates' top-1", torch.stack([s.values for s in scored]),
                          self.hparams.scorer)

    def finish(self) -> None:
        """Export the result. Runs inside the last epoch, *before* its checkpoint is saved, so a run
        killed after that checkpoint has its architecture already, and one killed before it redoes
        the last epoch (and a SPOS evolution continues from its saved generation)."""
        self._finished = True
        best = self.run_evolution()
        history = self.evolution_state["history"]
        if self.trainer.is_global_zero:
            record = write_architecture(self.output_dir / "architecture.json", "spos", self.space.family,
                                        self.space, self.space.image_size, self.names(best), health=self.verdict,
                                        search_val_score=history[-1]["best"], scorer=self.hparams.scorer,
                                        search_val_agreement=self.path_scores[best].agreement
                                        if best in self.path_scores else None, evolution=history,
                                        max_mflops=self.hparams.max_mflops, ranks_agreeing=self.ranks_agreeing)
            print(f"SPOS architecture written to {self.output_dir / 'architecture.json'}: {self.names(best)}, "
                  f"{record['flops'] / 1e6:.2f} MFLOPs, {record['params'] / 1e3:.1f} K params")
        self.trainer.strategy.barrier("spos-end")
