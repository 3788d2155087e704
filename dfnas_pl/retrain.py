"""Retraining: the architecture a search found, built from ``architecture.json`` and trained from
scratch, on real data (cross-entropy) or fully data-free on the synthetic set (KD from the
teacher); top-1 on the real test set is what the paper compares."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from callbacks.random_state import ResumesExactly
from callbacks.run_progress import OneProgressBar
from dfnas_pl.data.compatibility import check_real_data, real_data_of
from dfnas_pl.losses import kd_loss
from dfnas_pl.search.export import (
    build_from_architecture,
    count_flops,
    count_params,
    image_shape,
    read_architecture,
)
from dfnas_pl.teachers.loading import TeacherSource, load_teacher
from dfnas_pl.utils.io import atomic_write_json
from dfnas_pl.utils.settings import check_all


class RetrainClassifier(OneProgressBar, ResumesExactly, L.LightningModule):
    """Trains a found architecture (real labels or KD on the synthetic set) and tests it on real data.

    Args:
        architecture: path of the ``architecture.json`` to build.
        teacher: ``null`` trains on labels (real data, cross-entropy); a teacher source (a path,
            ``embedded:<name>`` or a mapping ``{path, arch, ...}``, see dfnas_pl.teachers.loading) trains by
            KD (data-free retraining on the synthetic set).
        temperature: KD temperature.
        lr: SGD learning rate (cosine to 0 over the run).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        label_smoothing: cross-entropy label smoothing (SPOS retraining: 0.1).
        warmup_fraction: share of the steps with a linear learning-rate warm-up before the cosine
            (0: cosine from the start; the ground truth's short one-cycle recipe uses 0.15).
        metrics_path: where ``metrics.json`` (test top-1, FLOPs, params, architecture) is written;
            default: next to the architecture file.
        space_overrides: space fields to change for retraining, e.g. ``{layers: 20, channels: 36}``: DARTS
            searches a cell in a small network and evaluates it in a larger one.
    """

    progress_name = "Retraining"  # the run's one progress bar (callbacks.run_progress)

    def __init__(self, architecture: str = "runs/fmnist/search/darts/architecture.json", teacher: TeacherSource | None = None,
                 temperature: float = 3.0, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                 label_smoothing: float = 0.0, warmup_fraction: float = 0.0, metrics_path: str | None = None,
                 space_overrides: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_all([("temperature", temperature, 0, None, True), ("lr", lr, 0, None, True), ("momentum", momentum, 0, 1),
                   ("weight_decay", weight_decay, 0, None), ("label_smoothing", label_smoothing, 0, 1, False, True),
                   ("warmup_fraction", warmup_fraction, 0, 1, False, True)])
        self.save_hyperparameters()
        self.arch = read_architecture(architecture)  # a missing or damaged file: a clear error
        if space_overrides:
            unknown = sorted(set(space_overrides) - set(self.arch["space_config"]))
            if unknown:
                raise ValueError(f"space_overrides {unknown} are not fields of the space of '{architecture}' "
                                 f"(fields: {sorted(self.arch['space_config'])}).")
            self.arch = {**self.arch, "space_config": {**self.arch["space_config"], **space_overrides}}
        self.model = build_from_architecture(self.arch)
        self.flops = count_flops(self.model, image_shape(self.arch["space_config"]))
        self.params = count_params(self.model)
        self.teacher_spec = load_teacher(teacher) if teacher else None
        self.teacher = self.teacher_spec.model if self.teacher_spec else None
        k = int(self.arch["space_config"]["num_classes"])
        self.val_acc, self.test_acc = MulticlassAccuracy(k, average="micro"), MulticlassAccuracy(k, average="micro")
        self.metrics_path = Path(metrics_path) if metrics_path else Path(architecture).with_name("metrics.json")
        self._checkpoint_epochs: int | None = None  # set when a checkpoint is loaded (test --ckpt_path)

    def wandb_artifacts(self) -> list[tuple[str, str, Path]]:
        """For :class:`callbacks.WandbArtifacts`: ``metrics.json`` once the test has written it."""
        return [(f"retrained-{self.arch.get('algorithm', 'model')}", "result", self.metrics_path)]

    def setup(self, stage: str) -> None:
        """The architecture's classes and channels (and the KD teacher's) must match the real data."""
        real = real_data_of(self.trainer.datamodule)
        check_real_data(real, self.arch["space_config"], f"the architecture '{self.hparams.architecture}'",
                        normalisation=False)
        if self.teacher_spec is not None:
            spec = self.teacher_spec
            check_real_data(real, spec.describe(), f"the teacher '{spec.source}'", spec.class_names)

    def train(self, mode: bool = True) -> RetrainClassifier:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_fit_start(self) -> None:
        for logger in self.loggers:
            logger.log_metrics({"model/mflops": self.flops / 1e6, "model/kparams": self.params / 1e3})

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0]
        logits = self.model(x)
        if self.teacher is not None:
            with torch.no_grad():
                loss = kd_loss(logits, self.teacher(x), self.hparams.temperature)
        else:
            loss = F.cross_entropy(logits, batch[-1], label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_acc(self.model(batch[0]), batch[-1])
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self.test_acc(self.model(batch[0]), batch[-1])
        self.log("test/acc", self.test_acc, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            record: dict[str, Any] = {"test_top1": float(self.test_acc.compute()), "flops": self.flops,
                                      "params": self.params, "architecture": str(self.hparams.architecture),
                                      "algorithm": self.arch.get("algorithm"), "choices": self.arch.get("choices"),
                                      "space_overrides": self.hparams.space_overrides,
                                      "trained_on": "synthetic (KD)" if self.teacher is not None else "real (CE)",
                                      "epochs": self.epochs_trained()}
            atomic_write_json(self.metrics_path, record)
            print(f"Test top-1 {record['test_top1']:.4f} ({self.flops / 1e6:.2f} MFLOPs, "
                  f"{self.params / 1e3:.1f} K params) -> {self.metrics_path}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Remember how many epochs the checkpoint's run trained: ``test --ckpt_path`` (how the pipeline tests)
        restores the weights but not the fit loop, so ``current_epoch`` would say 0 there."""
        # saved at an epoch's end, before the loop counts that epoch completed: its index + 1 epochs trained
        self._checkpoint_epochs = int(checkpoint["epoch"]) + 1 if "epoch" in checkpoint else None

    def epochs_trained(self) -> int:
        """Epochs trained: this process's fit loop when it trained (a resumed fit counts the restored epochs
        too), else the loaded checkpoint's."""
        trained = int(self.trainer.fit_loop.epoch_progress.current.completed)
        return trained if trained or self._checkpoint_epochs is None else self._checkpoint_epochs

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.model.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                              weight_decay=self.hparams.weight_decay, nesterov=True)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(self.hparams.warmup_fraction * total))

        def factor(step: int) -> float:  # linear warm-up to the peak, then cosine to 0
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
