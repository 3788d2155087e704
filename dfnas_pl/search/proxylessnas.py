"""ProxylessNAS (Cai et al., 2019) as a LightningModule, on the MobileNetV2 layer-wise space.

Weight step: one path drawn from the architecture distribution p = softmax(alpha) per layer
(binarised: only that block runs). Architecture step: per layer two candidates are drawn from p and
one of them is switched on by a binary gate; the gradient of the loss w.r.t. the gates (both blocks
run so it exists) becomes the gradient of alpha through the renormalised two-way softmax:
dL/d alpha_i = sum_j dL/dg_j p_j (delta_ij - p_i). A cost term ``cost_weight * E_p[FLOPs] / ref``
(exact per-candidate FLOPs at the configured input size) trades accuracy for cost; with
``target_mflops`` it becomes a hinge, ``cost_weight * max(0, E_p[FLOPs] / target - 1)``: free below the
target, so searches on different data end near the same budget. The hinge matters when searches with
different losses are compared: KD at T = 3 without the T^2 factor (the paper's loss) has gradients
about T^2 = 9 times smaller than cross-entropy on labels, so a plain additive term is in effect 9 times
heavier for KD searches and drives them to the cheapest blocks (README, paper table). Draws depend
only on (seed, step), and alpha gradients are averaged over ranks: every rank keeps the same alphas.
"""

from __future__ import annotations

import json
import random
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from dfnas_pl.losses import TeacherTargets
from dfnas_pl.search.consistency import assert_same_on_all_ranks
from dfnas_pl.search.export import write_architecture
from dfnas_pl.search.hooks import SearchHooks
from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig, LayerwiseSupernet
from dfnas_pl.search.plots import alpha_heatmap
from dfnas_pl.search.registry import register_search_algorithm
from dfnas_pl.search.scoring import ScoringSet, check_scorer, score_paths
from dfnas_pl.teachers.loading import TeacherSource
from dfnas_pl.utils.io import atomic_write_json
from dfnas_pl.utils.settings import check_all

DEFAULT_MOBILENET_SPACE = LayerwiseSpaceConfig(family="mobilenetv2", stem_channels=16, stage_channels=(16, 24, 40),
                                               stage_layers=(2, 2, 2))


@register_search_algorithm("proxylessnas", config="experiments/fmnist/search_proxylessnas.yaml")
class ProxylessSearch(SearchHooks, L.LightningModule):
    """ProxylessNAS search: binarised paths, gate gradients and an expected-FLOPs term.

    Args:
        space: the MobileNetV2 layer-wise space.
        teacher: teacher for KD (synthetic / noise data); ``null`` trains on labels (real data). A teacher
            source is a path, ``embedded:<name>`` or a mapping ``{path, arch, in_channels, image_size, mean, std, class_names, trust_checkpoint}``: a teacher file, a Lightning checkpoint, a state dict with its arch (registry name, torchvision:/timm: name, or an nn.Module import path / class_path + init_args), a TorchScript or torch.export archive, or a pickled module (trusted only).
        temperature: KD temperature (official: 3).
        kd_t_squared: scale KD by T^2 (standard KD; the official code does not).
        kd_targets: soft: the teacher's distribution at the temperature (KD, official); hard: cross-entropy
            to the teacher's top-1 class.
        w_lr: SGD learning rate of the weights (cosine to 0).
        w_momentum: SGD momentum.
        w_weight_decay: SGD weight decay.
        alpha_lr: Adam learning rate of the architecture parameters (ProxylessNAS: 6e-3).
        alpha_betas: Adam betas of the architecture parameters (ProxylessNAS: 0, 0.999).
        cost_weight: weight of the expected-FLOPs term (0: accuracy only).
        target_mflops: FLOPs budget; set, the cost term only penalises expected FLOPs above it (None: the
            plain term ``cost_weight * E[FLOPs] / E_uniform[FLOPs]``).
        warmup_epochs: epochs of weight-only training before architecture steps start.
        output_dir: where architecture.json, gate-probability plots and their history go.
        seed: seed of the path draws.
        health_candidates: random paths the health check scores beside the exported one (BN recalibrated on
            ``bn_recalibration_batches`` search-train batches, scored on search-val): do the supernet's scores
            spread wider than the scoring set's noise? (dfnas_pl/search/health.py)
        bn_recalibration_batches: search-train batches to re-estimate BN statistics per scored path.
        scorer: what the health check's random paths are scored by (``top1`` or ``kd``; SPOS's ``scorer``).
        export_unhealthy: export even when the health check finds the supernet cannot tell paths apart
            (recorded in architecture.json).
    """

    def __init__(self, space: LayerwiseSpaceConfig = DEFAULT_MOBILENET_SPACE,
                 teacher: TeacherSource | None = "embedded:fmnist_resnet8", temperature: float = 3.0, kd_t_squared: bool = False,
                 kd_targets: TeacherTargets = "soft", w_lr: float = 0.05,
                 w_momentum: float = 0.9, w_weight_decay: float = 4e-5, alpha_lr: float = 6e-3,
                 alpha_betas: tuple[float, float] = (0.0, 0.999), cost_weight: float = 0.0, target_mflops: float | None = None,
                 warmup_epochs: int = 0, output_dir: str = "runs/fmnist/search/proxylessnas", seed: int = 0,
                 health_candidates: int = 16, bn_recalibration_batches: int = 4, scorer: str = "kd",
                 export_unhealthy: bool = False) -> None:
        super().__init__()
        check_scorer(scorer)
        check_all([("temperature", temperature, 0, None, True), ("w_lr", w_lr, 0, None, True),
                   ("w_momentum", w_momentum, 0, 1), ("w_weight_decay", w_weight_decay, 0, None),
                   ("alpha_lr", alpha_lr, 0, None, True), ("cost_weight", cost_weight, 0, None),
                   ("target_mflops", target_mflops, 0, None, True), ("warmup_epochs", warmup_epochs, 0, None),
                   ("health_candidates", health_candidates, 0, None),
                   ("bn_recalibration_batches", bn_recalibration_batches, 0, None)])
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.space = space
        self.supernet = LayerwiseSupernet(space)
        self.alphas = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in self.supernet.num_choices)
        self.init_search(teacher, temperature, kd_t_squared, output_dir, kd_targets, export_unhealthy)
        fixed, table = self.supernet.cost_table()
        self.fixed_flops = fixed
        self.costs = [torch.tensor(row, dtype=torch.float32) for row in table]
        self.cost_ref = float(fixed + sum(c.mean() for c in self.costs))  # expected FLOPs of a uniform path
        if target_mflops is not None:
            cheapest = fixed + sum(float(c.min()) for c in self.costs)
            if target_mflops * 1e6 < cheapest:
                raise ValueError(f"target_mflops={target_mflops} is below the cheapest path of this space "
                                 f"({cheapest / 1e6:.2f} MFLOPs); raise it or set it to null.")
        self.history: list[dict[str, Any]] = []


    def configure_optimizers(self):
        hp = self.hparams
        w_opt = torch.optim.SGD(self.supernet.parameters(), lr=hp.w_lr, momentum=hp.w_momentum,
                                weight_decay=hp.w_weight_decay, nesterov=True)
        a_opt = torch.optim.Adam(self.alphas.parameters(), lr=hp.alpha_lr, betas=tuple(hp.alpha_betas))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=max(1, self.trainer.max_epochs or 1))
        return [w_opt, a_opt], [sched]

    # -- the distribution ---------------------------------------------------------------------
    def probs(self) -> list[torch.Tensor]:
        return [F.softmax(a, dim=0) for a in self.alphas]

    def expected_flops(self) -> torch.Tensor:
        return self.fixed_flops + sum((p * c.to(p.device)).sum() for p, c in zip(self.probs(), self.costs))

    def cost_term(self) -> torch.Tensor:
        hp = self.hparams
        if hp.target_mflops is None:
            return hp.cost_weight * self.expected_flops() / self.cost_ref
        return hp.cost_weight * F.relu(self.expected_flops() / (hp.target_mflops * 1e6) - 1.0)

    def _gen(self, step: int, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.hparams.seed * 1_000_003 + 2 * step + salt)

    def sample_path(self, step: int) -> list[int]:
        gen = self._gen(step, 0)
        return [int(torch.multinomial(p.detach().cpu(), 1, generator=gen)) for p in self.probs()]

    def best_path(self) -> list[int]:
        return [int(a.argmax()) for a in self.alphas]

    def names(self, path: list[int]) -> list[str]:
        return [names[c] for names, c in zip(self.supernet.choice_names, path)]

    # -- steps ----------------------------------------------------------------------------------
    def alpha_gradient(self, x: torch.Tensor, targets: torch.Tensor, step: int) -> tuple[list[torch.Tensor], float]:
        gen = self._gen(step, 1)
        probs = self.probs()
        active, gates, local = [], [], []
        for p in probs:
            pair = torch.multinomial(p.detach().cpu(), 2, replacement=False, generator=gen)
            p2 = F.softmax(self.alphas[len(active)][pair.to(p.device)].detach(), dim=0)
            on = int(torch.multinomial(p2.cpu(), 1, generator=gen))
            gate = torch.zeros(2, device=p.device)
            gate[on] = 1.0
            active.append(pair.tolist())
            gates.append(gate.requires_grad_(True))
            local.append(p2)
        loss = self.objective(self.supernet.forward_gated(x, active, gates), targets)
        gate_grads = torch.autograd.grad(loss, gates)
        grads = []
        for a, pair, p2, dg in zip(self.alphas, active, local, gate_grads):
            g = torch.zeros_like(a)
            jac = torch.diag(p2) - torch.outer(p2, p2)  # d p2_j / d alpha_i = p2_j (delta_ij - p2_i)
            g[torch.tensor(pair, device=a.device)] = jac @ dg
            grads.append(g)
        if self.hparams.cost_weight > 0:
            cost = self.cost_term()
            grads = [g + c for g, c in zip(grads, torch.autograd.grad(cost, list(self.alphas)))]
        return grads, float(loss.detach())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        w_opt, a_opt = self.optimizers()
        step = self.global_step
        train, val = batch["train"], batch["val"]
        t_train = self.objective.targets(train)
        logits = self.supernet(train[0], self.sample_path(step))
        loss = self.objective(logits, t_train)
        w_opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        w_opt.step()
        self.log("search/train_loss", loss, prog_bar=True)
        if self.current_epoch >= self.hparams.warmup_epochs:
            grads, val_loss = self.alpha_gradient(val[0], self.objective.targets(val), step)
            if self.trainer.world_size > 1:
                grads = [self.trainer.strategy.reduce(g, reduce_op="mean") for g in grads]
            a_opt.zero_grad(set_to_none=True)
            for a, g in zip(self.alphas, grads):
                a.grad = g.detach()
            a_opt.step()
            self.log("search/val_loss", val_loss, prog_bar=True)
            self.log("search/expected_mflops", float(self.expected_flops().detach()) / 1e6, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        """Search-val agreement of the currently most probable path."""
        targets = self.objective.targets(batch)
        logits = self.supernet(batch[0], self.best_path())
        self.log("search/val_agreement", self.objective.agreement(logits, targets), prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self._record_epoch()
        if self.current_epoch == self.trainer.max_epochs - 1:
            self.finish()

    def _record_epoch(self) -> None:
        self.lr_schedulers().step()
        probs = [p.detach().cpu().tolist() for p in self.probs()]
        self.history.append({"epoch": self.current_epoch, "probs": probs, "path": self.names(self.best_path())})
        if not self.trainer.is_global_zero:
            return
        width = max(len(p) for p in probs)
        grid = torch.full((len(probs), width), float("nan"))
        for i, p in enumerate(probs):
            grid[i, : len(p)] = torch.tensor(p)
        png = alpha_heatmap(self.output_dir / "gates" / f"epoch_{self.current_epoch:03d}.png", {"path": grid},
                            self.supernet.choice_names[0] + [""] * (width - len(self.supernet.choice_names[0])),
                            [f"layer {i}" for i in range(len(probs))],
                            f"ProxylessNAS choice probabilities, epoch {self.current_epoch}")
        atomic_write_json(self.output_dir / "probability_history.json", self.history)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="search/gate_probabilities", images=[str(png)], step=self.global_step)
        print(f"epoch {self.current_epoch} path: {json.dumps(self.names(self.best_path()))}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["proxyless_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("proxyless_history", []))

    def health(self) -> dict[str, Any]:
        """The health check: the exported path's search-val agreement against chance, and the spread of
        ``health_candidates`` uniform random paths' scores against the scoring set's noise (every path scored
        as SPOS scores its candidates)."""
        hp = self.hparams
        bn_loader, val_loader = self.trainer.datamodule.scoring_loaders()
        rng = random.Random(hp.seed * 1_000_003 - 1)
        randoms = [[rng.randrange(n) for n in self.supernet.num_choices] for _ in range(hp.health_candidates)]
        scoring = ScoringSet(val_loader, self.objective.teacher, self.objective.temperature, self.device)
        chosen, *scores = score_paths(self.supernet, [self.best_path(), *randoms], bn_loader, scoring,
                                      hp.bn_recalibration_batches, hp.scorer)
        values = torch.stack([s.values for s in scores]) if scores else ()
        return self.judge(scoring, chosen.agreement, "the exported path's top-1", values, hp.scorer)

    def finish(self) -> None:
        """Export the result. Runs inside the last epoch, *before* its checkpoint is saved, so a run
        killed after that checkpoint has its architecture already, and one killed before it redoes
        the last epoch (and a SPOS evolution continues from its saved generation)."""
        self._finished = True
        ranks = assert_same_on_all_ranks(self.trainer, torch.cat([a.flatten() for a in self.alphas]),
                                         "ProxylessNAS architecture parameters")
        health = self.health()
        if self.trainer.is_global_zero:
            path = self.names(self.best_path())
            record = write_architecture(self.output_dir / "architecture.json", "proxylessnas", self.space.family,
                                        self.space, self.space.image_size, path, health=health,
                                        probabilities=[p.detach().cpu().tolist() for p in self.probs()],
                                        cost_weight=self.hparams.cost_weight, target_mflops=self.hparams.target_mflops,
                                        ranks_agreeing=ranks)
            print(f"ProxylessNAS architecture written to {self.output_dir / 'architecture.json'}: {path}, "
                  f"{record['flops'] / 1e6:.2f} MFLOPs, {record['params'] / 1e3:.1f} K params")
