"""DARTS (Liu et al., 2019) as a LightningModule: bilevel search of the DARTS cell space.

Each step: (1) an architecture step on a search-val batch, first-order (gradient of the val loss
at the current weights) or second-order (through one virtual SGD step of the weights, the
Hessian-vector product by central finite differences, as in the DARTS paper); (2) a weight step
on a search-train batch. The architecture parameters are replicated on every rank and their
gradient is averaged across ranks, so all ranks keep identical alphas and derive the same genotype.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dfnas_pl.losses import TeacherTargets
from dfnas_pl.search.consistency import assert_same_on_all_ranks
from dfnas_pl.search.darts_space import (
    DEFAULT_DARTS_SPACE,
    DartsSpaceConfig,
    DartsSupernet,
    alpha_entropy,
    count_parameter_free,
    derive_genotype,
)
from dfnas_pl.search.export import write_architecture
from dfnas_pl.search.hooks import SearchHooks
from dfnas_pl.search.plots import alpha_heatmap
from dfnas_pl.search.registry import register_search_algorithm
from dfnas_pl.search.scoring import ScoringSet
from dfnas_pl.teachers.loading import TeacherSource
from dfnas_pl.utils.io import atomic_write_json
from dfnas_pl.utils.settings import check_all


@register_search_algorithm("darts", config="experiments/fmnist/search_darts.yaml", sized_space=False)
class DartsSearch(SearchHooks, L.LightningModule):
    """DARTS search of the cell space: a weight step and an architecture (alpha) step per batch.

    Args:
        space: size of the DARTS cell space.
        teacher: teacher for KD (synthetic / noise data); ``null`` trains on labels (real data). A teacher
            source is a path, ``embedded:<name>`` or a mapping ``{path, arch, in_channels, image_size, mean, std, class_names, trust_checkpoint}``: a teacher file, a Lightning checkpoint, a state dict with its arch (registry name, torchvision:/timm: name, or an nn.Module import path / class_path + init_args), a TorchScript or torch.export archive, or a pickled module (trusted only).
        temperature: KD temperature (official: 3).
        kd_t_squared: scale KD by T^2 (standard KD; the official code does not).
        kd_targets: soft: the teacher's distribution at the temperature (KD, official); hard: cross-entropy
            to the teacher's top-1 class.
        image_size: input height = width of the data.
        unrolled: second-order architecture gradient (True) or first-order (False).
        w_lr: SGD learning rate of the supernet weights (cosine to ``w_lr_min``).
        w_lr_min: final weight learning rate.
        w_momentum: SGD momentum of the weights.
        w_weight_decay: weight decay of the weights.
        w_grad_clip: gradient-norm clip of the weights.
        alpha_lr: Adam learning rate of the architecture parameters (DARTS: 3e-4).
        alpha_betas: Adam betas of the architecture parameters (DARTS: 0.5, 0.999).
        alpha_weight_decay: weight decay of the architecture parameters (DARTS: 1e-3).
        hessian_eps: finite-difference step of the second-order Hessian-vector product, divided by
            the norm of the val gradient (DARTS: 0.01).
        output_dir: where architecture.json, alpha heatmaps and the genotype history go.
        seed: initialisation of the architecture parameters.
        max_parameter_free_normal: guard against the DARTS collapse (P-DARTS): at most this many
            parameter-free ops (skip, pools) in the exported normal cell; the weakest extra ones take
            their edge's strongest parametric op. null: the plain DARTS rule. The collapse itself
            (parameter-free ops of the unguarded normal cell, alpha entropy) is logged every epoch.
        selection: how the exported cell is read off the trained supernet. ``alpha``: the DARTS rule on the
            architecture weights (per edge the largest weight, per node the two strongest edges). ``perturbation``:
            the same rule on each op's importance, the rise of the supernet's search-val loss when that op alone
            is taken out of its edge (Wang et al., "Rethinking architecture selection in differentiable NAS",
            ICLR 2021: alpha magnitudes need not say which op the supernet relies on, and favour parameter-free
            ops), estimated to first order from one backward pass (``-w * dL/dw``); ``perturbation_exact``
            measures each removal with a forward pass of its own (edges x ops x 2 passes: minutes at the
            shipped size, where the estimate takes a second). Which to ship: studies/darts_selection/README.md.
        export_unhealthy: export even when the health check finds that the supernet has not learned (its
            search-val agreement with the current architecture weights against chance;
            dfnas_pl/search/health.py); recorded in architecture.json.
    """

    def __init__(self, space: DartsSpaceConfig = DEFAULT_DARTS_SPACE, teacher: TeacherSource | None = "embedded:fmnist_resnet8",
                 temperature: float = 3.0, kd_t_squared: bool = False,
                 kd_targets: TeacherTargets = "soft", image_size: int = 28, unrolled: bool = False, w_lr: float = 0.025,
                 w_lr_min: float = 0.001, w_momentum: float = 0.9, w_weight_decay: float = 3e-4,
                 w_grad_clip: float = 5.0, alpha_lr: float = 3e-4, alpha_betas: Sequence[float] = (0.5, 0.999),
                 alpha_weight_decay: float = 1e-3, hessian_eps: float = 0.01, output_dir: str = "runs/fmnist/search/darts",
                 seed: int = 0, max_parameter_free_normal: int | None = None,
                 selection: Literal["alpha", "perturbation", "perturbation_exact"] = "alpha",
                 export_unhealthy: bool = False) -> None:
        super().__init__()
        check_all([("temperature", temperature, 0, None, True), ("image_size", image_size, 1, None),
                   ("w_lr", w_lr, 0, None, True), ("w_lr_min", w_lr_min, 0, w_lr), ("w_momentum", w_momentum, 0, 1),
                   ("w_weight_decay", w_weight_decay, 0, None), ("w_grad_clip", w_grad_clip, 0, None, True),
                   ("alpha_lr", alpha_lr, 0, None, True), ("alpha_weight_decay", alpha_weight_decay, 0, None),
                   ("hessian_eps", hessian_eps, 0, None, True), ("max_parameter_free_normal", max_parameter_free_normal,
                                                                 0, None)])
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.space = space
        self.supernet = DartsSupernet(space)
        gen = torch.Generator().manual_seed(seed)
        k = len(space.primitives)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(space.num_edges, k, generator=gen))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(space.num_edges, k, generator=gen))
        self.init_search(teacher, temperature, kd_t_squared, output_dir, kd_targets, export_unhealthy)
        self.history: list[dict[str, Any]] = []

    # -- plumbing ------------------------------------------------------------------------------
    def alphas(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def weights(self) -> list[nn.Parameter]:
        return list(self.supernet.parameters())

    def arch_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softmax(self.alpha_normal, dim=-1), F.softmax(self.alpha_reduce, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, *self.arch_weights())

    def configure_optimizers(self):
        hp = self.hparams
        w_opt = torch.optim.SGD(self.weights(), lr=hp.w_lr, momentum=hp.w_momentum, weight_decay=hp.w_weight_decay)
        a_opt = torch.optim.Adam(self.alphas(), lr=hp.alpha_lr, betas=tuple(hp.alpha_betas),
                                 weight_decay=hp.alpha_weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=max(1, self.trainer.max_epochs or 1),
                                                           eta_min=hp.w_lr_min)
        return [w_opt, a_opt], [sched]


    # -- the losses as functions of explicit weights (for the unrolled step) ---------------------
    def _loss(self, params: dict[str, torch.Tensor] | None, alphas: Sequence[torch.Tensor], x: torch.Tensor,
              targets: torch.Tensor) -> torch.Tensor:
        normal, reduce = (F.softmax(a, dim=-1) for a in alphas)
        if params is None:
            logits = self.supernet(x, normal, reduce)
        else:
            logits = functional_call(self.supernet, params, (x, normal, reduce))
        return self.objective(logits, targets)

    def alpha_gradient(self, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                       xi: float) -> list[torch.Tensor]:
        """d L_val / d alpha: first order, or through w' = w - xi * (grad_w L_train + wd * w)."""
        alphas = self.alphas()
        if not self.hparams.unrolled:
            return _grad(self._loss(None, alphas, *val), alphas)
        names = [n for n, _ in self.supernet.named_parameters()]
        w = [p.detach() for p in self.supernet.parameters()]
        g_train = _grad(self._loss(None, alphas, *train), self.weights())
        wd = self.hparams.w_weight_decay
        w_virtual = [(wi - xi * (gi + wd * wi)).requires_grad_(True) for wi, gi in zip(w, g_train)]
        val_loss = self._loss(dict(zip(names, w_virtual)), alphas, *val)
        grads = _grad(val_loss, alphas + w_virtual)
        d_alpha, d_w = list(grads[: len(alphas)]), grads[len(alphas):]
        eps = self.hparams.hessian_eps / torch.cat([g.flatten() for g in d_w]).norm().clamp_min(1e-12)
        hess = []
        for sign in (1.0, -1.0):
            shifted = dict(zip(names, [wi + sign * eps * gi for wi, gi in zip(w, d_w)]))
            hess.append(_grad(self._loss(shifted, alphas, *train), alphas))
        return [da - xi * (hp_ - hm) / (2 * eps) for da, hp_, hm in zip(d_alpha, *hess)]

    # -- one search step ----------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        w_opt, a_opt = self.optimizers()
        x_t, x_v = batch["train"][0], batch["val"][0]
        t_t, t_v = self.objective.targets(batch["train"]), self.objective.targets(batch["val"])

        grads = self.alpha_gradient((x_t, t_t), (x_v, t_v), xi=w_opt.param_groups[0]["lr"])
        if self.trainer.world_size > 1:
            grads = [self.trainer.strategy.reduce(g, reduce_op="mean") for g in grads]

        logits = self.supernet(x_t, *self.arch_weights())
        loss = self.objective(logits, t_t)
        w_opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.clip_gradients(w_opt, gradient_clip_val=self.hparams.w_grad_clip, gradient_clip_algorithm="norm")
        w_opt.step()
        a_opt.zero_grad(set_to_none=True)
        for a, g in zip(self.alphas(), grads):
            a.grad = g.detach()
        a_opt.step()
        self.log("search/train_loss", loss, prog_bar=True)
        self.log("search/train_agreement", self.objective.agreement(logits.detach(), t_t), prog_bar=True)

    def _record_epoch(self) -> None:
        self.lr_schedulers().step()
        normal, reduce = (w.detach().cpu() for w in self.arch_weights())
        genotype = self.genotype()
        collapse = self.collapse()
        self.history.append({"epoch": self.current_epoch, "genotype": genotype, **collapse})
        for key, value in collapse.items():
            self.log(f"search/{key}", float(value), on_epoch=True, rank_zero_only=True)
        if not self.trainer.is_global_zero:
            return
        edges = [f"n{i}<-{j}" for i, j in self.supernet.cells[0].edges()]
        png = alpha_heatmap(self.output_dir / "alphas" / f"epoch_{self.current_epoch:03d}.png",
                            {"normal": normal, "reduce": reduce}, list(self.space.primitives), edges,
                            f"DARTS architecture weights, epoch {self.current_epoch}")
        atomic_write_json(self.output_dir / "genotype_history.json", self.history)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="search/alphas", images=[str(png)], step=self.global_step)
            if hasattr(logger, "log_text"):  # W&B: the genotype history as a table
                logger.log_text(key="search/genotype", columns=["epoch", "genotype"],
                                data=[[h["epoch"], json.dumps(h["genotype"])] for h in self.history])
        print(f"epoch {self.current_epoch} genotype: {json.dumps(genotype)}")

    def on_train_epoch_end(self) -> None:
        self._record_epoch()
        if self.current_epoch == self.trainer.max_epochs - 1:
            self.finish()

    def validation_step(self, batch, batch_idx: int) -> None:
        targets = self.objective.targets(batch)
        logits = self(batch[0])
        self.log("search/val_loss", self.objective(logits, targets), prog_bar=True)
        self.log("search/val_agreement", self.objective.agreement(logits, targets), prog_bar=True)

    def genotype(self, scores: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, list[list[tuple[str, int]]]]:
        """The cell the DARTS rule reads off ``scores`` per [edge, op] (default: the architecture weights)."""
        normal, reduce = self.arch_weights() if scores is None else scores
        return {"normal": derive_genotype(normal, self.space, self.hparams.max_parameter_free_normal),
                "reduce": derive_genotype(reduce, self.space)}

    def perturbation_importance(self, val_batches, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per cell type, [edge, op]: the rise of the supernet's search-val loss (the search objective, running
        BN statistics) when that op's weight on that edge is set to 0, every other weight as trained. A loss,
        not top-1: on a few hundred images a continuous score separates ops that accuracy ties. ``exact``:
        each removal measured by a forward pass; else its first-order estimate ``-w * dL/dw`` from one
        backward pass over the same images."""
        was_training = self.supernet.training
        self.supernet.eval()
        batches = [(b[0].to(self.device), self.objective.targets([t.to(self.device) if torch.is_tensor(t) else t
                                                                   for t in b])) for b in val_batches]
        count = sum(len(x) for x, _ in batches)
        weights = [w.detach() for w in self.arch_weights()]
        if not exact:
            probe = [w.clone().requires_grad_(True) for w in weights]
            with torch.enable_grad():
                total = sum(self.objective(self.supernet(x, *probe), t) * len(x) / count for x, t in batches)
                grads = torch.autograd.grad(total, probe, allow_unused=True)
            self.supernet.train(was_training)
            none = [k for k, op in enumerate(self.space.primitives) if op == "none"]
            out = []
            for w, g in zip(weights, grads):
                rows = torch.zeros_like(w) if g is None else -(w * g).detach()
                rows[:, none] = 0.0
                out.append(rows)
            return out[0], out[1]
        return self._exact_importance(batches, weights, was_training)

    @torch.no_grad()
    def _exact_importance(self, batches, weights, was_training) -> tuple[torch.Tensor, torch.Tensor]:
        def loss(normal: torch.Tensor, reduce: torch.Tensor) -> float:
            total = sum(float(self.objective(self.supernet(x, normal, reduce), t)) * len(x) for x, t in batches)
            return total / sum(len(x) for x, _ in batches)

        base = loss(*weights)
        importance = []
        for cell in range(2):
            if cell == 1 and not any(c.reduction for c in self.supernet.cells):
                importance.append(torch.zeros_like(weights[1]))
                continue
            rows = torch.zeros_like(weights[cell])
            for e in range(rows.shape[0]):
                for k, op in enumerate(self.space.primitives):
                    if op == "none":
                        continue
                    w = [x.clone() for x in weights]
                    w[cell][e, k] = 0.0
                    rows[e, k] = loss(*w) - base
            importance.append(rows)
        self.supernet.train(was_training)
        return importance[0], importance[1]

    def collapse(self) -> dict[str, float]:
        """How far the search has collapsed: parameter-free ops in the normal cell the plain DARTS rule
        would export (and in the exported, guarded one), and the alpha entropy of both cell types."""
        normal, reduce = self.arch_weights()
        return {"parameter_free_normal_unguarded": count_parameter_free(derive_genotype(normal, self.space)),
                "parameter_free_normal": count_parameter_free(self.genotype()["normal"]),
                "alpha_entropy_normal": alpha_entropy(normal), "alpha_entropy_reduce": alpha_entropy(reduce)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["darts_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("darts_history", []))

    @torch.no_grad()
    def health(self) -> dict[str, Any]:
        """The health check: the supernet's search-val agreement (the current architecture weights, running BN
        statistics) against chance. A cell space has no random paths to score, so no spread test."""
        scoring = ScoringSet(self.trainer.datamodule.scoring_loaders()[1], self.objective.teacher,
                             self.objective.temperature, self.device)
        was_training = self.supernet.training
        self.supernet.eval()
        hits = sum(int((self(b.x).argmax(1) == b.references).sum()) for b in scoring.batches)
        self.supernet.train(was_training)
        return self.judge(scoring, hits / max(1, len(scoring)), "the supernet with its architecture weights")

    def finish(self) -> None:
        """Export the result. Runs inside the last epoch, *before* its checkpoint is saved, so a run
        killed after that checkpoint has its architecture already, and one killed before it redoes
        the last epoch (and a SPOS evolution continues from its saved generation)."""
        self._finished = True
        ranks = assert_same_on_all_ranks(self.trainer, torch.cat([a.flatten() for a in self.alphas()]),
                                         "DARTS architecture parameters")
        health = self.health()
        extra: dict[str, Any] = {"selection": self.hparams.selection}
        genotype = self.genotype()
        if self.hparams.selection != "alpha":
            importance = self.perturbation_importance(self.trainer.datamodule.scoring_loaders()[1],
                                                      exact=self.hparams.selection == "perturbation_exact")
            genotype = self.genotype(importance)
            extra.update(importance={"normal": importance[0].tolist(), "reduce": importance[1].tolist()},
                         alpha_genotype=self.genotype(),
                         parameter_free_normal_exported=count_parameter_free(genotype["normal"]))
        if self.trainer.is_global_zero:
            record = write_architecture(self.output_dir / "architecture.json", "darts", "darts", self.space,
                                        self.hparams.image_size, genotype, health=health, **extra,
                                        alphas={"normal": self.arch_weights()[0].tolist(),
                                                "reduce": self.arch_weights()[1].tolist()},
                                        unrolled=self.hparams.unrolled, epochs=self.current_epoch + 1,
                                        ranks_agreeing=ranks, collapse=self.collapse(),
                                        max_parameter_free_normal=self.hparams.max_parameter_free_normal)
            print(f"DARTS architecture written to {self.output_dir / 'architecture.json'}: "
                  f"{record['flops'] / 1e6:.1f} MFLOPs, {record['params'] / 1e3:.1f} K params")


def _grad(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients, with zeros for inputs the loss does not use (e.g. normal-cell alphas of a net
    with only reduction cells)."""
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
