"""Train a teacher classifier on real data (only needed when the user has no teacher).

At the end of fitting the best weights are exported as a self-describing teacher file
(architecture + input statistics + state dict), the format every later stage loads.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from dfnas_pl.teachers.loading import build_arch, save_teacher


class TeacherClassifier(L.LightningModule):
    """A classifier from the teacher registry, trained with SGD + one-cycle lr and cross-entropy.

    Args:
        arch: registry name (``resnet8``), ``torchvision:<name>`` or ``timm:<name>``.
        num_classes: classes of the data (checked at setup).
        in_channels: input channels of the data (checked at setup).
        lr: peak learning rate of the one-cycle schedule.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        label_smoothing: label smoothing of the cross-entropy.
        export_path: where the teacher file is written when fitting ends (``None``: not written).
    """

    def __init__(self, arch: str = "resnet8", num_classes: int = 10, in_channels: int = 1, lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 5e-4, label_smoothing: float = 0.0,
                 export_path: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_arch(arch, in_channels, num_classes)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if dm is None:
            return
        if getattr(dm, "in_channels", self.hparams.in_channels) != self.hparams.in_channels:
            raise ValueError(f"The data has {dm.in_channels} channels but model.in_channels is "
                             f"{self.hparams.in_channels}; set model.init_args.in_channels: {dm.in_channels}.")
        self.hparams.mean, self.hparams.std = list(dm.mean), list(dm.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, metric: MulticlassAccuracy, stage: str) -> torch.Tensor:
        x, y = batch
        if y.max() >= self.hparams.num_classes:
            raise ValueError(f"Label {int(y.max())} in the {stage} data, but model.num_classes is "
                             f"{self.hparams.num_classes}: set it to the dataset's number of classes.")
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing if stage == "train" else 0.0)
        metric(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", sync_dist=stage != "train")
        self.log(f"{stage}/acc", metric, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_acc, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_acc, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, self.test_acc, "test")

    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.named_parameters() if p.ndim <= 1]
        opt = torch.optim.SGD([{"params": decay, "weight_decay": self.hparams.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=self.hparams.lr, momentum=self.hparams.momentum, nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                    total_steps=self.trainer.estimated_stepping_batches,
                                                    pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_end(self) -> None:
        if self.hparams.export_path and self.trainer.is_global_zero:
            dm = self.trainer.datamodule
            metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
            image_size = getattr(dm, "image_size", None) or int(next(iter(self.trainer.train_dataloader))[0].shape[-1])
            path = save_teacher(self.hparams.export_path, self.model, self.hparams.arch, self.hparams.num_classes,
                                self.hparams.in_channels, image_size, tuple(dm.mean), tuple(dm.std),
                                class_names=list(getattr(dm, "class_names", [])), metrics=metrics)
            print(f"Teacher exported to {Path(path).resolve()}")
