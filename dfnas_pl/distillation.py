"""A student classifier trained only by knowledge distillation from the teacher on (synthetic)
images (:func:`dfnas_pl.losses.kd_loss`) - the standard check of a data-free synthetic set.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy

from callbacks.random_state import ResumesExactly
from callbacks.run_progress import OneProgressBar
from dfnas_pl.data.compatibility import check_real_data, real_data_of
from dfnas_pl.losses import TeacherTargets, check_targets, teacher_loss
from dfnas_pl.teachers.loading import TeacherSource, build_arch, load_teacher
from dfnas_pl.utils.io import atomic_write_json
from dfnas_pl.utils.settings import check_all


class DistilledClassifier(OneProgressBar, ResumesExactly, L.LightningModule):
    """A student trained only by distillation from the teacher on (synthetic) images.

    Batches are ``(image, stored_logits, class)`` from :class:`~dfnas_pl.data.synthetic.SyntheticImageDataset`
    or ``(image, class)`` from real data; the loss uses the teacher's logits on the augmented batch
    (``online_teacher``, as the official code) or the stored ones. Val/test report top-1 on real labels.

    Args:
        student: registry name of the student network (``resnet8``, ...).
        teacher: the teacher to distil from: a path, ``embedded:<name>`` or a mapping ``{path, arch, in_channels, image_size, mean, std, class_names, trust_checkpoint}``: a teacher file, a Lightning checkpoint, a state dict with its arch (registry name, torchvision:/timm: name, or an nn.Module import path / class_path + init_args), a TorchScript or torch.export archive, or a pickled module (trusted only).
        temperature: KD temperature.
        kd_targets: soft: the teacher's distribution at the temperature (KD); hard: cross-entropy to the
            teacher's top-1 class (what a set labelled by the teacher, and nothing more, would teach).
        online_teacher: run the teacher on each augmented batch (official code) instead of using the
            logits stored with the synthetic set.
        lr: SGD learning rate (cosine schedule).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        trust_checkpoint: load the teacher with ``weights_only=False`` (trusted files only).
        metrics_path: where the test writes ``{"test_top1", "student", ...}`` as JSON (drivers read it);
            null: only the logger gets it.
    """

    progress_name = "Distillation"  # the run's one progress bar (callbacks.run_progress)

    def __init__(self, student: str = "resnet8", teacher: TeacherSource = "embedded:fmnist_resnet8", temperature: float = 3.0,
                 kd_targets: TeacherTargets = "soft", online_teacher: bool = True, lr: float = 0.05, momentum: float = 0.9,
                 weight_decay: float = 5e-4,
                 trust_checkpoint: bool = False, metrics_path: str | None = None) -> None:
        super().__init__()
        check_targets(kd_targets)
        check_all([("temperature", temperature, 0, None, True), ("lr", lr, 0, None, True), ("momentum", momentum, 0, 1),
                   ("weight_decay", weight_decay, 0, None)])
        self.save_hyperparameters()
        self.spec = load_teacher(teacher, trust_checkpoint=trust_checkpoint)
        self.teacher = self.spec.model
        self.student = build_arch(student, self.spec.in_channels, self.spec.num_classes)
        k = self.spec.num_classes
        self.val_acc, self.test_acc = MulticlassAccuracy(k, average="micro"), MulticlassAccuracy(k, average="micro")

    def setup(self, stage: str) -> None:
        """The real evaluation data must label classes as the teacher numbers them."""
        check_real_data(real_data_of(self.trainer.datamodule), self.spec.describe(),
                        f"the teacher '{self.spec.source}'", self.spec.class_names)

    def train(self, mode: bool = True) -> DistilledClassifier:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, stored = batch[0], batch[1] if len(batch) == 3 else None
        if self.hparams.online_teacher or stored is None:
            with torch.no_grad():
                stored = self.teacher(x)
        loss = teacher_loss(self.student(x), stored, self.hparams.temperature, targets=self.hparams.kd_targets)
        self.log("train/kd_loss", loss, prog_bar=True)
        return loss

    def _eval(self, batch, metric: MulticlassAccuracy, stage: str) -> None:
        x, y = batch[0], batch[-1]
        metric(self.student(x), y)
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval(batch, self.val_acc, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval(batch, self.test_acc, "test")

    def on_test_epoch_end(self) -> None:
        if self.hparams.metrics_path and self.trainer.is_global_zero:
            dm = self.trainer.datamodule
            atomic_write_json(Path(self.hparams.metrics_path), {
                "test_top1": float(self.test_acc.compute()),
                "student": self.hparams.student, "teacher": self.hparams.teacher,
                "synthetic_set": str(getattr(dm, "path", ""))})

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.student.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                              weight_decay=self.hparams.weight_decay, nesterov=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
